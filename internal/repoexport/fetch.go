package repoexport

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
)

// fetchPullRequest fetches one PR in full. A PR that Bitbucket no longer has (deleted between
// listing and fetching) keeps its stored record, or the listed stub, marked deleted upstream.
// Errors returned are those that should stop the step (rate limits, outages); a part that is
// merely unavailable (the commits of a PR whose fork is gone) is a gap in the record.
func (e *Exporter) fetchPullRequest(ctx context.Context, req Request, id int64, stub *bitbucket.PullRequest, prev *archive.PullRequestRecord, res *resolver) (*archive.PullRequestRecord, error) {
	ws, slug := req.Workspace, req.Slug
	pr, err := e.Client.GetPullRequest(ctx, ws, slug, id)
	if errors.Is(err, bitbucket.ErrNotFound) {
		var rec archive.PullRequestRecord
		switch {
		case prev != nil:
			rec = *prev
		case stub != nil:
			rec = convertPullRequest(stub, res)
		default:
			// A webhook named a PR that is already gone and was never exported: nothing to keep.
			return nil, nil
		}
		rec.DeletedUpstream = true
		return &rec, nil
	}
	if err != nil {
		return nil, err
	}
	var comments []bitbucket.Comment
	var tasks []bitbucket.Task
	var activity []bitbucket.Activity
	var commits []bitbucket.Commit
	var gaps []string
	gap := func(what string, err error) error {
		if errors.Is(err, bitbucket.ErrNotFound) || errors.Is(err, bitbucket.ErrForbidden) {
			gaps = append(gaps, what+": "+describe(err))
			return nil
		}
		return err
	}
	if err := gap("comments", e.Client.WalkPullRequestComments(ctx, ws, slug, id, func(c bitbucket.Comment) error {
		comments = append(comments, c)
		return nil
	})); err != nil {
		return nil, err
	}
	if err := gap("tasks", e.Client.WalkPullRequestTasks(ctx, ws, slug, id, func(t bitbucket.Task) error {
		tasks = append(tasks, t)
		return nil
	})); err != nil {
		return nil, err
	}
	if err := gap("activity", e.Client.WalkPullRequestActivity(ctx, ws, slug, id, func(a bitbucket.Activity) error {
		activity = append(activity, a)
		return nil
	})); err != nil {
		return nil, err
	}
	if err := gap("commits", e.Client.WalkPullRequestCommits(ctx, ws, slug, id, func(c bitbucket.Commit) error {
		commits = append(commits, c)
		return nil
	})); err != nil {
		return nil, err
	}
	for _, c := range commits {
		res.learn(c.Hash)
	}
	rec := convertPullRequest(pr, res)
	if len(commits) > 0 && !rec.Source.CommitResolved && strings.HasPrefix(commits[0].Hash, rec.Source.Commit) {
		rec.Source.Commit, rec.Source.CommitResolved = commits[0].Hash, true
	}
	// What the local knowledge cannot resolve costs one commit lookup each (cached per run).
	for _, b := range []*archive.BranchRecord{&rec.Source, &rec.Destination} {
		if b.Commit != "" && !b.CommitResolved {
			repoName := ws + "/" + slug
			if b.Repository != "" {
				repoName = b.Repository
			}
			full, err := res.remote(ctx, e.Client, repoName, b.Commit)
			if err != nil {
				return nil, err
			}
			if full != "" {
				b.Commit, b.CommitResolved = full, true
			}
		}
	}
	if rec.MergeCommit != "" && len(rec.MergeCommit) < 40 {
		full, err := res.remote(ctx, e.Client, ws+"/"+slug, rec.MergeCommit)
		if err != nil {
			return nil, err
		}
		if full != "" {
			rec.MergeCommit = full
		}
	}
	rec.Comments = convertComments(comments)
	rec.Tasks = convertTasks(tasks)
	rec.Activity = convertActivity(activity)
	rec.Commits = convertCommits(commits)
	rec.Gaps = gaps
	return &rec, nil
}

func person(u *bitbucket.User) *archive.Person {
	if u == nil || (u.UUID == "" && u.AccountID == "" && u.DisplayName == "" && u.Nickname == "") {
		return nil
	}
	return &archive.Person{UUID: u.UUID, AccountID: u.AccountID, Nickname: u.Nickname, DisplayName: u.DisplayName}
}

func branch(b bitbucket.PullRequestBranch, res *resolver) archive.BranchRecord {
	out := archive.BranchRecord{Branch: b.Branch.Name}
	if b.Commit != nil {
		out.Commit = b.Commit.Hash
		if full := res.local(b.Commit.Hash); full != "" {
			out.Commit, out.CommitResolved = full, true
		} else if len(b.Commit.Hash) == 40 {
			out.CommitResolved = true
		}
	}
	if b.Repository != nil {
		out.Repository, out.RepositoryUUID = b.Repository.FullName, b.Repository.UUID
	}
	return out
}

func convertPullRequest(pr *bitbucket.PullRequest, res *resolver) archive.PullRequestRecord {
	rec := archive.PullRequestRecord{
		ID: pr.ID, Title: pr.Title, State: pr.State, Draft: pr.Draft,
		Description: pr.Summary.Raw, DescriptionHTML: pr.Summary.HTML,
		Author: person(pr.Author), Source: branch(pr.Source, res), Destination: branch(pr.Destination, res),
		CloseSourceBranch: pr.CloseSourceBranch, ClosedBy: person(pr.ClosedBy), Reason: pr.Reason,
		CreatedOn: pr.CreatedOn.UTC(), UpdatedOn: pr.UpdatedOn.UTC(), URL: pr.Links.HTML.Href,
		Reviewers: []*archive.Person{}, Participants: []archive.ParticipantRecord{},
		Comments: []archive.CommentRecord{}, Tasks: []archive.TaskRecord{},
		Activity: []archive.ActivityRecord{}, Commits: []archive.CommitRecord{},
	}
	if rec.Description == "" {
		rec.Description = pr.Description
	}
	if pr.MergeCommit != nil {
		rec.MergeCommit = pr.MergeCommit.Hash
		if full := res.local(pr.MergeCommit.Hash); full != "" {
			rec.MergeCommit = full
		}
	}
	for i := range pr.Reviewers {
		rec.Reviewers = append(rec.Reviewers, person(&pr.Reviewers[i]))
	}
	for _, p := range pr.Participants {
		pr := archive.ParticipantRecord{User: person(&p.User), Role: p.Role, Approved: p.Approved, State: p.State}
		if !p.ParticipatedOn.IsZero() {
			t := p.ParticipatedOn.UTC()
			pr.ParticipatedOn = &t
		}
		rec.Participants = append(rec.Participants, pr)
	}
	return rec
}

func convertComments(in []bitbucket.Comment) []archive.CommentRecord {
	out := make([]archive.CommentRecord, 0, len(in))
	for _, c := range in {
		rec := archive.CommentRecord{
			ID: c.ID, User: person(c.User), Raw: c.Content.Raw, HTML: c.Content.HTML,
			CreatedOn: c.CreatedOn.UTC(), UpdatedOn: c.UpdatedOn.UTC(), Deleted: c.Deleted, Pending: c.Pending,
		}
		if c.Parent != nil {
			rec.Parent = c.Parent.ID
		}
		if c.Inline != nil {
			rec.Inline = &archive.InlineRecord{Path: c.Inline.Path, From: c.Inline.From, To: c.Inline.To, Outdated: c.Inline.Outdated}
		}
		if c.Resolution != nil {
			rec.Resolution = &archive.ResolutionRecord{User: person(c.Resolution.User), CreatedOn: c.Resolution.CreatedOn.UTC()}
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func convertTasks(in []bitbucket.Task) []archive.TaskRecord {
	out := make([]archive.TaskRecord, 0, len(in))
	for _, t := range in {
		rec := archive.TaskRecord{
			ID: t.ID, State: t.State, Raw: t.Content.Raw, HTML: t.Content.HTML, Creator: person(t.Creator),
			Pending: t.Pending, CreatedOn: t.CreatedOn.UTC(), UpdatedOn: t.UpdatedOn.UTC(), ResolvedBy: person(t.ResolvedBy),
		}
		if t.ResolvedOn != nil {
			r := t.ResolvedOn.UTC()
			rec.ResolvedOn = &r
		}
		if t.Comment != nil {
			rec.Comment = t.Comment.ID
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func convertActivity(in []bitbucket.Activity) []archive.ActivityRecord {
	out := make([]archive.ActivityRecord, 0, len(in))
	for _, a := range in {
		rec := archive.ActivityRecord{Kind: a.Kind()}
		switch rec.Kind {
		case archive.ActivityUpdate:
			u := a.Update
			rec.Date, rec.User, rec.State, rec.Title, rec.Reason = timePtr(u.Date), person(u.Author), u.State, u.Title, u.Reason
			if u.Source.Commit != nil {
				rec.SourceCommit = u.Source.Commit.Hash
			}
			if u.Destination.Commit != nil {
				rec.DestinationCommit = u.Destination.Commit.Hash
			}
		case archive.ActivityApproval:
			rec.Date, rec.User = timePtr(a.Approval.Date), person(a.Approval.User)
		case archive.ActivityChangesRequested:
			rec.Date, rec.User = timePtr(a.ChangesRequested.Date), person(a.ChangesRequested.User)
		case archive.ActivityComment:
			rec.Date, rec.User, rec.Comment = timePtr(a.Comment.CreatedOn), person(a.Comment.User), a.Comment.ID
		default:
			rec.Kind, rec.Raw = "other", a.Raw
		}
		out = append(out, rec)
	}
	return out
}

func convertCommits(in []bitbucket.Commit) []archive.CommitRecord {
	out := make([]archive.CommitRecord, 0, len(in))
	for _, c := range in {
		out = append(out, archive.CommitRecord{Hash: c.Hash, Date: c.Date.UTC(), Author: c.Author.Raw, Message: c.Message})
	}
	return out
}

// resolver turns Bitbucket's 12-character hashes into full ones: first from what is known
// locally (the snapshot's ref tips, the previous export, the PR's own commit list), then with
// one commit lookup per unknown hash, cached for the run.
type resolver struct {
	mu    sync.Mutex
	known []string // sorted full hashes
	dirty bool
	cache map[string]string
}

func newResolver(req Request, stored map[int64]*archive.PullRequestRecord) *resolver {
	r := &resolver{cache: map[string]string{}}
	seen := map[string]bool{}
	add := func(h string) {
		if len(h) == 40 && !seen[h] {
			seen[h] = true
			r.known = append(r.known, h)
		}
	}
	for _, oid := range req.Refs {
		add(oid)
	}
	for _, rec := range stored {
		add(rec.Source.Commit)
		add(rec.Destination.Commit)
		add(rec.MergeCommit)
		for _, c := range rec.Commits {
			add(c.Hash)
		}
	}
	sort.Strings(r.known)
	return r
}

func (r *resolver) learn(full string) {
	if len(full) != 40 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known = append(r.known, full)
	r.dirty = true
}

// local resolves a prefix that exactly one known hash starts with.
func (r *resolver) local(short string) string {
	if short == "" {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if full, ok := r.cache[short]; ok {
		return full
	}
	if r.dirty {
		sort.Strings(r.known)
		r.known = compactSorted(r.known)
		r.dirty = false
	}
	i := sort.SearchStrings(r.known, short)
	if i < len(r.known) && strings.HasPrefix(r.known[i], short) && (i+1 == len(r.known) || !strings.HasPrefix(r.known[i+1], short)) {
		return r.known[i]
	}
	return ""
}

// remote asks Bitbucket for a commit by its abbreviation. A commit it does not have (a
// fork that is gone) stays abbreviated: "" with no error.
func (r *resolver) remote(ctx context.Context, c *bitbucket.Client, repo, short string) (string, error) {
	if full := r.local(short); full != "" {
		return full, nil
	}
	r.mu.Lock()
	if full, ok := r.cache[repo+"@"+short]; ok {
		r.mu.Unlock()
		return full, nil
	}
	r.mu.Unlock()
	ws, slug, _ := strings.Cut(repo, "/")
	cm, err := c.GetCommit(ctx, ws, slug, short)
	full := ""
	switch {
	case errors.Is(err, bitbucket.ErrNotFound), errors.Is(err, bitbucket.ErrForbidden):
	case err != nil:
		return "", err
	case strings.HasPrefix(cm.Hash, short) && len(cm.Hash) == 40:
		full = cm.Hash
	}
	r.mu.Lock()
	r.cache[repo+"@"+short] = full
	r.mu.Unlock()
	if full != "" {
		r.learn(full)
	}
	return full, nil
}

func compactSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
