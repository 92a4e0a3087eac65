package archive_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
)

func exportStore(t *testing.T) (*archive.Store, archive.Repository) {
	t.Helper()
	st, err := archive.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, archive.Repository{Provider: "bitbucket", UUID: "0f0e0d0c-1111-4222-8333-444455556666", FullName: "acme/widgets"}
}

func TestFindAndWalkPullRequests(t *testing.T) {
	ctx := context.Background()
	st, repo := exportStore(t)
	first := archivetest.FirstSnapshot(t, st, "tenant-a", repo)
	if _, _, err := st.FindPullRequest(ctx, first, 1); !errors.Is(err, archive.ErrNoExport) {
		t.Fatalf("snapshot without exports: %v, want ErrNoExport", err)
	}
	m := archivetest.Commit(t, st, first, archivetest.Exports{PullRequests: archivetest.SamplePullRequests(), Incomplete: "rate limited"})

	pr, e, err := st.FindPullRequest(ctx, m, 3)
	if err != nil {
		t.Fatal(err)
	}
	if pr.ID != 3 || pr.Author != nil || pr.Author.Name() != "(deleted user)" || e.Complete || e.Reason != "rate limited" {
		t.Fatalf("pull request #3 = %+v, export %+v", pr, e)
	}
	for _, id := range []int64{0, 5, 99} {
		if _, _, err := st.FindPullRequest(ctx, m, id); !errors.Is(err, archive.ErrNoPullRequest) {
			t.Fatalf("#%d: %v, want ErrNoPullRequest", id, err)
		}
	}
	var seen []int64
	if _, err := st.WalkSnapshotPullRequests(ctx, m, func(r *archive.PullRequestRecord) error {
		seen = append(seen, r.ID)
		if r.ID == 2 {
			return archive.ErrStopWalk
		}
		return nil
	}); err != nil || len(seen) != 2 {
		t.Fatalf("walk stopped at #2: %v %v", seen, err)
	}
}

func TestThreadComments(t *testing.T) {
	pr := archivetest.SamplePullRequests()[0]
	threads := archive.ThreadComments(pr.Comments)
	var ids []int64
	for _, th := range threads {
		ids = append(ids, th.Comment.ID)
	}
	if len(ids) != 4 || ids[0] != 10 || ids[1] != 13 || ids[2] != 14 || ids[3] != 15 {
		t.Fatalf("top-level comments %v, want [10 13 14 15]", ids)
	}
	if r := threads[0].Replies; len(r) != 1 || r[0].Comment.ID != 11 || len(r[0].Replies) != 1 || r[0].Replies[0].Comment.ID != 12 {
		t.Fatalf("thread of 10 is not 10 > 11 > 12: %+v", threads[0])
	}
	if r := threads[1].Replies; len(r) != 1 || r[0].Comment.ID != 16 {
		t.Fatalf("thread of 13 lacks the pending reply 16")
	}

	// A reply whose parent is gone, and a cycle, still show every comment.
	odd := []archive.CommentRecord{{ID: 1, Parent: 99}, {ID: 2, Parent: 3}, {ID: 3, Parent: 2}}
	count := 0
	var walk func([]*archive.CommentThread)
	walk = func(ts []*archive.CommentThread) {
		for _, th := range ts {
			count++
			walk(th.Replies)
		}
	}
	walk(archive.ThreadComments(odd))
	if count != 3 {
		t.Fatalf("odd threads show %d of 3 comments", count)
	}
}

func TestPullRequestSummaries(t *testing.T) {
	pr := archivetest.SamplePullRequests()[0]
	if n := pr.CommentCount(); n != 6 {
		t.Fatalf("comment count %d, want 6 (one of 7 is deleted)", n)
	}
	if total, resolved := pr.TaskCounts(); total != 2 || resolved != 1 {
		t.Fatalf("tasks %d/%d", resolved, total)
	}
	if a := pr.Approvers(); len(a) != 1 || a[0] != archivetest.Bob {
		t.Fatalf("approvers %v", a)
	}
	if c := pr.ChangesRequesters(); len(c) != 1 || c[0] != archivetest.Carol {
		t.Fatalf("changes requested by %v", c)
	}
	if !pr.Matches("WIDGET cache") || !pr.Matches("fast") || pr.Matches("cobol") {
		t.Fatal("Matches is not a case-insensitive substring of title or description")
	}
	if got := pr.Comments[3].Inline.Anchor(); got != "cache/cache.go:41->42" {
		t.Fatalf("anchor %q", got)
	}
	if got := pr.Comments[4].Inline.Anchor(); got != "cache/new.go:->7" {
		t.Fatalf("anchor %q", got)
	}
	if s, ok := archive.NormalizePullRequestState("merged"); !ok || s != "MERGED" {
		t.Fatalf("state %q %v", s, ok)
	}
	if _, ok := archive.NormalizePullRequestState("CLOSED"); ok {
		t.Fatal("CLOSED is not a state")
	}
}
