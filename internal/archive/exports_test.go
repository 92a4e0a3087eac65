package archive_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/testenv"
)

func ptr[T any](v T) *T { return &v }

// sampleRecords are pull requests using every part of the record: participants, replies,
// inline and resolved comments, tasks, modelled and raw activity, commits, pins and gaps.
func sampleRecords() []archive.PullRequestRecord {
	at := func(h int) time.Time { return time.Date(2026, 1, 2, h, 30, 0, 0, time.UTC) }
	alice := &archive.Person{UUID: "{a}", AccountID: "557058:a", Nickname: "alice", DisplayName: "Alice Anders"}
	bob := &archive.Person{UUID: "{b}", Nickname: "bob", DisplayName: "Bob Berg"}
	full := archive.PullRequestRecord{
		ID: 7, Title: "Add <widgets> & \"gadgets\"", State: "MERGED", Description: "Grüße 👋\n\n* one",
		DescriptionHTML: "<p>Grüße 👋</p>", Author: alice,
		Source:      archive.BranchRecord{Branch: "feature/w", Commit: strings.Repeat("a", 40), CommitResolved: true, Repository: "acme/api", RepositoryUUID: "{r}"},
		Destination: archive.BranchRecord{Branch: "main", Commit: "bbbbbbbbbbbb"},
		MergeCommit: strings.Repeat("c", 40), CloseSourceBranch: true, ClosedBy: bob,
		CreatedOn: at(1), UpdatedOn: at(5),
		Reviewers: []*archive.Person{bob},
		Participants: []archive.ParticipantRecord{{User: bob, Role: "REVIEWER", Approved: true, State: "approved", ParticipatedOn: ptr(at(3))},
			{User: nil, Role: "PARTICIPANT"}},
		Comments: []archive.CommentRecord{
			{ID: 100, User: bob, Raw: "Why?", HTML: "<p>Why?</p>", CreatedOn: at(2), UpdatedOn: at(2),
				Inline: &archive.InlineRecord{Path: "src/w.go", To: ptr(3)}, Resolution: &archive.ResolutionRecord{User: alice, CreatedOn: at(4)}},
			{ID: 101, Parent: 100, User: alice, Raw: "Because.", CreatedOn: at(3), UpdatedOn: at(3)},
			{ID: 102, User: nil, Deleted: true, CreatedOn: at(3), UpdatedOn: at(4)},
		},
		Tasks: []archive.TaskRecord{{ID: 5, State: "RESOLVED", Raw: "Fix it", Creator: bob, CreatedOn: at(2), UpdatedOn: at(4),
			ResolvedOn: ptr(at(4)), ResolvedBy: alice, Comment: 100}},
		Activity: []archive.ActivityRecord{
			{Kind: archive.ActivityUpdate, Date: ptr(at(5)), User: bob, State: "MERGED", Title: "Add widgets", SourceCommit: "aaaaaaaaaaaa"},
			{Kind: archive.ActivityApproval, Date: ptr(at(3)), User: bob},
			{Kind: archive.ActivityComment, Comment: 100},
			{Kind: "future_kind", Raw: json.RawMessage(`{"future_kind":{"x":1}}`)},
		},
		Commits:   []archive.CommitRecord{{Hash: strings.Repeat("a", 40), Date: at(1), Author: "Alice Anders <alice@example.com>", Message: "widgets\n"}},
		URL:       "https://bitbucket.org/acme/api/pull-requests/7",
		PinnedRef: archive.PinRef(7),
		Gaps:      []string{"commits: the source fork is gone"},
	}
	open := archive.PullRequestRecord{ID: 2, Title: "Draft", State: "OPEN", Draft: true, Author: nil,
		Source: archive.BranchRecord{Branch: "x"}, Destination: archive.BranchRecord{Branch: "main"}, CreatedOn: at(0), UpdatedOn: at(0)}
	gone := archive.PullRequestRecord{ID: 30, Title: "Gone", State: "DECLINED", Reason: "no", DeletedUpstream: true, CreatedOn: at(0), UpdatedOn: at(1)}
	return []archive.PullRequestRecord{full, open, gone}
}

func gunzip(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func encodePRs(t *testing.T, recs []archive.PullRequestRecord) []byte {
	t.Helper()
	data, err := archive.EncodePullRequests(recs)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The same records encode to the same bytes whatever order they come in (so an unchanged
// export is the previous snapshot's object), any changed field changes the bytes, and the
// lines decode back to the records in id order.
func TestEncodePullRequestsIsCanonical(t *testing.T) {
	recs := sampleRecords()
	want := encodePRs(t, recs)
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {2, 0, 1}} {
		var shuffled []archive.PullRequestRecord
		for _, i := range order {
			shuffled = append(shuffled, sampleRecords()[i])
		}
		if got := encodePRs(t, shuffled); !bytes.Equal(got, want) {
			t.Errorf("order %v encodes differently", order)
		}
	}
	// The caller's slice is not reordered.
	if recs[0].ID != 7 {
		t.Errorf("EncodePullRequests sorted the caller's slice")
	}

	lines := strings.Split(strings.TrimSuffix(string(gunzip(t, want)), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"id":2,`) || !strings.HasPrefix(lines[2], `{"id":30,`) {
		t.Fatalf("lines = %d, first %.20q", len(lines), lines[0])
	}
	if !strings.Contains(lines[1], `"title":"Add <widgets> & \"gadgets\""`) {
		t.Errorf("HTML characters escaped: %s", lines[1][:120])
	}
	var decoded []archive.PullRequestRecord
	if err := archive.WalkPullRequests(bytes.NewReader(gunzip(t, want)), func(r *archive.PullRequestRecord) error {
		decoded = append(decoded, *r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sorted := []archive.PullRequestRecord{recs[1], recs[0], recs[2]}; !reflect.DeepEqual(decoded, sorted) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", decoded, sorted)
	}

	mutations := map[string]func(r []archive.PullRequestRecord){
		"title":          func(r []archive.PullRequestRecord) { r[0].Title += "!" },
		"state":          func(r []archive.PullRequestRecord) { r[1].State = "DECLINED" },
		"draft":          func(r []archive.PullRequestRecord) { r[1].Draft = false },
		"updated_on":     func(r []archive.PullRequestRecord) { r[2].UpdatedOn = r[2].UpdatedOn.Add(time.Microsecond) },
		"author deleted": func(r []archive.PullRequestRecord) { r[0].Author = nil },
		"author name": func(r []archive.PullRequestRecord) {
			r[0].Author = &archive.Person{UUID: "{a}", DisplayName: "Alice B."}
		},
		"source commit":    func(r []archive.PullRequestRecord) { r[0].Source.CommitResolved = false },
		"comment text":     func(r []archive.PullRequestRecord) { r[0].Comments[1].Raw = "Because!" },
		"comment resolved": func(r []archive.PullRequestRecord) { r[0].Comments[0].Resolution = nil },
		"inline line":      func(r []archive.PullRequestRecord) { r[0].Comments[0].Inline.To = ptr(4) },
		"task state":       func(r []archive.PullRequestRecord) { r[0].Tasks[0].State = "UNRESOLVED" },
		"approval":         func(r []archive.PullRequestRecord) { r[0].Participants[0].Approved = false },
		"activity raw":     func(r []archive.PullRequestRecord) { r[0].Activity[3].Raw = json.RawMessage(`{"future_kind":{"x":2}}`) },
		"commit message":   func(r []archive.PullRequestRecord) { r[0].Commits[0].Message = "widgets" },
		"deleted upstream": func(r []archive.PullRequestRecord) { r[2].DeletedUpstream = false },
		"one more gap":     func(r []archive.PullRequestRecord) { r[0].Gaps = append(r[0].Gaps, "tasks") },
		"a pull request replaced": func(r []archive.PullRequestRecord) {
			r[2] = r[1]
			r[2].ID = 3
		},
	}
	for name, mutate := range mutations {
		changed := sampleRecords()
		mutate(changed)
		if bytes.Equal(encodePRs(t, changed), want) {
			t.Errorf("%s: encoding unchanged", name)
		}
	}

	dup := sampleRecords()
	dup[2].ID = dup[0].ID
	if _, err := archive.EncodePullRequests(dup); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate id: %v", err)
	}
	if empty := encodePRs(t, nil); len(gunzip(t, empty)) != 0 || !bytes.Equal(empty, encodePRs(t, []archive.PullRequestRecord{})) {
		t.Errorf("empty export is not one canonical empty object")
	}

	md := sampleMetadata()
	a, err := archive.EncodeMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := archive.EncodeMetadata(sampleMetadata())
	md.DefaultReviewers.Users = nil
	c, _ := archive.EncodeMetadata(md)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Errorf("metadata encoding is not canonical (same %v, changed %v)", bytes.Equal(a, b), !bytes.Equal(a, c))
	}
}

func sampleMetadata() *archive.RepositoryMetadata {
	return &archive.RepositoryMetadata{
		Format: archive.MetadataFormat, UUID: "6a1b2c3d-0000-4000-8000-00000000abcd", FullName: "acme/widgets", Slug: "widgets",
		Name: "widgets", MainBranch: "main", IsPrivate: true, Workspace: archive.WorkspaceRecord{Slug: "acme"},
		BranchRestrictions: archive.BranchRestrictionsSection{SectionStatus: archive.SectionStatus{Status: archive.SectionNotPermitted},
			Items: []archive.BranchRestrictionRecord{}},
		BranchingModel: archive.BranchingModelSection{SectionStatus: archive.SectionStatus{Status: archive.SectionOK},
			Development: &archive.BranchingModelBranch{UseMainbranch: true},
			BranchTypes: []archive.BranchTypeRecord{{Kind: "feature", Prefix: "feature/", Enabled: true}}},
		DefaultReviewers: archive.DefaultReviewersSection{SectionStatus: archive.SectionStatus{Status: archive.SectionOK},
			Users: []*archive.Person{{UUID: "{b}", Nickname: "bob"}}},
	}
}

// forEachBackend runs fn on file:// in a temporary directory and on a bucket of the test S3
// server, with a fixture backing up into it and the bucket opened directly (to tamper with).
func forEachBackend(t *testing.T, fn func(t *testing.T, f *fixture, bucket *blob.Bucket)) {
	for name, storageURL := range map[string]string{"file": "file://" + t.TempDir(), "s3": testenv.S3(t)} {
		t.Run(name, func(t *testing.T) {
			f := newFixtureAt(t, storageURL)
			b, err := blob.OpenBucket(context.Background(), storageURL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			fn(t, f, b)
		})
	}
}

const repoPrefix = "tenants/tenant-1/repositories/6a1b2c3d-0000-4000-8000-00000000abcd/"

var exportKey = regexp.MustCompile(`^exports/pull-requests/[0-9a-f]{64}\.jsonl\.gz$`)

func TestPutExportWritesOnceAndRepairsAWrongSize(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture, bucket *blob.Bucket) {
		ctx := context.Background()
		data := encodePRs(t, sampleRecords())
		sum := sha256.Sum256(data)

		e, written, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, data)
		if err != nil || !written {
			t.Fatalf("first PutExport = %+v, written %v, %v", e, written, err)
		}
		if !exportKey.MatchString(e.Key) || !strings.Contains(e.Key, hex.EncodeToString(sum[:])) ||
			e.File.Size != int64(len(data)) || e.File.SHA256 != hex.EncodeToString(sum[:]) ||
			e.Format != archive.PullRequestsFormat || e.Kind != archive.ExportPullRequests {
			t.Errorf("export entry = %+v", e)
		}
		again, written, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, data)
		if err != nil || written || !reflect.DeepEqual(again, e) {
			t.Errorf("second PutExport = %+v, written %v, %v; want the same entry, nothing written", again, written, err)
		}

		// A crash mid-upload left a short object under the key: it is written again.
		full := repoPrefix + e.Key
		if err := bucket.WriteAll(ctx, full, data[:len(data)/2], nil); err != nil {
			t.Fatal(err)
		}
		repaired, written, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, data)
		if err != nil || !written || !reflect.DeepEqual(repaired, e) {
			t.Errorf("PutExport over a short object = %+v, written %v, %v", repaired, written, err)
		}
		if stored, err := bucket.ReadAll(ctx, full); err != nil || !bytes.Equal(stored, data) {
			t.Errorf("repaired object differs (%d bytes, %v)", len(stored), err)
		}

		md, _ := archive.EncodeMetadata(sampleMetadata())
		me, written, err := f.store.PutExport(ctx, f.repo, archive.ExportMetadata, md)
		if err != nil || !written || !strings.HasPrefix(me.Key, "exports/metadata/") || !strings.HasSuffix(me.Key, ".json.gz") ||
			me.Format != archive.MetadataFormat {
			t.Errorf("metadata export = %+v, %v, %v", me, written, err)
		}
		if _, _, err := f.store.PutExport(ctx, f.repo, "wiki", data); err == nil {
			t.Errorf("unknown export kind accepted")
		}
	})
}

func TestOpenExportDetectsTampering(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture, bucket *blob.Bucket) {
		ctx := context.Background()
		data := encodePRs(t, sampleRecords())
		e, _, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, data)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := f.store.OpenExport(ctx, f.repo, e)
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(content, gunzip(t, data)) {
			t.Fatalf("OpenExport content differs (%v)", err)
		}

		full := repoPrefix + e.Key
		flipped := append([]byte(nil), data...)
		flipped[len(flipped)/2] ^= 0xff
		for what, stored := range map[string][]byte{"a flipped byte": flipped, "a short object": data[:10], "a longer object": append(append([]byte(nil), data...), 0)} {
			if err := bucket.WriteAll(ctx, full, stored, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := f.store.OpenExport(ctx, f.repo, e); !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("%s: %v, want ErrCorrupt", what, err)
			}
		}
		if err := bucket.Delete(ctx, full); err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.OpenExport(ctx, f.repo, e); !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
			t.Errorf("missing object: %v, want ErrCorrupt", err)
		}
		// An entry whose key is not its content address is refused before any read.
		bad := e
		bad.Key = "exports/pull-requests/../../../secrets.jsonl.gz"
		if _, err := f.store.OpenExport(ctx, f.repo, bad); err == nil || errors.Is(err, archive.ErrCorrupt) {
			t.Errorf("bad key: %v, want a validation error", err)
		}
	})
}

// A pull request changed while nobody pushed: the new snapshot carries the parent's refs,
// HEAD and packs unchanged, the new exports, and restores like the parent.
func TestStageExportsOnlySnapshotsOverTheParentsCode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture, _ *blob.Bucket) {
		ctx := context.Background()
		f.src.Commit("main", "a", "1\n")
		f.src.Commit("feature", "b", "2\n")
		parent := f.backup(domain.TriggerInitial).Manifest

		recs := sampleRecords()
		prs, _, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, encodePRs(t, recs))
		if err != nil {
			t.Fatal(err)
		}
		prs.Records, prs.Complete, prs.States = 3, true, map[string]int{"OPEN": 1, "MERGED": 1, "DECLINED": 1}
		mdData, _ := archive.EncodeMetadata(sampleMetadata())
		md, _, err := f.store.PutExport(ctx, f.repo, archive.ExportMetadata, mdData)
		if err != nil {
			t.Fatal(err)
		}
		md.Records, md.Complete = 1, true

		draft, err := f.store.StageExportsOnly(ctx, parent, archive.Trigger{Kind: domain.TriggerWebhook, DeliveryID: "d-2"}, time.Now().Add(-time.Second),
			[]archive.Export{prs, md})
		if err != nil {
			t.Fatal(err)
		}
		if latest, _ := f.store.LoadManifest(ctx, f.repo, "latest"); latest.ID != parent.ID {
			t.Fatalf("a staged draft is visible as the latest snapshot")
		}
		res, err := f.store.CommitStaged(ctx, f.repo, draft.ID)
		if err != nil {
			t.Fatal(err)
		}
		m := res.Manifest
		if m.Parent != parent.ID || m.ID <= parent.ID || m.Head != parent.Head || !m.Refs.Equal(parent.Refs) ||
			!reflect.DeepEqual(m.Packs, parent.Packs) || m.Trigger.Kind != domain.TriggerWebhook || m.DurationMillis < 1000 {
			t.Errorf("exports-only snapshot = %+v\nparent %+v", m, parent)
		}
		if len(m.Exports) != 2 || m.Exports[0].Key != prs.Key || m.Exports[1].Key != md.Key {
			t.Errorf("exports = %+v", m.Exports)
		}
		if m.Totals.Bytes != parent.Totals.Bytes+prs.File.Size+md.File.Size {
			t.Errorf("totals %d, want the parent's %d plus the exports", m.Totals.Bytes, parent.Totals.Bytes)
		}
		latest, err := f.store.LoadManifest(ctx, f.repo, "latest")
		if err != nil || latest.ID != m.ID {
			t.Fatalf("latest = %v, %v", latest, err)
		}
		loaded, e, err := f.store.LoadPullRequests(ctx, latest)
		if err != nil || e.Key != prs.Key || len(loaded) != 3 || loaded[0].ID != 2 {
			t.Fatalf("LoadPullRequests = %d records, %v", len(loaded), err)
		}
		if gotMD, err := f.store.LoadMetadata(ctx, latest); err != nil || !reflect.DeepEqual(gotMD, sampleMetadata()) {
			t.Errorf("LoadMetadata = %+v, %v", gotMD, err)
		}
		f.restoreAndCheck(m.ID)

		// A second comment: only the pull request export changes; metadata is the parent's.
		recs[0].Comments[1].Raw = "Because, really."
		prs2, written, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, encodePRs(t, recs))
		if err != nil || !written || prs2.Key == prs.Key {
			t.Fatalf("changed export = %+v, written %v, %v", prs2, written, err)
		}
		if archive.ExportsUnchanged(m, []archive.Export{prs2, md}) {
			t.Errorf("ExportsUnchanged ignores a changed pull request export")
		}
		draft2, err := f.store.StageExportsOnly(ctx, m, archive.Trigger{Kind: domain.TriggerWebhook}, time.Time{}, []archive.Export{prs2})
		if err != nil {
			t.Fatal(err)
		}
		res2, err := f.store.CommitStaged(ctx, f.repo, draft2.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ex := res2.Manifest.Exports; len(ex) != 2 || ex[0].Key != prs2.Key || ex[1].Key != md.Key || res2.Manifest.Parent != m.ID {
			t.Errorf("second exports-only snapshot exports = %+v", ex)
		}
		// The first snapshot still reads its own export.
		old, _, err := f.store.LoadPullRequests(ctx, m)
		if err != nil || old[1].Comments[1].Raw != "Because." {
			t.Errorf("the earlier snapshot's export changed: %v", err)
		}
	})
}

func TestExportsUnchanged(t *testing.T) {
	pr := archive.Export{Kind: archive.ExportPullRequests, Key: "exports/pull-requests/a", Complete: true,
		Run: &archive.ExportRun{RESTCalls: 5, Written: true}}
	md := archive.Export{Kind: archive.ExportMetadata, Key: "exports/metadata/b", Complete: true}
	with := func(e archive.Export, change func(*archive.Export)) archive.Export {
		change(&e)
		return e
	}
	incomplete := with(pr, func(e *archive.Export) { e.Complete = false })
	cases := []struct {
		name   string
		latest []archive.Export
		now    []archive.Export
		same   bool
	}{
		{"equal", []archive.Export{pr, md}, []archive.Export{pr, md}, true},
		{"other order", []archive.Export{pr, md}, []archive.Export{md, pr}, true},
		{"run stats differ", []archive.Export{pr}, []archive.Export{with(pr, func(e *archive.Export) { e.Run = &archive.ExportRun{RESTCalls: 1} })}, true},
		{"high water differs", []archive.Export{pr}, []archive.Export{with(pr, func(e *archive.Export) { e.HighWater = ptr(time.Now()) })}, true},
		{"not refreshed this time", []archive.Export{pr}, []archive.Export{incomplete}, true},
		{"caught up", []archive.Export{incomplete}, []archive.Export{pr}, false},
		{"other object", []archive.Export{pr, md}, []archive.Export{with(pr, func(e *archive.Export) { e.Key += "x" }), md}, false},
		{"export added", []archive.Export{pr}, []archive.Export{pr, md}, false},
		{"export gone", []archive.Export{pr, md}, []archive.Export{md}, false},
		{"first export", nil, []archive.Export{pr}, false},
	}
	for _, c := range cases {
		if got := archive.ExportsUnchanged(&archive.Manifest{Exports: c.latest}, c.now); got != c.same {
			t.Errorf("%s: ExportsUnchanged = %v, want %v", c.name, got, c.same)
		}
	}
	if archive.ExportsUnchanged(nil, []archive.Export{pr}) {
		t.Error("no latest snapshot: the exports are news")
	}
}

func TestManifestValidateRefusesBadExportsAndPins(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.src.Commit("main", "a", "1\n")
	base := f.backup(domain.TriggerInitial).Manifest
	head := base.Refs["refs/heads/main"]
	e, _, err := f.store.PutExport(ctx, f.repo, archive.ExportPullRequests, encodePRs(t, sampleRecords()))
	if err != nil {
		t.Fatal(err)
	}
	valid := *base
	valid.Exports = []archive.Export{e}
	valid.Pins = map[string]string{archive.PinRef(7): head}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid manifest refused: %v", err)
	}
	cases := map[string]func(m *archive.Manifest){
		"key escaping the prefix": func(m *archive.Manifest) { m.Exports[0].Key = "exports/pull-requests/../../packs/x.jsonl.gz" },
		"key not the content": func(m *archive.Manifest) {
			m.Exports[0].Key = "exports/pull-requests/" + strings.Repeat("0", 64) + ".jsonl.gz"
		},
		"upper-case digest": func(m *archive.Manifest) {
			m.Exports[0].Key = "exports/pull-requests/" + strings.ToUpper(m.Exports[0].File.SHA256) + ".jsonl.gz"
		},
		"wrong extension": func(m *archive.Manifest) { m.Exports[0].Key = strings.TrimSuffix(m.Exports[0].Key, "l.gz") + ".gz" },
		"metadata key for pull requests": func(m *archive.Manifest) {
			m.Exports[0].Key = "exports/metadata/" + m.Exports[0].File.SHA256 + ".json.gz"
		},
		"unknown kind":            func(m *archive.Manifest) { m.Exports[0].Kind = "wiki" },
		"kind listed twice":       func(m *archive.Manifest) { m.Exports = append(m.Exports, m.Exports[0]) },
		"pin outside the prefix":  func(m *archive.Manifest) { m.Pins = map[string]string{"refs/heads/main": head} },
		"pin under another space": func(m *archive.Manifest) { m.Pins = map[string]string{"refs/gitsec/tips/7/head": head} },
		"pin with a bad name":     func(m *archive.Manifest) { m.Pins = map[string]string{"refs/gitsec/pull/7/../head": head} },
		"pin with a bad oid":      func(m *archive.Manifest) { m.Pins = map[string]string{archive.PinRef(7): "abc"} },
	}
	for name, mutate := range cases {
		m := valid
		m.Exports = append([]archive.Export(nil), valid.Exports...)
		mutate(&m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The refusal is also what CommitSnapshot does before writing.
	bad := valid
	bad.Pins = map[string]string{"refs/heads/main": head}
	if _, err := f.store.CommitSnapshot(ctx, &bad); err == nil || errors.Is(err, archive.ErrSnapshotExists) {
		t.Errorf("CommitSnapshot of a manifest with a bad pin: %v", err)
	}
}
