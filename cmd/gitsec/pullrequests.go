package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/archive"
)

// snapshotFlags select one snapshot of one repository in storage.
type snapshotFlags struct {
	storageFlags
	snapshot string
}

func (f *snapshotFlags) register(cmd *cobra.Command) {
	f.storageFlags.register(cmd)
	cmd.Flags().StringVar(&f.snapshot, "snapshot", "latest", "snapshot ID (see `gitsec snapshots list`) or latest")
}

func checkSnapshotFlag(id string) error {
	if id != "latest" && !archive.ValidSnapshotID(id) {
		return fmt.Errorf("--snapshot %q is not a snapshot ID (like 20260101T120000.000Z-0123abcd) or latest", id)
	}
	return nil
}

// openSnapshot opens storage and reads the manifest the flags name. The
// caller closes the store.
func (f *snapshotFlags) openSnapshot(ctx context.Context) (*archive.Store, backedUpRepository, *archive.Manifest, error) {
	if err := checkSnapshotFlag(f.snapshot); err != nil {
		return nil, backedUpRepository{}, nil, err
	}
	st, err := f.open(ctx)
	if err != nil {
		return nil, backedUpRepository{}, nil, err
	}
	repo, err := f.findOneRepository(ctx, st)
	if err != nil {
		st.Close()
		return nil, backedUpRepository{}, nil, err
	}
	m, err := st.LoadManifest(ctx, repo.key, f.snapshot)
	if errors.Is(err, archive.ErrNotFound) {
		err = fmt.Errorf("--snapshot %q: repository %s has no such snapshot (see `gitsec snapshots list --repository %s`)", f.snapshot, repo.name(), repo.name())
	}
	if err != nil {
		st.Close()
		return nil, backedUpRepository{}, nil, err
	}
	return st, repo, m, nil
}

// exportError rewords the errors of a missing export for the command line.
func exportError(err error, m *archive.Manifest, what string) error {
	if errors.Is(err, archive.ErrNoExport) {
		return fmt.Errorf("snapshot %s of %s has no %s export: it was taken before exports existed "+
			"(or before the first export completed); pick a later snapshot with --snapshot", m.ID, m.Repository.FullName, what)
	}
	return err
}

// warnIncomplete says on stderr that an export is missing pull requests.
func warnIncomplete(w io.Writer, m *archive.Manifest, e *archive.Export) {
	if e != nil && !e.Complete {
		fmt.Fprintf(w, "warning: the pull request export of snapshot %s is incomplete: %s\n", m.ID, orNone(e.Reason))
	}
}

// exportInfo is an export's status in --json output.
type exportInfo struct {
	Complete bool           `json:"complete"`
	Reason   string         `json:"reason,omitempty"`
	Records  int            `json:"records"`
	States   map[string]int `json:"states"`
}

func exportInfoOf(e *archive.Export) exportInfo {
	states := e.States
	if states == nil {
		states = map[string]int{}
	}
	return exportInfo{Complete: e.Complete, Reason: e.Reason, Records: e.Records, States: states}
}

// prSummary is one pull request in `pull-requests list --json`.
type prSummary struct {
	ID            int64                `json:"id"`
	Title         string               `json:"title"`
	State         string               `json:"state"`
	Draft         bool                 `json:"draft"`
	Author        *archive.Person      `json:"author"`
	Source        archive.BranchRecord `json:"source"`
	Destination   archive.BranchRecord `json:"destination"`
	CreatedOn     time.Time            `json:"created_on"`
	UpdatedOn     time.Time            `json:"updated_on"`
	Comments      int                  `json:"comments"`
	Tasks         int                  `json:"tasks"`
	TasksResolved int                  `json:"tasks_resolved"`
	// branches is "source -> destination" for the table.
	branches string
}

func newPullRequestsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull-requests",
		Short: "Read the pull requests a snapshot exported (offline)",
		Long: "Read the pull requests of a snapshot straight from backup storage, without the GitSec service\n" +
			"(no Postgres, no Temporal): the storage URL and the repository are enough.",
	}
	cmd.AddCommand(newPullRequestsListCmd(), newPullRequestsShowCmd())
	return cmd
}

func newPullRequestsListCmd() *cobra.Command {
	var flags snapshotFlags
	var state string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --storage URL --repository UUID|WORKSPACE/SLUG [--snapshot ID|latest] [--state OPEN|MERGED|DECLINED|SUPERSEDED] [--json]",
		Short: "List a snapshot's pull requests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" {
				s, ok := archive.NormalizePullRequestState(state)
				if !ok {
					return fmt.Errorf("--state %q is not one of %s", state, strings.Join(archive.PullRequestStates, ", "))
				}
				state = s
			}
			ctx := cmd.Context()
			st, repo, m, err := flags.openSnapshot(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			var list []prSummary
			e, err := st.WalkSnapshotPullRequests(ctx, m, func(r *archive.PullRequestRecord) error {
				if state != "" && r.State != state {
					return nil
				}
				total, resolved := r.TaskCounts()
				list = append(list, prSummary{ID: r.ID, Title: r.Title, State: r.State, Draft: r.Draft, Author: r.Author,
					Source: r.Source, Destination: r.Destination, CreatedOn: r.CreatedOn, UpdatedOn: r.UpdatedOn,
					Comments: r.CommentCount(), Tasks: total, TasksResolved: resolved, branches: branches(r)})
				return nil
			})
			if err != nil {
				return exportError(err, m, "pull request")
			}
			warnIncomplete(cmd.ErrOrStderr(), m, e)
			out := cmd.OutOrStdout()
			if asJSON {
				if list == nil {
					list = []prSummary{}
				}
				return writeJSON(out, map[string]any{
					"repository": repo.name(), "snapshot": m.ID, "export": exportInfoOf(e), "pull_requests": list,
				})
			}
			fmt.Fprintf(out, "%s snapshot %s: %d pull requests%s\n", repo.name(), m.ID, len(list), stateSuffix(state))
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tTITLE\tAUTHOR\tSOURCE -> DESTINATION\tCOMMENTS\tTASKS\tUPDATED")
			for _, p := range list {
				fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\t%s\t%d\t%d/%d\t%s\n", p.ID, p.State+draftMark(p.Draft), cell(p.Title, 60),
					cell(p.Author.Name(), 30), cell(p.branches, 60), p.Comments, p.TasksResolved, p.Tasks,
					p.UpdatedOn.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	flags.register(cmd)
	cmd.Flags().StringVar(&state, "state", "", "only pull requests in this state: OPEN, MERGED, DECLINED or SUPERSEDED")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func newPullRequestsShowCmd() *cobra.Command {
	var flags snapshotFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show --storage URL --repository UUID|WORKSPACE/SLUG [--snapshot ID|latest] NUMBER [--json]",
		Short: "Show one pull request with its review, comments, tasks, activity and commits",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			number, err := parsePRNumber(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, repo, m, err := flags.openSnapshot(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			pr, e, err := st.FindPullRequest(ctx, m, number)
			if errors.Is(err, archive.ErrNoPullRequest) {
				warnIncomplete(cmd.ErrOrStderr(), m, e)
				return fmt.Errorf("pull request %s is not in snapshot %s of %s (see `gitsec pull-requests list`)", args[0], m.ID, repo.name())
			}
			if err != nil {
				return exportError(err, m, "pull request")
			}
			warnIncomplete(cmd.ErrOrStderr(), m, e)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"repository": repo.name(), "snapshot": m.ID, "export": exportInfoOf(e), "pull_request": pr,
				})
			}
			printPullRequest(cmd.OutOrStdout(), pr)
			return nil
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the exported record as JSON")
	return cmd
}

func parsePRNumber(arg string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(arg, "#"), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a pull request number", arg)
	}
	return n, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func stateSuffix(state string) string {
	if state == "" {
		return ""
	}
	return " " + state
}

func draftMark(draft bool) string {
	if draft {
		return " (draft)"
	}
	return ""
}

// branches is "source -> destination", naming the source repository when
// the pull request came from a fork.
func branches(pr *archive.PullRequestRecord) string {
	return pr.SourceName() + " -> " + pr.Destination.Branch
}

// terminalSafe replaces control characters (escape sequences a title could
// carry to the terminal) by U+FFFD; keepNewlines keeps line breaks and tabs
// of multi-line text.
func terminalSafe(s string, keepNewlines bool) string {
	return strings.Map(func(r rune) rune {
		if keepNewlines && (r == '\n' || r == '\t') {
			return r
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return '\uFFFD'
		}
		return r
	}, s)
}

// cell is a table cell: one line of at most max characters.
func cell(s string, max int) string {
	s = terminalSafe(strings.ReplaceAll(s, "\n", " "), false)
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func printPullRequest(out io.Writer, pr *archive.PullRequestRecord) {
	safe := func(s string) string { return terminalSafe(s, false) }
	fmt.Fprintf(out, "#%d %s\n", pr.ID, safe(pr.Title))
	fmt.Fprintf(out, "State:        %s%s\n", pr.State, draftMark(pr.Draft))
	fmt.Fprintf(out, "Author:       %s\n", safe(pr.Author.Name()))
	fmt.Fprintf(out, "Branches:     %s%s -> %s%s\n", safe(pr.SourceName()),
		commitSuffix(pr.Source), safe(pr.Destination.Branch), commitSuffix(pr.Destination))
	fmt.Fprintf(out, "Created:      %s\n", stamp(pr.CreatedOn))
	fmt.Fprintf(out, "Updated:      %s\n", stamp(pr.UpdatedOn))
	if pr.MergeCommit != "" {
		fmt.Fprintf(out, "Merge commit: %s\n", safe(pr.MergeCommit))
	}
	if pr.ClosedBy != nil {
		fmt.Fprintf(out, "Closed by:    %s\n", safe(pr.ClosedBy.Name()))
	}
	if pr.Reason != "" {
		fmt.Fprintf(out, "Reason:       %s\n", safe(pr.Reason))
	}
	if pr.URL != "" {
		fmt.Fprintf(out, "URL:          %s\n", safe(pr.URL))
	}
	if pr.PinnedRef != "" {
		fmt.Fprintf(out, "Pinned ref:   %s\n", safe(pr.PinnedRef))
	}
	if pr.DeletedUpstream {
		fmt.Fprintln(out, "Deleted upstream: Bitbucket no longer has this pull request; this is the last export")
	}
	for _, g := range pr.Gaps {
		fmt.Fprintf(out, "Not exported: %s\n", safe(g))
	}

	fmt.Fprintln(out, "\nDescription:")
	if pr.Description == "" {
		fmt.Fprintln(out, "  (none)")
	} else {
		printIndented(out, "  ", pr.Description)
	}

	fmt.Fprintln(out, "\nReviewers:")
	reviews := pr.Reviews()
	if len(reviews) == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, r := range reviews {
		role := "participant"
		if r.Requested || r.Role == "REVIEWER" {
			role = "reviewer"
		}
		fmt.Fprintf(out, "  %-30s %-12s %s\n", safe(r.User.Name()), role, orDash(r.State))
	}

	fmt.Fprintf(out, "\nComments (%d):\n", pr.CommentCount())
	threads := archive.ThreadComments(pr.Comments)
	if len(threads) == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, th := range threads {
		printThread(out, th, "  ")
	}

	total, resolved := pr.TaskCounts()
	fmt.Fprintf(out, "\nTasks (%d of %d resolved):\n", resolved, total)
	if total == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, t := range pr.Tasks {
		box := "[ ]"
		if strings.EqualFold(t.State, "RESOLVED") {
			box = "[x]"
		}
		line := fmt.Sprintf("  %s #%d %s (%s", box, t.ID, safe(strings.ReplaceAll(t.Raw, "\n", " ")), safe(t.Creator.Name()))
		if t.Comment != 0 {
			line += fmt.Sprintf(", on comment #%d", t.Comment)
		}
		if t.ResolvedOn != nil {
			line += fmt.Sprintf("; resolved by %s %s", safe(t.ResolvedBy.Name()), stamp(*t.ResolvedOn))
		}
		if t.Pending {
			line += "; pending"
		}
		fmt.Fprintln(out, line+")")
	}

	fmt.Fprintln(out, "\nActivity (newest first):")
	if len(pr.Activity) == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, a := range pr.Activity {
		when := "(no date)           "
		if a.Date != nil {
			when = stamp(*a.Date)
		}
		fmt.Fprintf(out, "  %s  %s %s\n", when, safe(a.User.Name()), safe(a.Describe()))
	}

	fmt.Fprintf(out, "\nCommits (%d):\n", len(pr.Commits))
	if len(pr.Commits) == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, c := range pr.Commits {
		subject, _, _ := strings.Cut(c.Message, "\n")
		fmt.Fprintf(out, "  %s  %s  %s  %s\n", archive.ShortHash(c.Hash), c.Date.UTC().Format("2006-01-02"), safe(c.Author), safe(subject))
	}
}

func commitSuffix(b archive.BranchRecord) string {
	if b.Commit == "" {
		return ""
	}
	return " (" + archive.ShortHash(terminalSafe(b.Commit, false)) + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printIndented(out io.Writer, indent, text string) {
	for _, line := range strings.Split(terminalSafe(strings.TrimRight(text, "\n"), true), "\n") {
		fmt.Fprintln(out, strings.TrimRight(indent+line, " "))
	}
}

func printThread(out io.Writer, th *archive.CommentThread, indent string) {
	c := th.Comment
	head := fmt.Sprintf("%s[#%d] %s, %s", indent, c.ID, terminalSafe(c.User.Name(), false), stamp(c.CreatedOn))
	if c.Inline != nil {
		head += " on " + terminalSafe(c.Inline.Anchor(), false)
	}
	var marks []string
	if c.Deleted {
		marks = append(marks, "deleted")
	}
	if c.Pending {
		marks = append(marks, "pending")
	}
	if c.Resolution != nil {
		marks = append(marks, fmt.Sprintf("resolved by %s %s", terminalSafe(c.Resolution.User.Name(), false), stamp(c.Resolution.CreatedOn)))
	}
	if len(marks) > 0 {
		head += " [" + strings.Join(marks, "; ") + "]"
	}
	fmt.Fprintln(out, head)
	if c.Deleted && c.Raw == "" {
		fmt.Fprintln(out, indent+"    (comment deleted)")
	} else {
		printIndented(out, indent+"    ", c.Raw)
	}
	for _, r := range th.Replies {
		printThread(out, r, indent+"    ")
	}
}
