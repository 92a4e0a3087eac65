package retention_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
	"github.com/gitsec/gitsec/internal/retention"
)

// history is a repository backed up once a day at noon from 2026-01-01 on, through the real
// mirror, fetch and staging code, with a chain bound of 8 packs.
type history struct {
	t      *testing.T
	src    *gitmirrortest.Source
	store  *archive.Store
	repo   archive.RepoKey
	mirror *gitmirror.Mirror
	ids    []string // snapshot id of each day
	// introduced is the pack each day's snapshot introduced.
	introduced map[int]string
}

var day0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func newHistory(t *testing.T) *history {
	t.Helper()
	url := "file://" + t.TempDir()
	st, err := archive.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, _ := archive.NewRepoKey("tenant-1", "6a1b2c3d-0000-4000-8000-000000000001")
	m, err := gitmirror.Open(filepath.Join(t.TempDir(), "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &history{t: t, src: gitmirrortest.NewSource(t), store: st, repo: repo, mirror: m, introduced: map[int]string{}}
}

// backup fetches and snapshots as of day d.
func (h *history) backup(ctx context.Context, d int) *archive.Manifest {
	h.t.Helper()
	if _, err := h.mirror.Fetch(ctx, h.src.URL, nil, nil); err != nil {
		h.t.Fatalf("fetch day %d: %v", d, err)
	}
	res, err := h.store.SnapshotMirror(ctx, h.mirror, archive.SnapshotRequest{
		Tenant:      h.repo.Tenant,
		Repository:  archive.Repository{Provider: "bitbucket", UUID: h.repo.UUID, FullName: "acme/widgets"},
		Trigger:     archive.Trigger{Kind: domain.TriggerSchedule},
		Now:         day0.AddDate(0, 0, d),
		Consolidate: archive.ConsolidatePolicy{MaxPacks: 8},
	})
	if err != nil {
		h.t.Fatalf("snapshot day %d: %v", d, err)
	}
	return res.Manifest
}

// fortyDays: one commit a day on main (an active repository), a feature branch that lives from
// day 10 to day 19 and is deleted on day 20, and a force-push of main on day 27.
func (h *history) fortyDays(ctx context.Context) {
	h.t.Helper()
	for d := range 40 {
		switch {
		case d == 27:
			parent := strings.TrimSpace(h.src.Git("rev-parse", "main~3"))
			h.src.CommitOn(parent, "refs/heads/main", "rewritten.txt", "history rewritten on day 27\n")
		default:
			h.src.Commit("main", fmt.Sprintf("day-%02d.txt", d), strings.Repeat(fmt.Sprintf("day %d line\n", d), 200+d))
		}
		if d >= 10 && d < 20 {
			h.src.Commit("feature", "feature.txt", fmt.Sprintf("feature day %d\n", d))
		}
		if d == 20 {
			h.src.Git("update-ref", "-d", "refs/heads/feature")
		}
		m := h.backup(ctx, d)
		if len(h.ids) > 0 && m.ID == h.ids[len(h.ids)-1] {
			h.t.Fatalf("day %d made no snapshot", d)
		}
		h.ids = append(h.ids, m.ID)
		for _, p := range m.Packs {
			if p.Snapshot == m.ID {
				h.introduced[d] = p.Name
			}
		}
	}
}

func (h *history) days(ids []string) []int {
	var out []int
	for _, id := range ids {
		out = append(out, slices.Index(h.ids, id))
	}
	slices.Sort(out)
	return out
}

func TestFortyDailySnapshotsUnderGFSKeepExactlyTheExpectedSetAndStillRestore(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t)
	h.fortyDays(ctx)

	// The chain bound of 8 packs consolidates on days 8, 16, 24 and 32.
	for d, id := range h.ids {
		m, err := h.store.LoadManifest(ctx, h.repo, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := d > 0 && d%8 == 0; m.Consolidated != want {
			t.Errorf("day %d: consolidated = %t, want %t (%d packs)", d, m.Consolidated, want, len(m.Packs))
		}
		if want := d%8 + 1; len(m.Packs) != want {
			t.Errorf("day %d lists %d packs, want %d", d, len(m.Packs), want)
		}
		if (d == 27) != slices.Equal(m.Rewritten, []string{"refs/heads/main"}) {
			t.Errorf("day %d: rewritten = %v", d, m.Rewritten)
		}
	}

	p := retention.Policy{KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 2, KeepBeforeDestructive: true}
	plan, err := retention.PlanRepository(ctx, h.store, h.repo, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Daily: days 33-39. Weekly (ISO weeks): 39, 38, 31, 24. Monthly: 39 (February), 30
	// (January). Last before a destructive change: 19 (feature deleted on 20), 26 (main
	// force-pushed on 27). The snapshots that introduced the packs those list: 16-18 (19 lists
	// the pack consolidated on 16 and the packs of 17 and 18), 24-29 (26, 30 and 31 list 24's
	// consolidated pack and what followed) and 32 (33-39 list 32's).
	want := []int{16, 17, 18, 19}
	for d := 24; d < 40; d++ {
		want = append(want, d)
	}
	if got := h.days(plan.Keep); !slices.Equal(got, want) {
		t.Fatalf("kept days %v, want %v", got, want)
	}
	if got := h.days(plan.Forget); len(got) != 40-len(want) {
		t.Fatalf("forgot days %v", got)
	}

	before, err := h.store.RepositoryBytes(ctx, h.repo.Tenant, h.repo.UUID)
	if err != nil {
		t.Fatal(err)
	}
	forgot, err := retention.Forget(ctx, h.store, h.repo, plan, nil)
	if err != nil || len(forgot.Forgotten) != len(plan.Forget) {
		t.Fatalf("forget: %v (%d of %d)", err, len(forgot.Forgotten), len(plan.Forget))
	}
	swept, err := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: day0.AddDate(0, 0, 40)})
	if err != nil {
		t.Fatal(err)
	}
	after, err := h.store.RepositoryBytes(ctx, h.repo.Tenant, h.repo.UUID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stored %d bytes before, %d after: %d freed (%d packs/idx deleted), plan said %d", before, after, before-after,
		len(swept.Deleted), plan.BytesFreed)
	if before-after != plan.BytesFreed || swept.BytesFreed == 0 {
		t.Fatalf("stored bytes dropped by %d, the plan said %d (sweep freed %d)", before-after, plan.BytesFreed, swept.BytesFreed)
	}
	// Packs only forgotten snapshots listed are gone: days 1-15's and 20-23's (and day 0's).
	for _, d := range []int{0, 3, 8, 15, 20, 23} {
		m := mustPackOf(t, h, d)
		if _, err := h.store.ManifestBytes(ctx, h.repo, h.ids[d]); err == nil {
			t.Errorf("day %d's manifest is still there", d)
		}
		if exists(t, h, h.repo.PackKey(m)) {
			t.Errorf("pack %s of forgotten day %d is still stored", m, d)
		}
	}

	for _, id := range plan.Keep {
		restoreAndCheck(t, h, id)
		checkBundleChain(t, h, id)
	}

	// A second pass finds nothing: the run is repeatable.
	again, err := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: day0.AddDate(0, 0, 41)})
	if err != nil || len(again.Deleted)+len(again.Pending) != 0 {
		t.Fatalf("second sweep: %v, deleted %d, pending %d", err, len(again.Deleted), len(again.Pending))
	}
}

func mustPackOf(t *testing.T, h *history, d int) string {
	t.Helper()
	name, ok := h.introduced[d]
	if !ok {
		t.Fatalf("no pack recorded for day %d", d)
	}
	return name
}

func exists(t *testing.T, h *history, key string) bool {
	t.Helper()
	objs, err := h.store.ListPrunable(context.Background(), h.repo)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(objs, func(o archive.StoredObject) bool { return o.Key == key })
}

func restoreAndCheck(t *testing.T, h *history, id string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored.git")
	m, err := h.store.Restore(context.Background(), h.repo, id, dir, nil)
	if err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	if got := gitmirrortest.ForEachRef(t, dir); !got.Equal(m.Refs) {
		t.Fatalf("restored %s: for-each-ref differs from the manifest:\n got %v\nwant %v", id, got, m.Refs)
	}
	gitmirrortest.Git(t, dir, "fsck", "--strict", "--no-dangling")
}

func checkBundleChain(t *testing.T, h *history, id string) {
	t.Helper()
	dir := t.TempDir()
	paths, m, err := h.store.ExportBundles(context.Background(), h.repo, id, filepath.Join(dir, "bundles"), nil)
	if err != nil {
		t.Fatalf("export bundles of %s: %v", id, err)
	}
	repo := filepath.Join(dir, "restored.git")
	gitmirrortest.Git(t, dir, "clone", "--quiet", "--mirror", paths[0], repo)
	for _, p := range paths[1:] {
		gitmirrortest.Git(t, repo, "fetch", "--quiet", "--prune", p, "+refs/*:refs/*")
	}
	if got := gitmirrortest.ForEachRef(t, repo); !got.Equal(m.Refs) {
		t.Fatalf("bundles of %s: refs differ from the manifest:\n got %v\nwant %v", id, got, m.Refs)
	}
	gitmirrortest.Git(t, repo, "fsck", "--strict", "--no-dangling")
}

// A backup that commits while retention runs stays restorable: with a grace period the sweep
// only deletes what an earlier pass already found unreferenced, and a backup's pack is
// referenced by its draft and then its manifest long before that.
func TestBackupCommittedDuringRetentionStaysRestorable(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t)
	for d := range 10 {
		h.src.Commit("main", fmt.Sprintf("day-%02d.txt", d), fmt.Sprintf("day %d\n", d))
		h.ids = append(h.ids, h.backup(ctx, d).ID)
	}
	marks := map[string]time.Time{}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan error, 1)
	passes, deleted := 0, 0
	go func() {
		// Retention passes back to back with a grace of 300 ms (hours in production): far
		// longer than a backup here takes from uploading a pack to writing its draft.
		p := retention.Policy{KeepLast: 2}
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			plan, err := retention.PlanRepository(ctx, h.store, h.repo, p, nil)
			if err != nil {
				done <- err
				return
			}
			if _, err := retention.Forget(ctx, h.store, h.repo, plan, nil); err != nil {
				done <- err
				return
			}
			mu.Lock()
			res, err := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: time.Now(), Grace: 300 * time.Millisecond, Marked: marks})
			marks = res.Marked
			passes++
			deleted += len(res.Deleted)
			mu.Unlock()
			if err != nil {
				done <- err
				return
			}
		}
	}()
	var during []string
	for d := 10; d < 25; d++ {
		h.src.Commit("main", fmt.Sprintf("day-%02d.txt", d), fmt.Sprintf("day %d\n", d))
		during = append(during, h.backup(ctx, d).ID)
		// Room for passes to find the packs the consolidations (days 16 and 24) orphaned and
		// delete them after the grace, while later backups run.
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("retention pass: %v", err)
	}
	mu.Lock()
	t.Logf("%d retention passes deleted %d objects during 15 backups", passes, deleted)
	if deleted == 0 {
		t.Fatal("no retention pass deleted anything: the test did not race deletions against backups")
	}
	mu.Unlock()
	latest := during[len(during)-1]
	restoreAndCheck(t, h, latest)
	checkBundleChain(t, h, latest)
}

// A retention run killed midway (after some manifests, or after some deletes) is finished by
// the next one, and nothing a kept snapshot needs is deleted on the way.
func TestRetentionRunKilledMidwayIsFinishedByTheNextOne(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t)
	for d := range 20 {
		h.src.Commit("main", fmt.Sprintf("day-%02d.txt", d), strings.Repeat(fmt.Sprintf("day %d\n", d), 50))
		h.ids = append(h.ids, h.backup(ctx, d).ID)
	}
	p := retention.Policy{KeepLast: 3}
	plan, err := retention.PlanRepository(ctx, h.store, h.repo, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	killed := fmt.Errorf("worker killed")
	n := 0
	_, err = retention.Forget(ctx, h.store, h.repo, plan, func(string) error {
		if n++; n > 4 {
			return killed
		}
		return nil
	})
	if err != killed {
		t.Fatalf("forget = %v, want the kill", err)
	}
	// The rerun plans again from what is left and forgets the rest; its sweep dies after two
	// deletes, and a third run finishes.
	plan2, err := retention.PlanRepository(ctx, h.store, h.repo, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan2.Keep, plan.Keep) || len(plan2.Forget) != len(plan.Forget)-4 {
		t.Fatalf("rerun plan keeps %v forgets %d; first plan kept %v forgot %d", plan2.Keep, len(plan2.Forget), plan.Keep, len(plan.Forget))
	}
	if _, err := retention.Forget(ctx, h.store, h.repo, plan2, nil); err != nil {
		t.Fatal(err)
	}
	deletes := 0
	res, err := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: time.Now(), BeforeDelete: func(archive.StoredObject) error {
		if deletes++; deletes > 2 {
			return killed
		}
		return nil
	}})
	if err != killed || len(res.Deleted) != 2 {
		t.Fatalf("sweep = %v after %d deletes, want the kill after 2", err, len(res.Deleted))
	}
	final, err := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: time.Now(), Marked: res.Marked})
	if err != nil || len(final.Deleted) == 0 {
		t.Fatalf("final sweep: %v, deleted %d", err, len(final.Deleted))
	}
	stored, err := h.store.ListSnapshots(ctx, h.repo)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(stored)
	want := slices.Clone(plan.Keep)
	slices.Sort(want)
	if !slices.Equal(stored, want) {
		t.Fatalf("snapshots left %v, want %v", stored, want)
	}
	for _, id := range stored {
		restoreAndCheck(t, h, id)
		checkBundleChain(t, h, id)
	}
	if again, _ := retention.Sweep(ctx, h.store, h.repo, retention.SweepOptions{Now: time.Now()}); len(again.Deleted) != 0 {
		t.Fatalf("a further sweep deleted %d objects", len(again.Deleted))
	}
}
