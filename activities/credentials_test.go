package activities_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// installationStatus is the installation's status in Postgres.
func (e *backupEnv) installationStatus() store.Installation {
	e.t.Helper()
	inst, err := e.store.GetInstallation(context.Background(), e.tenantID, e.instID)
	if err != nil {
		e.t.Fatal(err)
	}
	return inst
}

func (e *backupEnv) setInstallationStatus(status string) {
	e.t.Helper()
	if err := e.store.SetInstallationStatus(context.Background(), e.tenantID, e.instID, status, "test"); err != nil {
		e.t.Fatal(err)
	}
}

// A 403 on one repository's git endpoint (its access taken away) is that repository's failure:
// its backup records Bitbucket's reason, the other repositories are swept and backed up, and
// the installation stays active. A single 401 is survived with one forced refresh; only a 401
// after the refresh (the grant revoked) marks the installation needs_reauth.
func TestForbiddenRepositoryFailsAloneAndOnlyRevocationNeedsReauth(t *testing.T) {
	e := newBackupEnvWith(t, "file://"+t.TempDir()+"?create_dir=true", nil,
		emulator.SeedRepository{Slug: "web", Generate: &emulator.Generate{Commits: 5, Branches: 1}})
	e.setInstallationStatus(domain.InstallationActive)
	if first := e.sweep(); first.Woken != 3 {
		t.Fatalf("first sweep = %+v, want the three never-backed-up repositories woken", first)
	}
	e.waitBackups("api", "empty", "web")

	fault := e.addFault(emulator.FaultRule{Path: "/acme/api.git/*", Kind: "4xx", Status: 403})
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	e.emuJSON("POST", "/_emulator/repositories/acme/web/push", `{"commits":1}`, nil)
	res := e.sweep()
	if res.Skipped != "" || res.Checked != 3 || res.Woken != 2 || res.Unchanged != 1 {
		t.Fatalf("sweep with a 403 on api = %+v, want api and web woken, empty unchanged", res)
	}
	e.waitBackups("api", "web")
	if e.faultFired(fault) < 2 {
		t.Fatalf("the 403 fault fired %d times; the sweep and the backup should both have met it", e.faultFired(fault))
	}
	if inst := e.installationStatus(); inst.Status != domain.InstallationActive {
		t.Fatalf("installation after a 403 on one repository: %s (%s), want active", inst.Status, inst.StatusMessage)
	}
	api := e.repo("api")
	if api.LastBackupStatus != domain.BackupFailed || !strings.Contains(api.LastBackupError, "403") ||
		!strings.Contains(api.LastBackupError, "injected fault") || strings.Contains(api.LastBackupError, "activity error") {
		t.Fatalf("api after the 403: status %s, error %q; want failed with Bitbucket's reason", api.LastBackupStatus, api.LastBackupError)
	}
	if n := len(e.snapshots("api")); n != 1 {
		t.Fatalf("api has %d snapshots, want the first one only", n)
	}
	if s := e.snapshots("web"); len(s) != 2 {
		t.Fatalf("web beside the forbidden api: %d snapshots, want 2", len(s))
	}
	if web := e.repo("web"); web.LastBackupStatus != domain.BackupSucceeded || web.LastBackupError != "" {
		t.Fatalf("web = %s %q", web.LastBackupStatus, web.LastBackupError)
	}

	// The access comes back, but the first git request gets a 401 (say, a token Bitbucket
	// dropped early): one forced refresh, and the backup goes through and clears the error.
	e.emuJSON("DELETE", "/_emulator/faults", "", nil)
	once := e.addFault(emulator.FaultRule{Path: "/acme/api.git/*", Kind: "4xx", Status: 401, Count: 1})
	e.backup("api")
	if e.faultFired(once) != 1 {
		t.Fatal("the one-off 401 did not fire")
	}
	if inst := e.installationStatus(); inst.Status != domain.InstallationActive {
		t.Fatalf("installation after one 401 survived by a refresh: %s (%s)", inst.Status, inst.StatusMessage)
	}
	if api := e.repo("api"); api.LastBackupStatus != domain.BackupSucceeded || api.LastBackupError != "" || len(e.snapshots("api")) != 2 {
		t.Fatalf("api after the refresh: %s %q, %d snapshots", api.LastBackupStatus, api.LastBackupError, len(e.snapshots("api")))
	}

	// Revoked for real: the 401 stays after the refresh, and the installation needs a reconnect.
	e.emuJSON("POST", "/_emulator/users/alice/revoke-tokens", "", nil)
	e.emuJSON("POST", "/_emulator/repositories/acme/web/push", `{"commits":1}`, nil)
	e.backup("web")
	if inst := e.installationStatus(); inst.Status != domain.InstallationNeedsReauth {
		t.Fatalf("installation after revocation: %s (%s), want needs_reauth", inst.Status, inst.StatusMessage)
	}
	if skipped := e.sweep(); !strings.Contains(skipped.Skipped, "needs a reconnect") {
		t.Fatalf("sweep after revocation = %+v, want skipped", skipped)
	}
	replayAllOnQueue(t, e.temporal, e.settings.TaskQueue)
}

// Uninstalling on one worker stops the others: a second worker process (its own client cache,
// its own host queue) that still caches the installation's client neither runs a backup routed
// to it after the uninstall nor writes the dropped credentials back with a token refresh.
func TestUninstallStopsOtherWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	e.setInstallationStatus(domain.InstallationActive)
	// Worker B: another process, with its own client cache and host queue; it only runs backups.
	b := e.secondWorker()
	r := e.repos["api"]
	if err := e.store.SetMirrorHost(ctx, e.tenantID, r.ID, b.HostQueue); err != nil {
		t.Fatal(err)
	}
	e.backup("api")
	if n := len(e.snapshots("api")); n != 1 || e.repo("api").MirrorHost != b.HostQueue {
		t.Fatalf("first backup on worker B: %d snapshots, mirror host %q", n, e.repo("api").MirrorHost)
	}
	cached, err := b.Clients.Client(ctx, e.tenantID, e.instID)
	if err != nil {
		t.Fatal(err)
	}

	// Uninstall, on worker A (B does not poll the shared queue, so its cache stays as it is).
	un, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.UninstallWorkflowID(e.instID.String()), TaskQueue: e.settings.TaskQueue},
		workflows.UninstallInstallationWorkflowName, e.ref())
	if err != nil {
		t.Fatal(err)
	}
	if err := un.Get(ctx, nil); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	e.assertCredentialsDropped("after the uninstall")

	// A request queued for the removed installation (a late webhook, a sweep in flight) goes to
	// worker B, the mirror's host: nothing runs and nothing comes back.
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	e.backup("api")
	if n := len(e.snapshots("api")); n != 1 {
		t.Fatalf("a backup of the removed installation ran on worker B: %d snapshots", n)
	}
	e.assertCredentialsDropped("after a backup request routed to worker B")
	if inst := e.installationStatus(); inst.Status != domain.InstallationRemoved {
		t.Fatalf("installation = %s, want removed", inst.Status)
	}

	// The client B cached before the uninstall refreshes its token (Bitbucket rejected the old
	// one): the store refuses to write it back, and B hands out no client for it any more.
	e.addFault(emulator.FaultRule{Path: "/2.0/user", Kind: "4xx", Status: 401, Count: 1})
	if _, err := cached.CurrentUser(ctx); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("refresh through B's cached client: %v, want the store to refuse it", err)
	}
	e.assertCredentialsDropped("after a token refresh on worker B")
	if _, err := b.Clients.Client(ctx, e.tenantID, e.instID); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("worker B's client after the uninstall: %v, want ErrInstallationRemoved", err)
	}
	if err := e.store.SetInstallationStatus(ctx, e.tenantID, e.instID, domain.InstallationNeedsReauth, "late"); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("a late status write on a removed installation: %v, want ErrInstallationRemoved", err)
	}
	replayAllOnQueue(t, e.temporal, e.settings.TaskQueue)
}

// secondWorker starts another worker like a second `gitsec worker` process would have: the
// same Postgres, Temporal, storage and emulator, but its own client cache, mirror directory and
// host queue. It polls only that host queue, so the test knows which worker runs what.
func (e *backupEnv) secondWorker() *activities.Backups {
	e.t.Helper()
	a, f := e.acts.Backups, e.acts.Backups.Clients
	b := &activities.Backups{
		Store: a.Store, Logger: a.Logger, Archive: a.Archive, MirrorDir: e.t.TempDir(),
		HostQueue: a.HostQueue + "-b", Temporal: a.Temporal, Queue: a.Queue,
		Clients: &providerclient.Factory{Store: f.Store, Box: f.Box, OAuth: f.OAuth, APIURL: f.APIURL, GitURL: f.GitURL,
			RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000), Logger: f.Logger},
	}
	w := worker.NewHost(worker.Options{Client: e.temporal, HostQueue: b.HostQueue, Activities: worker.Activities{Backups: b}, Logger: b.Logger, MaxConcurrentBackups: 2})
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Stop)
	return b
}

// assertCredentialsDropped checks in Postgres itself that the installation holds no tokens.
func (e *backupEnv) assertCredentialsDropped(when string) {
	e.t.Helper()
	var dropped bool
	if err := e.sqlConn().QueryRow(context.Background(), `SELECT credentials_encrypted IS NULL FROM installations WHERE id = $1`, e.instID).Scan(&dropped); err != nil {
		e.t.Fatal(err)
	}
	if !dropped {
		e.t.Fatalf("%s: the removed installation holds credentials again", when)
	}
}
