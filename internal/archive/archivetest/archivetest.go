// Package archivetest builds snapshots that carry pull request and metadata
// exports, for the tests of their readers (CLI, HTML export, API) without
// running the exporter.
package archivetest

import (
	"context"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
)

// Exports says what a snapshot written by Commit carries. A nil PullRequests
// (not an empty slice) writes no pull request export; a nil Metadata no
// metadata export.
type Exports struct {
	PullRequests []archive.PullRequestRecord
	Metadata     *archive.RepositoryMetadata
	// Incomplete marks the pull request export incomplete with this reason.
	Incomplete string
}

// FirstSnapshot commits a snapshot of an empty repository without exports,
// as snapshots taken before exports existed look.
func FirstSnapshot(t testing.TB, st *archive.Store, tenant string, repo archive.Repository) *archive.Manifest {
	t.Helper()
	repo.UUID = archive.NormalizeUUID(repo.UUID) // as manifests store it
	id, err := archive.NewSnapshotID(time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := &archive.Manifest{
		Format:     archive.FormatVersion,
		ID:         id,
		Tenant:     tenant,
		Repository: repo,
		Trigger:    archive.Trigger{Kind: domain.TriggerInitial},
	}
	m.Created, _ = archive.SnapshotTime(id)
	if _, err := st.CommitSnapshot(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Commit writes the exports and commits a snapshot after parent whose code is
// parent's and whose exports are x's.
func Commit(t testing.TB, st *archive.Store, parent *archive.Manifest, x Exports) *archive.Manifest {
	t.Helper()
	ctx := context.Background()
	repo, err := archive.NewRepoKey(parent.Tenant, parent.Repository.UUID)
	if err != nil {
		t.Fatal(err)
	}
	var exports []archive.Export
	if x.PullRequests != nil {
		data, err := archive.EncodePullRequests(x.PullRequests)
		e := put(t, st, repo, archive.ExportPullRequests, data, err)
		e.Records = len(x.PullRequests)
		e.States = map[string]int{}
		for _, pr := range x.PullRequests {
			e.States[pr.State]++
		}
		e.Complete, e.Reason = x.Incomplete == "", x.Incomplete
		exports = append(exports, e)
	}
	if x.Metadata != nil {
		data, err := archive.EncodeMetadata(x.Metadata)
		e := put(t, st, repo, archive.ExportMetadata, data, err)
		e.Records, e.Complete = 1, true
		exports = append(exports, e)
	}
	draft, err := st.StageExportsOnly(ctx, parent, archive.Trigger{Kind: domain.TriggerWebhook}, time.Time{}, exports)
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.CommitStaged(ctx, repo, draft.ID)
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

// put stores an encoded export (encodeErr is the encoder's error).
func put(t testing.TB, st *archive.Store, repo archive.RepoKey, kind string, data []byte, encodeErr error) archive.Export {
	t.Helper()
	if encodeErr != nil {
		t.Fatal(encodeErr)
	}
	e, _, err := st.PutExport(context.Background(), repo, kind, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func line(n int) *int { return &n }

// Alice, Bob and Carol are the people of the sample data.
var (
	Alice = &archive.Person{UUID: "{a11ce000-0000-4000-8000-000000000001}", AccountID: "557058:alice", Nickname: "alice", DisplayName: "Alice Liddell"}
	Bob   = &archive.Person{UUID: "{b0b00000-0000-4000-8000-000000000002}", AccountID: "557058:bob", Nickname: "bob", DisplayName: "Bob Builder"}
	Carol = &archive.Person{UUID: "{ca201000-0000-4000-8000-000000000003}", Nickname: "carol"}
)

// SamplePullRequests are four pull requests, one per state: #1 OPEN with a
// threaded review (inline comments, a reply to a reply, a deleted and a
// pending comment, a resolved thread), tasks, an approval and a change
// request; #2 MERGED; #3 DECLINED by a deleted user; #4 SUPERSEDED.
func SamplePullRequests() []archive.PullRequestRecord {
	resolved := at("2026-03-03T10:00:00Z")
	return []archive.PullRequestRecord{
		{
			ID: 1, Title: "Add the widget cache", State: "OPEN",
			Description: "Caches widgets.\n\n* fast\n* small",
			Author:      Alice,
			Source:      archive.BranchRecord{Branch: "feature/cache", Commit: "1111111111111111111111111111111111111111", CommitResolved: true, Repository: "acme/widgets"},
			Destination: archive.BranchRecord{Branch: "main", Commit: "2222222222222222222222222222222222222222", CommitResolved: true, Repository: "acme/widgets"},
			CreatedOn:   at("2026-03-01T09:00:00Z"), UpdatedOn: at("2026-03-03T11:00:00Z"),
			Reviewers: []*archive.Person{Bob, Carol},
			Participants: []archive.ParticipantRecord{
				{User: Bob, Role: "REVIEWER", Approved: true, State: "approved"},
				{User: Carol, Role: "REVIEWER", State: "changes_requested"},
				{User: Alice, Role: "PARTICIPANT"},
			},
			Comments: []archive.CommentRecord{
				{ID: 10, User: Bob, Raw: "Looks good overall.", CreatedOn: at("2026-03-01T10:00:00Z"), UpdatedOn: at("2026-03-01T10:00:00Z")},
				{ID: 11, Parent: 10, User: Alice, Raw: "Thanks!", CreatedOn: at("2026-03-01T11:00:00Z"), UpdatedOn: at("2026-03-01T11:00:00Z")},
				{ID: 12, Parent: 11, User: Bob, Raw: "Reply to a reply.", CreatedOn: at("2026-03-01T12:00:00Z"), UpdatedOn: at("2026-03-01T12:00:00Z")},
				{ID: 13, User: Carol, Raw: "Off by one here.", CreatedOn: at("2026-03-02T09:00:00Z"), UpdatedOn: at("2026-03-02T09:00:00Z"),
					Inline:     &archive.InlineRecord{Path: "cache/cache.go", From: line(41), To: line(42)},
					Resolution: &archive.ResolutionRecord{User: Alice, CreatedOn: resolved}},
				{ID: 14, User: Carol, Raw: "New line only.", CreatedOn: at("2026-03-02T09:30:00Z"), UpdatedOn: at("2026-03-02T09:30:00Z"),
					Inline: &archive.InlineRecord{Path: "cache/new.go", To: line(7)}},
				{ID: 15, User: Bob, Raw: "", Deleted: true, CreatedOn: at("2026-03-02T10:00:00Z"), UpdatedOn: at("2026-03-02T10:00:00Z")},
				{ID: 16, User: Alice, Raw: "Draft reply.", Pending: true, Parent: 13, CreatedOn: at("2026-03-02T11:00:00Z"), UpdatedOn: at("2026-03-02T11:00:00Z")},
			},
			Tasks: []archive.TaskRecord{
				{ID: 100, State: "UNRESOLVED", Raw: "Add a benchmark", Creator: Carol, CreatedOn: at("2026-03-02T09:05:00Z"), UpdatedOn: at("2026-03-02T09:05:00Z"), Comment: 13},
				{ID: 101, State: "RESOLVED", Raw: "Update the docs", Creator: Bob, CreatedOn: at("2026-03-02T09:06:00Z"), UpdatedOn: resolved, ResolvedOn: &resolved, ResolvedBy: Alice},
			},
			Activity: []archive.ActivityRecord{
				{Kind: archive.ActivityChangesRequested, Date: ptr(at("2026-03-02T09:10:00Z")), User: Carol},
				{Kind: archive.ActivityApproval, Date: ptr(at("2026-03-01T10:05:00Z")), User: Bob},
				{Kind: archive.ActivityUpdate, Date: ptr(at("2026-03-01T09:00:00Z")), User: Alice, State: "OPEN", Title: "Add the widget cache",
					SourceCommit: "1111111111111111111111111111111111111111", DestinationCommit: "2222222222222222222222222222222222222222"},
			},
			Commits: []archive.CommitRecord{
				{Hash: "1111111111111111111111111111111111111111", Date: at("2026-03-01T08:59:00Z"), Author: "Alice Liddell <alice@example.com>", Message: "Add the widget cache\n\nWith tests."},
			},
			URL: "https://bitbucket.org/acme/widgets/pull-requests/1",
		},
		{
			ID: 2, Title: "Fix the build", State: "MERGED", Author: Bob,
			Source:      archive.BranchRecord{Branch: "fix/build", Commit: "333333333333", Repository: "acme/widgets"},
			Destination: archive.BranchRecord{Branch: "main", Commit: "2222222222222222222222222222222222222222", CommitResolved: true, Repository: "acme/widgets"},
			MergeCommit: "4444444444444444444444444444444444444444", ClosedBy: Alice,
			CreatedOn: at("2026-02-01T09:00:00Z"), UpdatedOn: at("2026-02-02T09:00:00Z"),
			Participants: []archive.ParticipantRecord{{User: Alice, Role: "REVIEWER", Approved: true, State: "approved"}},
			Reviewers:    []*archive.Person{Alice},
			URL:          "https://bitbucket.org/acme/widgets/pull-requests/2",
		},
		{
			ID: 3, Title: "Rewrite everything in COBOL", State: "DECLINED", Author: nil, Reason: "No.",
			Source:      archive.BranchRecord{Branch: "cobol", Repository: "someone/widgets-fork"},
			Destination: archive.BranchRecord{Branch: "main", Repository: "acme/widgets"},
			CreatedOn:   at("2026-01-01T09:00:00Z"), UpdatedOn: at("2026-01-05T09:00:00Z"),
			Comments: []archive.CommentRecord{
				{ID: 30, User: nil, Raw: "I left.", CreatedOn: at("2026-01-02T09:00:00Z"), UpdatedOn: at("2026-01-02T09:00:00Z")},
			},
			Gaps: []string{"commits: the source repository is gone"},
		},
		{
			ID: 4, Title: "Old approach", State: "SUPERSEDED", Author: Carol,
			Source:      archive.BranchRecord{Branch: "old", Repository: "acme/widgets"},
			Destination: archive.BranchRecord{Branch: "main", Repository: "acme/widgets"},
			CreatedOn:   at("2025-12-01T09:00:00Z"), UpdatedOn: at("2025-12-02T09:00:00Z"),
		},
	}
}

// SampleMetadata is the sample repository's settings; the branch
// restrictions could not be read (not permitted).
func SampleMetadata() *archive.RepositoryMetadata {
	return &archive.RepositoryMetadata{
		Format: archive.MetadataFormat, UUID: "{0f0e0d0c-1111-4222-8333-444455556666}", FullName: "acme/widgets", Slug: "widgets", Name: "Widgets",
		Description: "All the widgets.", Language: "go", MainBranch: "main", IsPrivate: true, ForkPolicy: "no_public_forks", SCM: "git",
		Workspace:          archive.WorkspaceRecord{Slug: "acme", Name: "Acme"},
		Project:            &archive.ProjectRecord{Key: "WID", Name: "Widgets"},
		BranchRestrictions: archive.BranchRestrictionsSection{SectionStatus: archive.SectionStatus{Status: archive.SectionNotPermitted}, Items: []archive.BranchRestrictionRecord{}},
		BranchingModel: archive.BranchingModelSection{SectionStatus: archive.SectionStatus{Status: archive.SectionOK},
			Development: &archive.BranchingModelBranch{UseMainbranch: true},
			BranchTypes: []archive.BranchTypeRecord{{Kind: "feature", Prefix: "feature/", Enabled: true}}},
		DefaultReviewers: archive.DefaultReviewersSection{SectionStatus: archive.SectionStatus{Status: archive.SectionOK}, Users: []*archive.Person{Bob}},
	}
}

func ptr[T any](v T) *T { return &v }

// FlipStoredByte damages one byte in the middle of a stored object (a pack, an export) through
// the storage API, as bit rot or tampering would, for the tests of what notices it.
func FlipStoredByte(t testing.TB, storageURL, key string) {
	t.Helper()
	ctx := context.Background()
	b, err := blob.OpenBucket(ctx, storageURL)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data, err := b.ReadAll(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := b.WriteAll(ctx, key, data, nil); err != nil {
		t.Fatal(err)
	}
}
