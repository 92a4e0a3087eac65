package archive_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
)

type fixture struct {
	t          *testing.T
	src        *gitmirrortest.Source
	store      *archive.Store
	storageDir string
	mirror     *gitmirror.Mirror
	repo       archive.RepoKey
	identity   archive.Repository
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := newFixtureAt(t, "file://"+dir)
	f.storageDir = dir
	return f
}

// newFixtureAt backs up into the bucket at storageURL.
func newFixtureAt(t *testing.T, storageURL string) *fixture {
	t.Helper()
	store, err := archive.Open(context.Background(), storageURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{
		t:        t,
		src:      gitmirrortest.NewSource(t),
		store:    store,
		identity: archive.Repository{Provider: "bitbucket", UUID: "{6A1B2C3D-0000-4000-8000-00000000ABCD}", FullName: "acme/widgets"},
	}
	f.repo, err = archive.NewRepoKey("tenant-1", f.identity.UUID)
	if err != nil {
		t.Fatal(err)
	}
	f.openMirror(filepath.Join(t.TempDir(), "mirror.git"))
	return f
}

func (f *fixture) openMirror(dir string) {
	f.t.Helper()
	m, err := gitmirror.Open(dir)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { m.Close() })
	f.mirror = m
}

func (f *fixture) fetch() gitmirror.FetchResult {
	f.t.Helper()
	res, err := f.mirror.Fetch(context.Background(), f.src.URL, nil, nil)
	if err != nil {
		f.t.Fatalf("fetch: %v", err)
	}
	return res
}

func (f *fixture) snapshot(kind domain.TriggerKind) archive.SnapshotResult {
	f.t.Helper()
	res, err := f.store.SnapshotMirror(context.Background(), f.mirror, archive.SnapshotRequest{
		Tenant:     f.repo.Tenant,
		Repository: f.identity,
		Trigger:    archive.Trigger{Kind: kind, DeliveryID: "delivery-1"},
	})
	if err != nil {
		f.t.Fatalf("snapshot: %v", err)
	}
	return res
}

func (f *fixture) backup(kind domain.TriggerKind) archive.SnapshotResult {
	f.t.Helper()
	f.fetch()
	return f.snapshot(kind)
}

// storedFiles maps every object in file:// storage (not fileblob's .attrs
// sidecars) to its size.
func (f *fixture) storedFiles() map[string]int64 {
	f.t.Helper()
	files := map[string]int64{}
	err := filepath.WalkDir(f.storageDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".attrs") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.storageDir, path)
		files[filepath.ToSlash(rel)] = info.Size()
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return files
}

// restoreAndCheck restores a snapshot into a new bare repository and checks it
// with git itself.
func (f *fixture) restoreAndCheck(id string) *archive.Manifest {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), "restored.git")
	m, err := f.store.Restore(context.Background(), f.repo, id, dir, nil)
	if err != nil {
		f.t.Fatalf("restore %s: %v", id, err)
	}
	if got := gitmirrortest.ForEachRef(f.t, dir); !got.Equal(m.Refs) {
		f.t.Fatalf("restored for-each-ref differs from the manifest:\n got %v\nwant %v", got, m.Refs)
	}
	gitmirrortest.Git(f.t, dir, "fsck", "--strict", "--no-dangling")
	if m.Head != "" {
		if head := strings.TrimSpace(gitmirrortest.Git(f.t, dir, "symbolic-ref", "HEAD")); head != m.Head {
			f.t.Fatalf("restored HEAD = %s, manifest says %s", head, m.Head)
		}
	}
	return m
}

func TestBackupAndRestore(t *testing.T) {
	f := newFixture(t)
	first := f.src.Commit("main", "README", "hello\n")
	f.src.Commit("main", "docs/guide.md", "guide\n")
	f.src.Commit("feature", "f.txt", "feature\n")
	f.src.Tag("v1.0", first)
	f.src.Git("update-ref", "refs/pull-requests/3/from", first)

	res := f.backup(domain.TriggerInitial)
	if !res.Created || res.PacksUploaded != 1 {
		t.Fatalf("initial backup = %+v, want one pack uploaded", res)
	}
	m := res.Manifest
	if m.Format != archive.FormatVersion || m.Parent != "" || m.Tenant != "tenant-1" ||
		m.Repository.UUID != "6a1b2c3d-0000-4000-8000-00000000abcd" || m.Repository.FullName != "acme/widgets" ||
		m.Trigger != (archive.Trigger{Kind: domain.TriggerInitial, DeliveryID: "delivery-1"}) {
		t.Fatalf("manifest header = %+v", m)
	}
	if !m.Refs.Equal(f.src.Refs()) || m.Head != "refs/heads/main" {
		t.Fatalf("manifest refs %v head %q, source has %v", m.Refs, m.Head, f.src.Refs())
	}
	if m.Totals.Refs != 4 || m.Totals.Packs != 1 || m.Totals.Bytes != m.Packs[0].Pack.Size+m.Packs[0].Idx.Size {
		t.Fatalf("totals = %+v", m.Totals)
	}
	stored := f.storedFiles()
	prefix := "tenants/tenant-1/repositories/6a1b2c3d-0000-4000-8000-00000000abcd/"
	for _, key := range []string{
		prefix + "packs/" + m.Packs[0].Name + ".pack",
		prefix + "packs/" + m.Packs[0].Name + ".idx",
		prefix + "snapshots/" + m.ID + ".json",
	} {
		if _, ok := stored[key]; !ok {
			t.Errorf("storage lacks %s; it has %v", key, stored)
		}
	}

	loaded, err := f.store.LoadManifest(context.Background(), f.repo, "latest")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID != m.ID || !loaded.Refs.Equal(m.Refs) {
		t.Fatalf("latest = %+v, want %+v", loaded, m)
	}
	f.restoreAndCheck(m.ID)

	if _, err := f.store.Restore(context.Background(), f.repo, "20200101T000000.000Z-00000000", t.TempDir(), nil); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("restore of a missing snapshot: %v, want ErrNotFound", err)
	}
}

func TestIncrementalBackupWritesOnlyTheNewPack(t *testing.T) {
	f := newFixture(t)
	for i := range 20 {
		f.src.Commit("main", fmt.Sprintf("file-%d.txt", i), strings.Repeat("content ", 200+i))
	}
	first := f.backup(domain.TriggerInitial).Manifest
	oldMain := first.Refs["refs/heads/main"]

	before := f.storedFiles()
	f.src.Commit("main", "file-0.txt", "changed\n")
	res := f.backup(domain.TriggerWebhook)
	after := f.storedFiles()

	var added []string
	var addedBytes int64
	for key, size := range after {
		if _, ok := before[key]; !ok {
			added = append(added, key)
			addedBytes += size
		}
	}
	slices.Sort(added)
	if len(added) != 3 || !strings.HasSuffix(added[0], ".idx") || !strings.HasSuffix(added[1], ".pack") || !strings.HasSuffix(added[2], ".json") {
		t.Fatalf("incremental backup wrote %v, want one pack, its idx and a manifest", added)
	}
	if res.BytesUploaded != addedBytes || res.PacksUploaded != 1 {
		t.Fatalf("result says %d bytes in %d packs, storage grew by %d bytes", res.BytesUploaded, res.PacksUploaded, addedBytes)
	}
	m := res.Manifest
	newPack := m.Packs[len(m.Packs)-1]
	if newPack.Objects != 3 || newPack.Pack.Size >= first.Packs[0].Pack.Size {
		t.Fatalf("new pack has %d objects and %d bytes (initial pack: %d bytes)", newPack.Objects, newPack.Pack.Size, first.Packs[0].Pack.Size)
	}
	if m.Parent != first.ID || len(m.Packs) != 2 || m.Packs[0].Name != first.Packs[0].Name || newPack.Snapshot != m.ID {
		t.Fatalf("manifest chain = parent %s packs %+v", m.Parent, m.Packs)
	}
	if !slices.Equal(newPack.Prerequisites, []string{oldMain}) || len(newPack.UnnamedTips) != 0 {
		t.Fatalf("new pack prerequisites %v unnamed tips %v, want [%s] and none", newPack.Prerequisites, newPack.UnnamedTips, oldMain)
	}
	if m.ID <= first.ID {
		t.Fatalf("snapshot id %s does not sort after its parent %s", m.ID, first.ID)
	}

	// Unchanged remote: ls-remote matches the latest manifest and nothing is written.
	remote, head, err := gitmirror.LsRemote(context.Background(), f.src.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !remote.Equal(m.Refs) || head != m.Head {
		t.Fatalf("ls-remote %v %q differs from the latest manifest", remote, head)
	}
	again := f.backup(domain.TriggerSchedule)
	if again.Created || again.BytesUploaded != 0 || again.Manifest.ID != m.ID {
		t.Fatalf("backup of an unchanged repository = %+v", again)
	}
	if got := f.storedFiles(); len(got) != len(after) {
		t.Fatalf("unchanged backup wrote files: %d before, %d after", len(after), len(got))
	}
	ids, err := f.store.ListSnapshots(context.Background(), f.repo)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{m.ID, first.ID}) {
		t.Fatalf("snapshots = %v, want newest first [%s %s]", ids, m.ID, first.ID)
	}
	f.restoreAndCheck(first.ID)
	f.restoreAndCheck(m.ID)
}

func TestEmptyRepositoryBackup(t *testing.T) {
	f := newFixture(t)
	res := f.backup(domain.TriggerInitial)
	m := res.Manifest
	if !res.Created || len(m.Refs) != 0 || len(m.Packs) != 0 || m.Totals != (archive.Totals{}) {
		t.Fatalf("empty repository backup = %+v", m)
	}
	f.restoreAndCheck(m.ID)
	paths, _, err := f.store.ExportBundles(context.Background(), f.repo, m.ID, t.TempDir(), nil)
	if err != nil || len(paths) != 0 {
		t.Fatalf("export of an empty repository = %v, %v", paths, err)
	}
	// The first push is then backed up like an initial clone.
	f.src.Commit("main", "a", "a\n")
	next := f.backup(domain.TriggerWebhook)
	if next.PacksUploaded != 1 || next.Manifest.Parent != m.ID {
		t.Fatalf("backup after the first push = %+v", next)
	}
	f.restoreAndCheck("latest")
}

func TestForcePushAndDeletionsAreRecorded(t *testing.T) {
	f := newFixture(t)
	base := f.src.Commit("main", "a", "1\n")
	f.src.Commit("main", "a", "2\n")
	f.src.Commit("feature", "b", "b\n")
	f.src.Tag("v1", base)
	first := f.backup(domain.TriggerInitial).Manifest

	f.src.CommitOn(base, "refs/heads/main", "a", "rewritten\n")
	f.src.Git("update-ref", "-d", "refs/heads/feature")
	f.src.Git("tag", "-d", "v1")
	m := f.backup(domain.TriggerWebhook).Manifest
	if !m.Refs.Equal(f.src.Refs()) {
		t.Fatalf("manifest refs %v, source %v", m.Refs, f.src.Refs())
	}
	for _, gone := range []string{"refs/heads/feature", "refs/tags/v1"} {
		if _, ok := m.Refs[gone]; ok {
			t.Errorf("%s is still in the manifest after its deletion", gone)
		}
	}
	f.restoreAndCheck(m.ID)
	// The older snapshot still restores the deleted refs.
	f.restoreAndCheck(first.ID)
}

func TestManyRefsRoundTrip(t *testing.T) {
	f := newFixture(t)
	commit := f.src.Commit("main", "a", "a\n")
	var stdin strings.Builder
	for i := range 1100 {
		fmt.Fprintf(&stdin, "create refs/heads/topic/%04d %s\n", i, commit)
	}
	gitmirrortest.GitEnv(t, f.src.Dir, nil, stdin.String(), "update-ref", "--stdin")
	m := f.backup(domain.TriggerInitial).Manifest
	if len(m.Refs) != 1101 || !m.Refs.Equal(f.src.Refs()) {
		t.Fatalf("manifest has %d refs, want the source's 1101", len(m.Refs))
	}
	f.restoreAndCheck(m.ID)
}

func TestCrashBetweenPackUploadAndManifest(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", "a\n")
	first := f.backup(domain.TriggerInitial).Manifest

	f.src.Commit("main", "a", "b\n")
	fetched := f.fetch()
	if len(fetched.NewPacks) != 1 {
		t.Fatalf("fetch wrote %d packs", len(fetched.NewPacks))
	}
	// The run dies after uploading the pack, before its manifest.
	if _, _, err := f.store.PutPack(context.Background(), f.repo, fetched.NewPacks[0], nil); err != nil {
		t.Fatal(err)
	}
	if ids, _ := f.store.ListSnapshots(context.Background(), f.repo); len(ids) != 1 {
		t.Fatalf("a snapshot appeared without its manifest: %v", ids)
	}
	// The retry fetches nothing new, reuses the stored pack and commits.
	retry := f.backup(domain.TriggerWebhook)
	if !retry.Created || retry.PacksUploaded != 0 || retry.Manifest.Parent != first.ID || len(retry.Manifest.Packs) != 2 {
		t.Fatalf("retry = %+v", retry)
	}
	f.restoreAndCheck("latest")
}

func TestCrashBeforeUploadKeepsPendingPacks(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", "a\n")
	f.backup(domain.TriggerInitial)

	// A run fetches and dies before uploading; the branch moves on before
	// the next run, whose fetch writes a second pack.
	lost := f.src.Commit("main", "a", "b\n")
	f.fetch()
	final := f.src.Commit("main", "a", "c\n")
	res := f.backup(domain.TriggerWebhook)
	m := res.Manifest
	if res.PacksUploaded != 2 || len(m.Packs) != 3 {
		t.Fatalf("backup after a lost run uploaded %d packs, manifest lists %d", res.PacksUploaded, len(m.Packs))
	}
	// Nothing names the lost run's commit any more: the pack records it so
	// that a bundle of that pack can still reference it.
	if !slices.Equal(m.Packs[1].UnnamedTips, []string{lost}) || !slices.Equal(m.Packs[2].Prerequisites, []string{lost}) {
		t.Fatalf("packs = %+v", m.Packs)
	}
	if m.Refs["refs/heads/main"] != final {
		t.Fatalf("main = %s, want %s", m.Refs["refs/heads/main"], final)
	}
	f.restoreAndCheck(m.ID)
	checkBundleChain(t, f, m.ID, 3)
}

func TestHydrateMirrorFromStorage(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", "a\n")
	f.src.Commit("dev", "b", "b\n")
	f.src.Commit("main", "c", "c\n")
	first := f.backup(domain.TriggerInitial).Manifest

	// The worker lost its mirror: rebuild it from storage, no clone.
	dir := filepath.Join(t.TempDir(), "hydrated.git")
	latest, err := f.store.LoadManifest(context.Background(), f.repo, "latest")
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := f.store.Hydrate(context.Background(), latest, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mirror.Close() })
	f.mirror = mirror

	f.src.Commit("main", "a", "a2\n")
	fetched := f.fetch()
	if len(fetched.NewPacks) != 1 || fetched.Objects != 3 {
		t.Fatalf("fetch into the hydrated mirror wrote %d packs with %d objects, want an increment of 3", len(fetched.NewPacks), fetched.Objects)
	}
	res := f.snapshot(domain.TriggerSchedule)
	if res.PacksUploaded != 1 || res.Manifest.Parent != first.ID {
		t.Fatalf("snapshot after hydrate = %+v", res)
	}
	f.restoreAndCheck(res.Manifest.ID)
}

// checkBundleChain exports a snapshot as bundles and restores them with stock
// git alone: a mirror clone of the first, fetches of the rest.
func checkBundleChain(t *testing.T, f *fixture, id string, wantBundles int) {
	t.Helper()
	dir := t.TempDir()
	paths, m, err := f.store.ExportBundles(context.Background(), f.repo, id, filepath.Join(dir, "bundles"), nil)
	if err != nil {
		t.Fatalf("export bundles: %v", err)
	}
	if len(paths) != wantBundles {
		t.Fatalf("exported %d bundles, want %d", len(paths), wantBundles)
	}
	if !slices.IsSorted(paths) {
		t.Fatalf("bundle names do not sort in fetch order: %v", paths)
	}
	repo := filepath.Join(dir, "restored.git")
	gitmirrortest.Git(t, dir, "clone", "--quiet", "--mirror", paths[0], repo)
	for _, p := range paths[1:] {
		gitmirrortest.Git(t, repo, "bundle", "verify", "--quiet", p)
		gitmirrortest.Git(t, repo, "fetch", "--quiet", "--prune", p, "+refs/*:refs/*")
	}
	if got := gitmirrortest.ForEachRef(t, repo); !got.Equal(m.Refs) {
		t.Fatalf("refs restored from bundles differ from the manifest:\n got %v\nwant %v", got, m.Refs)
	}
	gitmirrortest.Git(t, repo, "fsck", "--strict", "--no-dangling")
}

func TestBundleChainRestoresWithStockGit(t *testing.T) {
	f := newFixture(t)
	base := f.src.Commit("main", "a", "1\n")
	f.src.Commit("main", "b", "2\n")
	f.src.Commit("feature", "f", "feature\n")
	f.src.Tag("v1", base)
	s1 := f.backup(domain.TriggerInitial).Manifest

	// Force-push main onto new history and add to feature.
	f.src.CommitOn(base, "refs/heads/main", "a", "rewritten\n")
	f.src.Commit("feature", "f", "feature 2\n")
	s2 := f.backup(domain.TriggerWebhook).Manifest

	// Delete feature, commit on main, tag it.
	f.src.Git("update-ref", "-d", "refs/heads/feature")
	main := f.src.Commit("main", "c", "3\n")
	f.src.Tag("v2", main)
	s3 := f.backup(domain.TriggerWebhook).Manifest

	// Only a deletion: no new pack, the last bundle must still carry it.
	f.src.Git("tag", "-d", "v1")
	s4 := f.backup(domain.TriggerManual).Manifest
	if len(s4.Packs) != 3 {
		t.Fatalf("a ref deletion added a pack: %d packs", len(s4.Packs))
	}

	checkBundleChain(t, f, s1.ID, 1)
	checkBundleChain(t, f, s2.ID, 2)
	checkBundleChain(t, f, s3.ID, 3)
	checkBundleChain(t, f, s4.ID, 3)

	// A plain clone of the first bundle checks out the first snapshot's main.
	dir := t.TempDir()
	paths, _, err := f.store.ExportBundles(context.Background(), f.repo, "latest", filepath.Join(dir, "b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	gitmirrortest.Git(t, dir, "clone", "--quiet", paths[0], work)
	if head := strings.TrimSpace(gitmirrortest.Git(t, work, "rev-parse", "HEAD")); head != s1.Refs["refs/heads/main"] {
		t.Fatalf("clone of the first bundle is at %s, want %s", head, s1.Refs["refs/heads/main"])
	}
	// A working clone takes the rest as remote-tracking branches.
	for _, p := range paths[1:] {
		gitmirrortest.Git(t, work, "fetch", "--quiet", p, "+refs/heads/*:refs/remotes/origin/*")
	}
	if got := strings.TrimSpace(gitmirrortest.Git(t, work, "rev-parse", "refs/remotes/origin/main")); got != s4.Refs["refs/heads/main"] {
		t.Fatalf("origin/main after all bundles = %s, want %s", got, s4.Refs["refs/heads/main"])
	}
}

func TestManifestIsWrittenOnlyOnce(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", "a\n")
	m := f.backup(domain.TriggerInitial).Manifest
	dup := *m
	dup.Trigger.Kind = domain.TriggerManual
	if _, err := f.store.CommitSnapshot(context.Background(), &dup); !errors.Is(err, archive.ErrSnapshotExists) {
		t.Fatalf("second write of %s: %v, want ErrSnapshotExists", m.ID, err)
	}
	loaded, err := f.store.LoadManifest(context.Background(), f.repo, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Trigger.Kind != domain.TriggerInitial {
		t.Fatal("the second write replaced the manifest")
	}
}

// Two attempts stage the same run (Temporal started the second while the first still ran).
// Drafts are invisible to readers; committing is idempotent; the other attempt's draft is
// removed, and written back late it is refused: committing it would fork the history.
func TestStagedSnapshotsCommitOnceAndNeverFork(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.src.Commit("main", "a", "a\n")
	f.fetch()
	req := archive.SnapshotRequest{Tenant: f.repo.Tenant, Repository: f.identity, Trigger: archive.Trigger{Kind: domain.TriggerInitial}}
	stage := func() *archive.Manifest {
		t.Helper()
		res, err := f.store.StageSnapshot(ctx, f.mirror, req)
		if err != nil || !res.Staged {
			t.Fatalf("stage = %+v, %v", res, err)
		}
		return res.Manifest
	}
	late, winner := stage(), stage()
	if late.ID == winner.ID || late.Parent != "" || winner.Parent != "" {
		t.Fatalf("staged %s and %s, want two first snapshots", late.ID, winner.ID)
	}
	if _, err := f.store.LoadManifest(ctx, f.repo, "latest"); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("latest before any commit: %v, want ErrNotFound (drafts are not snapshots)", err)
	}
	prefix := "tenants/tenant-1/repositories/6a1b2c3d-0000-4000-8000-00000000abcd/"
	lateDraft, err := os.ReadFile(filepath.Join(f.storageDir, prefix+"staging", late.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}

	first, err := f.store.CommitStaged(ctx, f.repo, winner.ID)
	if err != nil || first.Bytes == 0 || first.Manifest.ID != winner.ID {
		t.Fatalf("commit = %+v, %v", first, err)
	}
	again, err := f.store.CommitStaged(ctx, f.repo, winner.ID)
	if err != nil || again.Bytes != 0 || again.Manifest.ID != winner.ID {
		t.Fatalf("second commit = %+v, %v; want the same snapshot, nothing written", again, err)
	}
	for key := range f.storedFiles() {
		if strings.Contains(key, "/staging/") {
			t.Fatalf("draft %s left after the commit", key)
		}
	}
	if _, err := f.store.CommitStaged(ctx, f.repo, late.ID); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("commit of the removed draft: %v, want ErrNotFound", err)
	}
	// The first attempt, still running, writes its draft after the commit.
	if err := os.WriteFile(filepath.Join(f.storageDir, prefix+"staging", late.ID+".json"), lateDraft, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CommitStaged(ctx, f.repo, late.ID); !errors.Is(err, archive.ErrStaleDraft) {
		t.Fatalf("commit of a draft that no longer follows the latest snapshot: %v, want ErrStaleDraft", err)
	}
	if ids, err := f.store.ListSnapshots(ctx, f.repo); err != nil || !slices.Equal(ids, []string{winner.ID}) {
		t.Fatalf("snapshots = %v, %v; want only %s", ids, err, winner.ID)
	}
	f.restoreAndCheck(winner.ID)
}

func TestCorruptPackIsRejected(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", strings.Repeat("data\n", 100))
	m := f.backup(domain.TriggerInitial).Manifest
	path := filepath.Join(f.storageDir, filepath.FromSlash(f.repo.PackKey(m.Packs[0].Name)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored.git")
	if _, err := f.store.Restore(context.Background(), f.repo, m.ID, dir, nil); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("restore from a damaged pack: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed restore left %s behind", dir)
	}
}

func TestSnapshotIDsSortInHistoryOrder(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 34, 56, 789_000_000, time.UTC)
	first, err := archive.NewSnapshotID(now, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, "20261126T123456.789Z-") || !archive.ValidSnapshotID(first) {
		t.Fatalf("id = %s", first)
	}
	// A worker whose clock is behind still sorts after the parent.
	behind, err := archive.NewSnapshotID(now.Add(-time.Hour), first)
	if err != nil {
		t.Fatal(err)
	}
	if behind <= first {
		t.Fatalf("%s sorts before its parent %s", behind, first)
	}
	later, _ := archive.NewSnapshotID(now.Add(time.Second), first)
	if later <= behind {
		t.Fatalf("%s sorts before %s", later, behind)
	}
	for _, bad := range []string{"", "latest", "20261126T123456Z-abc", "../../etc/passwd"} {
		if archive.ValidSnapshotID(bad) {
			t.Errorf("%q accepted as a snapshot id", bad)
		}
	}
}

func TestRepoKeyRejectsPathTricks(t *testing.T) {
	for _, c := range [][2]string{{"", "u"}, {"t", ""}, {"../t", "u"}, {"t", "a/b"}, {"t", ".."}} {
		if _, err := archive.NewRepoKey(c[0], c[1]); err == nil {
			t.Errorf("NewRepoKey(%q, %q) accepted", c[0], c[1])
		}
	}
	k, err := archive.NewRepoKey("t1", "{ABC-1}")
	if err != nil || k.UUID != "abc-1" {
		t.Fatalf("NewRepoKey = %+v, %v", k, err)
	}
}

// A stored manifest whose ref names break git's rules is refused on load, so no bundle header
// or packed-refs line is ever written from it (a newline would forge a header line).
func TestManifestWithBadRefNameIsRejected(t *testing.T) {
	f := newFixture(t)
	f.src.Commit("main", "a", "a\n")
	m := f.backup(domain.TriggerInitial).Manifest
	path := filepath.Join(f.storageDir, filepath.FromSlash(f.repo.ManifestKey(m.ID)))
	original, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	oid := m.Refs["refs/heads/main"]
	for _, bad := range []string{
		"refs/heads/evil\n" + oid + " refs/heads/injected",
		"refs/heads/a..b",
		"refs/heads/has space",
		"refs/heads/x.lock",
		"refs/heads/a@{1}",
	} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			var raw map[string]any
			if err := json.Unmarshal(original, &raw); err != nil {
				t.Fatal(err)
			}
			raw["refs"].(map[string]any)[bad] = oid
			tampered, err := json.Marshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tampered, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := f.store.LoadManifest(ctx, f.repo, m.ID); err == nil || !strings.Contains(err.Error(), "invalid reference name") {
				t.Fatalf("LoadManifest with ref %q: %v, want an invalid reference name error", bad, err)
			}
			if _, _, err := f.store.ExportBundles(ctx, f.repo, m.ID, t.TempDir(), nil); err == nil {
				t.Fatalf("ExportBundles wrote bundles from a manifest with ref %q", bad)
			}
		})
	}
	// HEAD's target is read back into the bundle header too.
	var raw map[string]any
	if err := json.Unmarshal(original, &raw); err != nil {
		t.Fatal(err)
	}
	raw["head"] = "refs/heads/main\nextra"
	tampered, _ := json.Marshal(raw)
	if err := os.WriteFile(path, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.LoadManifest(context.Background(), f.repo, m.ID); err == nil {
		t.Fatal("LoadManifest accepted a HEAD target with a newline")
	}
}
