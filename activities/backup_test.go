package activities_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true, S3: true}))
}

// backupEnv runs backups for real: the emulator's git server, Postgres, the Temporal dev server
// with a shared and a host worker, and object storage (file:// or versitygw's S3).
type backupEnv struct {
	t        *testing.T
	emu      *emulator.Server
	store    *store.Store
	dbURL    string
	archive  *archive.Store
	temporal client.Client
	settings backupqueue.Settings
	tenantID uuid.UUID
	instID   uuid.UUID
	mirrors  string
	repos    map[string]store.Repository // by slug
	token    string                      // alice's access token for the emulator's REST API
	acts     worker.Activities           // what the workers run
}

// newBackupEnv seeds acme/api and acme/empty, plus any extra repositories of acme (all of them
// recorded in the store, by slug in e.repos).
func newBackupEnv(t *testing.T, storageURL string, extra ...emulator.SeedRepository) *backupEnv {
	t.Helper()
	return newBackupEnvWith(t, storageURL, nil, extra...)
}

// newBackupEnvWith is newBackupEnv with configure adjusting the activities before the workers
// start (their settings must not change while the workers run).
func newBackupEnvWith(t *testing.T, storageURL string, configure func(*worker.Activities), extra ...emulator.SeedRepository) *backupEnv {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := &backupEnv{t: t, mirrors: t.TempDir(), repos: map[string]store.Repository{}}
	var err error
	e.emu, err = emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: log,
		Seed: &emulator.Seed{
			Users:     []emulator.SeedUser{{Username: "alice"}, {Username: "bob"}, {Username: "carol"}},
			Consumers: []emulator.Consumer{{Key: "backup-test", Secret: "backup-test-secret", CallbackURL: "http://127.0.0.1:1/cb"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Members: []string{"bob", "carol"}, Repositories: append([]emulator.SeedRepository{
				{Slug: "api", Generate: &emulator.Generate{Commits: 20, Branches: 3, Tags: 2}},
				{Slug: "empty"},
			}, extra...)}},
		},
	})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { e.emu.Close() })

	e.dbURL = testenv.Postgres(t)
	if e.store, err = store.Open(ctx, e.dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	if _, err := e.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	keyURL, _ := secretbox.NewLocalKeyURL()
	box, err := secretbox.Open(ctx, keyURL)
	if err != nil {
		t.Fatal(err)
	}
	if e.archive, err = archive.Open(ctx, storageURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.archive.Close() })

	// An installation of alice with a token issued by the emulator.
	ten, err := e.store.CreateTenant(ctx, "acme-corp")
	if err != nil {
		t.Fatal(err)
	}
	e.tenantID = ten.ID
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int    `json:"expires_in"`
	}
	e.emuJSON("POST", "/_emulator/tokens", `{"user":"alice","consumer":"backup-test"}`, &tok)
	e.token = tok.AccessToken
	sealed, err := providerclient.SealToken(ctx, box, &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if e.instID, err = e.store.CreateInstallationWithCredentials(ctx, ten.ID, "bitbucket", sealed); err != nil {
		t.Fatal(err)
	}
	wsID, err := e.store.UpsertWorkspace(ctx, store.Workspace{TenantID: ten.ID, InstallationID: e.instID, ProviderUUID: "{ws}", Slug: "acme", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	slugs := []string{"api", "empty"}
	for _, r := range extra {
		slugs = append(slugs, r.Slug)
	}
	for _, slug := range slugs {
		var repo struct {
			UUID     string `json:"uuid"`
			FullName string `json:"full_name"`
		}
		e.emuJSON("GET", "/2.0/repositories/acme/"+slug, "", &repo)
		id, _, err := e.store.UpsertRepository(ctx, store.Repository{TenantID: ten.ID, InstallationID: e.instID, WorkspaceID: &wsID, ProviderUUID: repo.UUID, FullName: repo.FullName})
		if err != nil {
			t.Fatal(err)
		}
		if e.repos[slug], err = e.store.GetRepository(ctx, ten.ID, id); err != nil {
			t.Fatal(err)
		}
	}

	tenv := testenv.Temporal(t)
	if e.temporal, err = client.DialContext(ctx, client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.temporal.Close)
	e.settings = backupqueue.Settings{TaskQueue: tenv.TaskQueue, QuietPeriod: 200 * time.Millisecond, MaxWait: 2 * time.Second, IdleTimeout: time.Second}
	oauth := bitbucket.OAuthConfig("backup-test", "backup-test-secret", e.emu.URL()+"/site/oauth2", "http://127.0.0.1:1/cb")
	clients := &providerclient.Factory{Store: e.store, Box: box, OAuth: oauth, APIURL: e.emu.URL(), GitURL: e.emu.URL(),
		RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000), Logger: log}
	acts := &worker.Activities{
		Onboarding: &activities.Onboarding{Store: e.store, Clients: clients, Box: box, Logger: log},
		Backups: &activities.Backups{
			Store: e.store, Clients: clients, Archive: e.archive, MirrorDir: e.mirrors,
			HostQueue: tenv.TaskQueue + "-host", Temporal: e.temporal, Queue: e.settings, Logger: log,
		},
		Sweeps:       &activities.Sweeps{Store: e.store, Clients: clients, Archive: e.archive, Temporal: e.temporal, Queue: e.settings, Logger: log},
		Housekeeping: &activities.Housekeeping{Store: e.store, Logger: log},
		Uninstall:    &activities.Uninstall{Store: e.store, Clients: clients},
		Exports:      &activities.Exports{Store: e.store, Clients: clients, Archive: e.archive, Logger: log},
		Drills:       &activities.Drills{Store: e.store, Archive: e.archive, Temporal: e.temporal, TaskQueue: tenv.TaskQueue, Logger: log},
		Restores:     &activities.Restores{Store: e.store, Clients: clients, Archive: e.archive, ScratchDir: t.TempDir(), Logger: log},
		Retention: &activities.Retention{Store: e.store, Archive: e.archive, Temporal: e.temporal, Logger: log,
			Settings: activities.RetentionSettings{TaskQueue: tenv.TaskQueue}},
	}
	if configure != nil {
		configure(acts)
	}
	e.acts = *acts
	opts := worker.Options{Client: e.temporal, TaskQueue: tenv.TaskQueue, HostQueue: acts.Backups.HostQueue, Activities: *acts, Logger: log, MaxConcurrentBackups: 2}
	for _, w := range []interface {
		Start() error
		Stop()
	}{worker.New(opts), worker.NewHost(opts)} {
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
	}
	return e
}

func (e *backupEnv) emuJSON(method, path, body string, out any) {
	e.t.Helper()
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, e.emu.URL()+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if e.token != "" && strings.HasPrefix(path, "/2.0/") {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e.t.Fatalf("%s %s = %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			e.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// backup requests a backup and waits until the repository's workflow went idle and ended.
func (e *backupEnv) backup(slug string, reqs ...workflows.BackupRequest) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := e.repos[slug]
	if len(reqs) == 0 {
		reqs = []workflows.BackupRequest{{Trigger: domain.TriggerManual}}
	}
	target := backupqueue.Target(r)
	var id string
	for _, req := range reqs {
		var err error
		if id, err = backupqueue.Request(ctx, e.temporal, e.settings, target, req); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.temporal.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		e.t.Fatalf("backup workflow of %s: %v", slug, err)
	}
}

func (e *backupEnv) snapshots(slug string) []store.Snapshot {
	e.t.Helper()
	s, err := e.store.ListSnapshots(context.Background(), e.tenantID, e.repos[slug].ID, "", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *backupEnv) repo(slug string) store.Repository {
	e.t.Helper()
	r, err := e.store.GetRepository(context.Background(), e.tenantID, e.repos[slug].ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// restoreAndVerify restores the snapshot with the archive and checks it against the manifest
// with stock git: for-each-ref equals the manifest's refs and fsck --strict is clean.
func (e *backupEnv) restoreAndVerify(slug, snapshotID string) *archive.Manifest {
	e.t.Helper()
	key, err := archive.NewRepoKey(e.tenantID.String(), e.repos[slug].ProviderUUID)
	if err != nil {
		e.t.Fatal(err)
	}
	dir := filepath.Join(e.t.TempDir(), "restored.git")
	m, err := e.archive.Restore(context.Background(), key, snapshotID, dir, nil)
	if err != nil {
		e.t.Fatalf("restore %s: %v", snapshotID, err)
	}
	out, err := exec.Command("git", "-C", dir, "for-each-ref", "--format=%(refname) %(objectname)").Output()
	if err != nil {
		e.t.Fatal(err)
	}
	var got, want []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	for name, oid := range m.Refs {
		want = append(want, name+" "+oid)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		e.t.Fatalf("restored refs differ from the manifest:\n got %v\nwant %v", got, want)
	}
	if out, err := exec.Command("git", "-C", dir, "fsck", "--strict").CombinedOutput(); err != nil {
		e.t.Fatalf("fsck --strict: %v\n%s", err, out)
	}
	e.verifyBundleChain(key, snapshotID, want)
	return m
}

// verifyBundleChain restores the snapshot with stock git alone, as docs/backup-format.md tells
// a user without GitSec: clone the first bundle, fetch the others in lexical order.
func (e *backupEnv) verifyBundleChain(key archive.RepoKey, snapshotID string, wantRefs []string) {
	e.t.Helper()
	dir := e.t.TempDir()
	bundles, _, err := e.archive.ExportBundles(context.Background(), key, snapshotID, filepath.Join(dir, "bundles"), nil)
	if err != nil {
		e.t.Fatalf("export bundles of %s: %v", snapshotID, err)
	}
	if len(bundles) == 0 {
		if len(wantRefs) != 0 {
			e.t.Fatalf("no bundles for a snapshot with %d refs", len(wantRefs))
		}
		return
	}
	repo := filepath.Join(dir, "repo.git")
	run := func(args ...string) string {
		out, err := exec.Command("git", args...).CombinedOutput()
		if err != nil {
			e.t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("clone", "--quiet", "--mirror", bundles[0], repo)
	for _, b := range bundles[1:] {
		run("-C", repo, "fetch", "--quiet", "--prune", b, "+refs/*:refs/*")
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(run("-C", repo, "for-each-ref", "--format=%(refname) %(objectname)")), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(wantRefs, "\n") {
		e.t.Fatalf("bundle chain restores refs\n%v\nwant\n%v", got, wantRefs)
	}
	run("-C", repo, "fsck", "--strict")
}

func testBackupLifecycle(t *testing.T, storageURL string) {
	e := newBackupEnv(t, storageURL)

	// Initial backup: a full snapshot, restorable with stock git.
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	snaps := e.snapshots("api")
	if len(snaps) != 1 || snaps[0].Trigger != "initial" || snaps[0].RefsCount < 6 || snaps[0].PacksCount != 1 {
		t.Fatalf("initial snapshots = %+v", snaps)
	}
	first := e.restoreAndVerify("api", snaps[0].ID)
	if r := e.repo("api"); r.LastBackupStatus != "succeeded" || r.LastSnapshotID == nil || *r.LastSnapshotID != snaps[0].ID {
		t.Fatalf("repository after backup = %+v", r)
	}

	// Unchanged: nothing written but the check record.
	before := e.repo("api").LastCheckedAt
	e.backup("api")
	if n := len(e.snapshots("api")); n != 1 {
		t.Fatalf("unchanged repository produced %d snapshots", n)
	}
	if after := e.repo("api").LastCheckedAt; after == nil || before == nil || !after.After(*before) {
		t.Fatalf("last_checked_at not advanced: %v -> %v", before, after)
	}

	// One pushed commit: one small pack and a manifest.
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerWebhook, DeliveryID: "d-1"})
	snaps = e.snapshots("api")
	if len(snaps) != 2 {
		t.Fatalf("after a push: %d snapshots, want 2", len(snaps))
	}
	inc := snaps[0]
	if inc.Trigger != "webhook" || inc.PacksCount != 2 || inc.ParentID == nil || *inc.ParentID != first.ID {
		t.Fatalf("incremental snapshot = %+v", inc)
	}
	if inc.BytesUploaded <= 0 || inc.BytesUploaded > 20_000 {
		t.Fatalf("incremental upload = %d bytes, want one small pack and a manifest", inc.BytesUploaded)
	}
	m := e.restoreAndVerify("api", inc.ID)
	if m.Trigger.DeliveryID != "d-1" {
		t.Fatalf("manifest trigger = %+v", m.Trigger)
	}

	// Force-push and a deleted branch are mirrored exactly; the mirror is rebuilt from storage
	// when the worker lost it (no full re-clone: only the new pack is uploaded).
	if err := os.RemoveAll(e.mirrors); err != nil {
		t.Fatal(err)
	}
	e.emuJSON("POST", "/_emulator/repositories/acme/api/force-push", `{"branch":"main","back":2}`, nil)
	var branches struct {
		Values []struct {
			Name string `json:"name"`
		} `json:"values"`
	}
	e.emuJSON("GET", "/2.0/repositories/acme/api/refs/branches", "", &branches)
	deleted := ""
	for _, b := range branches.Values {
		if b.Name != "main" {
			deleted = b.Name
			break
		}
	}
	e.emuJSON("DELETE", "/_emulator/repositories/acme/api/refs/branches/"+deleted, "", nil)
	e.backup("api")
	snaps = e.snapshots("api")
	if len(snaps) != 3 {
		t.Fatalf("after force-push: %d snapshots, want 3", len(snaps))
	}
	m = e.restoreAndVerify("api", snaps[0].ID)
	if _, ok := m.Refs["refs/heads/"+deleted]; ok {
		t.Fatalf("deleted branch %s is still in the snapshot", deleted)
	}

	// Empty repository: a snapshot with no refs.
	e.backup("empty", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	if s := e.snapshots("empty"); len(s) != 1 || s[0].RefsCount != 0 {
		t.Fatalf("empty repository snapshots = %+v", s)
	}

	// Deleted upstream: the repository is marked, its backups are kept.
	e.emuJSON("DELETE", "/_emulator/repositories/acme/api", "", nil)
	e.backup("api")
	if r := e.repo("api"); r.Status != "deleted_upstream" {
		t.Fatalf("repository status = %s, want deleted_upstream", r.Status)
	}
	if n := len(e.snapshots("api")); n != 3 {
		t.Fatalf("snapshots after upstream deletion = %d, want 3 kept", n)
	}
	replayAllOnQueue(t, e.temporal, e.settings.TaskQueue)
}

func TestBackupLifecycleOnFileStorage(t *testing.T) {
	testBackupLifecycle(t, "file://"+t.TempDir()+"?create_dir=true")
}

func TestBackupLifecycleOnS3(t *testing.T) {
	testBackupLifecycle(t, testenv.S3(t))
}

// Requests that arrive together are coalesced: one run, one snapshot.
func TestConcurrentRequestsCoalesce(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	e.backup("api",
		workflows.BackupRequest{Trigger: domain.TriggerSchedule},
		workflows.BackupRequest{Trigger: domain.TriggerWebhook, DeliveryID: "d-9"},
		workflows.BackupRequest{Trigger: domain.TriggerManual})
	snaps := e.snapshots("api")
	if len(snaps) != 1 || snaps[0].Trigger != "webhook" {
		t.Fatalf("snapshots = %+v, want exactly one (webhook wins the coalesced trigger)", snaps)
	}
}

// TestBackupMovesToAnotherWorkerWhenTheMirrorHostIsGone: the worker that kept the mirror does
// not answer; after the host timeout another worker takes the backup, rebuilds the mirror from
// storage (no re-clone: only the new pack is uploaded) and becomes the mirror's host.
func TestBackupMovesToAnotherWorkerWhenTheMirrorHostIsGone(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	ctx := context.Background()
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	r := e.repo("api")
	if r.MirrorHost != e.acts.Backups.HostQueue {
		t.Fatalf("mirror host = %q, want %q", r.MirrorHost, e.acts.Backups.HostQueue)
	}

	// The mirror's worker is gone (nobody polls its queue) and so is its disk.
	if err := e.store.SetMirrorHost(ctx, e.tenantID, r.ID, "gitsec-host-gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(e.mirrors); err != nil {
		t.Fatal(err)
	}
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	e.settings.HostTimeout = 2 * time.Second
	e.backup("api")

	snaps := e.snapshots("api")
	if len(snaps) != 2 || snaps[0].PacksCount != 2 || snaps[0].BytesUploaded > 20_000 {
		t.Fatalf("snapshots after failover = %+v, want an incremental second snapshot", snaps)
	}
	if r := e.repo("api"); r.MirrorHost != e.acts.Backups.HostQueue {
		t.Fatalf("mirror host after failover = %q, want %q", r.MirrorHost, e.acts.Backups.HostQueue)
	}
	e.restoreAndVerify("api", snaps[0].ID)
}

// replayAllOnQueue replays every workflow execution the test ran against the current workflow
// code: a change that breaks determinism fails here, before it breaks executions in flight.
func replayAllOnQueue(t *testing.T, c client.Client, taskQueue string) {
	t.Helper()
	n, err := worker.ReplayTaskQueue(context.Background(), c, taskQueue)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no workflow executions found on task queue %s to replay", taskQueue)
	}
}
