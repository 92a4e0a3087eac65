package archive

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Reading helpers for the pull request export, shared by the offline CLI,
// the static HTML export and the API. They stream the export (one record in
// memory at a time) unless a caller keeps the records.

// PullRequestStates are the states a pull request record may have, in the
// order readers list them.
var PullRequestStates = []string{"OPEN", "MERGED", "DECLINED", "SUPERSEDED"}

// NormalizePullRequestState returns the state in upper case and whether it
// is one of PullRequestStates.
func NormalizePullRequestState(state string) (string, bool) {
	s := strings.ToUpper(strings.TrimSpace(state))
	return s, slices.Contains(PullRequestStates, s)
}

// ErrNoPullRequest: the export holds no pull request with the id asked for.
var ErrNoPullRequest = errors.New("no such pull request in the snapshot")

// ErrStopWalk, returned by a WalkSnapshotPullRequests callback, ends the
// walk early; the walk then returns nil.
var ErrStopWalk = errors.New("stop walking")

// WalkSnapshotPullRequests streams a snapshot's pull requests in id order to
// fn and returns the export entry. It returns ErrNoExport (wrapped) when the
// snapshot has no pull request export.
func (s *Store) WalkSnapshotPullRequests(ctx context.Context, m *Manifest, fn func(*PullRequestRecord) error) (*Export, error) {
	e := m.FindExport(ExportPullRequests)
	if e == nil {
		return nil, fmt.Errorf("snapshot %s: pull requests: %w", m.ID, ErrNoExport)
	}
	if e.Format != "" && e.Format != PullRequestsFormat {
		return nil, fmt.Errorf("snapshot %s: unsupported pull request export format %q (this build reads %s)", m.ID, e.Format, PullRequestsFormat)
	}
	repo, err := NewRepoKey(m.Tenant, m.Repository.UUID)
	if err != nil {
		return nil, err
	}
	rc, err := s.OpenExport(ctx, repo, *e)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	err = WalkPullRequests(rc, func(r *PullRequestRecord) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(r)
	})
	if errors.Is(err, ErrStopWalk) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	return e, nil
}

// FindPullRequest reads one pull request of a snapshot. It returns
// ErrNoPullRequest (wrapped) when the export does not hold it, ErrNoExport
// when the snapshot has no pull request export.
func (s *Store) FindPullRequest(ctx context.Context, m *Manifest, id int64) (*PullRequestRecord, *Export, error) {
	var found *PullRequestRecord
	e, err := s.WalkSnapshotPullRequests(ctx, m, func(r *PullRequestRecord) error {
		switch {
		case r.ID == id:
			found = r
			return ErrStopWalk
		case r.ID > id: // sorted by id: it is not there
			return ErrStopWalk
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if found == nil {
		return nil, e, fmt.Errorf("snapshot %s: pull request #%d: %w", m.ID, id, ErrNoPullRequest)
	}
	return found, e, nil
}

// CommentThread is a comment with its replies, each reply a thread itself.
type CommentThread struct {
	Comment *CommentRecord
	Replies []*CommentThread
}

// ThreadComments nests replies under their parents, keeping each level in
// the order of creation (then id). A reply whose parent is not in the list
// (a pruned thread) is shown as a top-level comment.
func ThreadComments(comments []CommentRecord) []*CommentThread {
	sorted := make([]*CommentRecord, len(comments))
	for i := range comments {
		sorted[i] = &comments[i]
	}
	slices.SortStableFunc(sorted, func(a, b *CommentRecord) int {
		if c := a.CreatedOn.Compare(b.CreatedOn); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	nodes := make(map[int64]*CommentThread, len(sorted))
	for _, c := range sorted {
		nodes[c.ID] = &CommentThread{Comment: c}
	}
	var top []*CommentThread
	for _, c := range sorted {
		n := nodes[c.ID]
		parent, ok := nodes[c.Parent]
		if c.Parent == 0 || !ok || parent == n || isDescendant(parent, n, nodes) {
			top = append(top, n)
			continue
		}
		parent.Replies = append(parent.Replies, n)
	}
	return top
}

// isDescendant reports whether attaching n under parent would make a cycle
// (malformed data: a comment that is its own ancestor).
func isDescendant(parent, n *CommentThread, nodes map[int64]*CommentThread) bool {
	seen := map[int64]bool{}
	for p := parent; p != nil && p.Comment.Parent != 0; {
		if seen[p.Comment.ID] {
			return true
		}
		seen[p.Comment.ID] = true
		if p.Comment.Parent == n.Comment.ID {
			return true
		}
		p = nodes[p.Comment.Parent]
	}
	return false
}

// CommentCount counts the comments that were not deleted.
func (r *PullRequestRecord) CommentCount() int {
	n := 0
	for _, c := range r.Comments {
		if !c.Deleted {
			n++
		}
	}
	return n
}

// TaskCounts returns how many tasks the pull request has and how many of
// them are resolved.
func (r *PullRequestRecord) TaskCounts() (total, resolved int) {
	for _, t := range r.Tasks {
		total++
		if strings.EqualFold(t.State, "RESOLVED") {
			resolved++
		}
	}
	return total, resolved
}

// Approvers are the participants who approved; ChangesRequesters those whose
// review state asks for changes.
func (r *PullRequestRecord) Approvers() []*Person {
	var out []*Person
	for _, p := range r.Participants {
		if p.Approved || p.State == "approved" {
			out = append(out, p.User)
		}
	}
	return out
}

// ChangesRequesters are the participants whose review asks for changes.
func (r *PullRequestRecord) ChangesRequesters() []*Person {
	var out []*Person
	for _, p := range r.Participants {
		if p.State == "changes_requested" {
			out = append(out, p.User)
		}
	}
	return out
}

// ReviewState is how a reader shows a participant's review: approved,
// changes requested, or "" (no review).
func (p ParticipantRecord) ReviewState() string {
	switch {
	case p.Approved || p.State == "approved":
		return "approved"
	case p.State == "changes_requested":
		return "changes requested"
	}
	return ""
}

// Matches reports whether q (case-insensitive) is a substring of the title
// or the description; an empty q matches everything.
func (r *PullRequestRecord) Matches(q string) bool {
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	return strings.Contains(strings.ToLower(r.Title), q) || strings.Contains(strings.ToLower(r.Description), q)
}

// Anchor is an inline comment's position as readers show it:
// "path:from->to", with a missing side left empty ("path:->12").
func (in *InlineRecord) Anchor() string {
	if in == nil {
		return ""
	}
	line := func(n *int) string {
		if n == nil {
			return ""
		}
		return fmt.Sprint(*n)
	}
	s := in.Path + ":" + line(in.From) + "->" + line(in.To)
	if in.Outdated {
		s += " (outdated)"
	}
	return s
}

// Review is one person's part in a pull request's review: a requested
// reviewer or a participant, with what they decided.
type Review struct {
	User *Person
	// Requested: the author asked this person to review.
	Requested bool
	Role      string
	// State is "approved", "changes requested" or "" (see ReviewState).
	State string
}

// Reviews merges the requested reviewers with the participants: requested
// reviewers first (in the order asked), then the other participants. A
// deleted account cannot be matched to its participant entry and is listed
// as it appears.
func (r *PullRequestRecord) Reviews() []Review {
	var out []Review
	used := make([]bool, len(r.Participants))
	for _, rev := range r.Reviewers {
		item := Review{User: rev, Requested: true, Role: "REVIEWER"}
		for i, p := range r.Participants {
			if !used[i] && samePerson(p.User, rev) {
				used[i] = true
				item.State = p.ReviewState()
				break
			}
		}
		out = append(out, item)
	}
	for i, p := range r.Participants {
		if !used[i] {
			out = append(out, Review{User: p.User, Role: p.Role, State: p.ReviewState()})
		}
	}
	return out
}

func samePerson(a, b *Person) bool {
	if a == nil || b == nil {
		return false
	}
	if a.UUID != "" || b.UUID != "" {
		return a.UUID == b.UUID
	}
	return a.AccountID != "" && a.AccountID == b.AccountID
}

// Describe says what an activity entry did, for readers: "approved",
// "requested changes", "commented (#12)", "updated: state MERGED, ...".
func (a ActivityRecord) Describe() string {
	switch a.Kind {
	case ActivityApproval:
		return "approved"
	case ActivityChangesRequested:
		return "requested changes"
	case ActivityComment:
		return fmt.Sprintf("commented (#%d)", a.Comment)
	case ActivityUpdate:
		var parts []string
		if a.State != "" {
			parts = append(parts, "state "+a.State)
		}
		if a.Title != "" {
			parts = append(parts, "title "+quoteText(a.Title))
		}
		if a.SourceCommit != "" {
			parts = append(parts, "source "+ShortHash(a.SourceCommit))
		}
		if a.DestinationCommit != "" {
			parts = append(parts, "destination "+ShortHash(a.DestinationCommit))
		}
		if a.Reason != "" {
			parts = append(parts, "reason "+quoteText(a.Reason))
		}
		if len(parts) == 0 {
			return "updated"
		}
		return "updated: " + strings.Join(parts, ", ")
	}
	return a.Kind
}

func quoteText(s string) string { return "\u201c" + s + "\u201d" }

// ShortHash abbreviates a commit hash to 12 characters, as Bitbucket does.
func ShortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// SourceName is the source branch, prefixed by its repository when that is
// not the destination's (a pull request from a fork).
func (r *PullRequestRecord) SourceName() string {
	if r.Source.Repository != "" && !strings.EqualFold(r.Source.Repository, r.Destination.Repository) {
		return r.Source.Repository + ":" + r.Source.Branch
	}
	return r.Source.Branch
}
