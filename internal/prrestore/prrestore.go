// Package prrestore re-creates a snapshot's open pull requests in a restored repository
// (issue 12). Bitbucket has no import API: a pull request can only be opened anew, by the
// restoring account, now. So the new pull request gets the original title, branches, draft and
// close-source-branch flags, and a description that starts with a header naming who opened
// the original, when, its number and where the archived copy is; everything else (other
// people's comments, reviews, tasks, activity) stays readable in the archive only.
package prrestore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
)

// PullRequestCreator opens a pull request; *bitbucket.Writer implements it with the restore
// app's credentials.
type PullRequestCreator interface {
	CreatePullRequest(ctx context.Context, workspace, slug string, req bitbucket.CreatePullRequestRequest) (*bitbucket.PullRequest, error)
}

// Target is the repository the pull requests are opened in.
type Target struct {
	Workspace string
	Slug      string
}

// Options tune a restore.
type Options struct {
	// ArchiveURL returns where the archived copy of an original pull request can be read
	// (GitSec's own page); nil leaves the link out of the header.
	ArchiveURL func(id int64) string
	// BranchExists reports whether the target repository has a branch. With it, a pull
	// request whose branch is missing is reported without an API call; nil leaves the check
	// to Bitbucket (a 400, reported as an API error).
	BranchExists func(name string) bool
}

// Reasons a pull request was not restored.
const (
	ReasonSourceBranchMissing      = "source_branch_missing"
	ReasonDestinationBranchMissing = "destination_branch_missing"
	ReasonAPIError                 = "api_error"
	ReasonCanceled                 = "canceled"
)

// NeverRestorable is what a re-created pull request cannot carry: Bitbucket would attribute
// it to the restoring account and date it now. It keeps its text only in the archive.
var NeverRestorable = []string{
	"the original author and dates (the new pull request is opened by the restoring account, now; the header names both)",
	"comments, including other users' comments and replies (their text is in the archive)",
	"approvals and change requests",
	"tasks",
	"the activity log (updates, pushes, reviews)",
	"reviewers (not re-requested: the accounts may not exist in the target workspace and would be notified)",
}

// Result is what happened to one open pull request.
type Result struct {
	OriginalID  int64  `json:"original_id"`
	Title       string `json:"title"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Restored    bool   `json:"restored"`
	// NewID is the re-created pull request's number (Restored only).
	NewID int64 `json:"new_id,omitempty"`
	// URL is the new pull request's page (when Bitbucket gave one).
	URL string `json:"url,omitempty"`
	// Reason and Detail say why a pull request was not restored.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Report is the outcome of RecreateOpenPullRequests.
type Report struct {
	// Results has one entry per open pull request, in original id order.
	Results []Result `json:"results"`
	// Restored and Failed count Results; Skipped counts pull requests that were not open
	// (merged, declined, superseded): they are kept in the archive only.
	Restored int `json:"restored"`
	Failed   int `json:"failed"`
	Skipped  int `json:"skipped"`
	// NeverRestorable is the fixed list of what no re-created pull request carries.
	NeverRestorable []string `json:"never_restorable"`
}

// RecreateOpenPullRequests opens each OPEN pull request of prs in the target repository, in
// original id order (so the new numbers keep their relative order), and reports each one.
// It never stops at a failed pull request; a cancelled ctx marks the rest canceled. It is not
// idempotent: running it twice opens the pull requests twice.
func RecreateOpenPullRequests(ctx context.Context, creator PullRequestCreator, target Target, prs []archive.PullRequestRecord, opts Options) Report {
	rep := Report{Results: []Result{}, NeverRestorable: append([]string(nil), NeverRestorable...)}
	open := make([]*archive.PullRequestRecord, 0, len(prs))
	for i := range prs {
		if prs[i].State == bitbucket.PullRequestOpen {
			open = append(open, &prs[i])
		} else {
			rep.Skipped++
		}
	}
	sort.SliceStable(open, func(i, j int) bool { return open[i].ID < open[j].ID })
	for _, pr := range open {
		res := Result{OriginalID: pr.ID, Title: pr.Title, Source: pr.Source.Branch, Destination: pr.Destination.Branch}
		res.Reason, res.Detail = precheck(ctx, pr, opts)
		if res.Reason == "" {
			created, err := creator.CreatePullRequest(ctx, target.Workspace, target.Slug, bitbucket.CreatePullRequestRequest{
				Title:             pr.Title,
				Description:       Description(pr, opts.ArchiveURL),
				SourceBranch:      pr.Source.Branch,
				DestinationBranch: pr.Destination.Branch,
				CloseSourceBranch: pr.CloseSourceBranch,
				Draft:             pr.Draft,
			})
			switch {
			case err != nil && ctx.Err() != nil:
				res.Reason, res.Detail = ReasonCanceled, ctx.Err().Error()
			case err != nil:
				res.Reason, res.Detail = ReasonAPIError, err.Error()
			case created == nil || created.ID == 0:
				res.Reason, res.Detail = ReasonAPIError, "Bitbucket answered without a pull request id"
			default:
				res.Restored, res.NewID, res.URL = true, created.ID, created.Links.HTML.Href
			}
		}
		if res.Restored {
			rep.Restored++
		} else {
			rep.Failed++
		}
		rep.Results = append(rep.Results, res)
	}
	return rep
}

func precheck(ctx context.Context, pr *archive.PullRequestRecord, opts Options) (string, string) {
	if err := ctx.Err(); err != nil {
		return ReasonCanceled, err.Error()
	}
	if pr.Source.Branch == "" {
		return ReasonSourceBranchMissing, "the archived pull request names no source branch"
	}
	if opts.BranchExists == nil {
		return "", ""
	}
	if !opts.BranchExists(pr.Source.Branch) {
		detail := fmt.Sprintf("branch %q is not in the target repository", pr.Source.Branch)
		if fork := pr.Source.Repository; fork != "" && fork != pr.Destination.Repository {
			detail += fmt.Sprintf(" (the pull request came from the fork %s", fork)
			if pr.PinnedRef != "" {
				detail += "; its commit is pinned as " + pr.PinnedRef + " in the snapshot"
			}
			detail += ")"
		} else if pr.PinnedRef != "" {
			detail += "; its commit is pinned as " + pr.PinnedRef + " in the snapshot"
		}
		return ReasonSourceBranchMissing, detail
	}
	if pr.Destination.Branch != "" && !opts.BranchExists(pr.Destination.Branch) {
		return ReasonDestinationBranchMissing, fmt.Sprintf("branch %q is not in the target repository", pr.Destination.Branch)
	}
	return "", ""
}

// headerSeparator ends the header; the original description follows it unchanged.
const headerSeparator = "\n\n---\n\n"

// Description is the re-created pull request's description: a Markdown header naming the
// original author, creation date, number and (with archiveURL) the archived copy, then the
// original description byte for byte. Names from the archive are escaped so that they cannot
// inject Markdown (links, images) into the header.
func Description(pr *archive.PullRequestRecord, archiveURL func(id int64) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "_Restored by GitSec._ Originally pull request #%d, opened by **%s** on %s.",
		pr.ID, escapeMarkdown(pr.Author.Name()), formatDate(pr.CreatedOn))
	link := ""
	if archiveURL != nil {
		link = urlEscaper.Replace(archiveURL(pr.ID))
	}
	if link != "" {
		fmt.Fprintf(&b, "\nArchived copy with its comments, reviews, tasks and activity: <%s>", link)
	} else {
		b.WriteString("\nIts comments, reviews, tasks and activity are kept in the GitSec archive.")
	}
	if pr.Description == "" {
		return b.String()
	}
	return b.String() + headerSeparator + pr.Description
}

func formatDate(t time.Time) string {
	if t.IsZero() {
		return "an unknown date"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

var markdownEscaper = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `[`, `\[`, `]`, `\]`, `(`, `\(`, `)`, `\)`,
	`<`, `\<`, `>`, `\>`, `#`, `\#`, `!`, `\!`, `|`, `\|`, `~`, `\~`, "\n", " ", "\r", " ",
)

// urlEscaper keeps a link inside its Markdown autolink brackets.
var urlEscaper = strings.NewReplacer("<", "%3C", ">", "%3E", " ", "%20", "\n", "", "\r", "")

func escapeMarkdown(s string) string { return markdownEscaper.Replace(s) }
