package activities_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/store"
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
	e.setInstallationStatus(store.InstallationActive)
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
	if inst := e.installationStatus(); inst.Status != store.InstallationActive {
		t.Fatalf("installation after a 403 on one repository: %s (%s), want active", inst.Status, inst.StatusMessage)
	}
	api := e.repo("api")
	if api.LastBackupStatus != store.BackupFailed || !strings.Contains(api.LastBackupError, "403") ||
		!strings.Contains(api.LastBackupError, "injected fault") || strings.Contains(api.LastBackupError, "activity error") {
		t.Fatalf("api after the 403: status %s, error %q; want failed with Bitbucket's reason", api.LastBackupStatus, api.LastBackupError)
	}
	if n := len(e.snapshots("api")); n != 1 {
		t.Fatalf("api has %d snapshots, want the first one only", n)
	}
	if s := e.snapshots("web"); len(s) != 2 {
		t.Fatalf("web beside the forbidden api: %d snapshots, want 2", len(s))
	}
	if web := e.repo("web"); web.LastBackupStatus != store.BackupSucceeded || web.LastBackupError != "" {
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
	if inst := e.installationStatus(); inst.Status != store.InstallationActive {
		t.Fatalf("installation after one 401 survived by a refresh: %s (%s)", inst.Status, inst.StatusMessage)
	}
	if api := e.repo("api"); api.LastBackupStatus != store.BackupSucceeded || api.LastBackupError != "" || len(e.snapshots("api")) != 2 {
		t.Fatalf("api after the refresh: %s %q, %d snapshots", api.LastBackupStatus, api.LastBackupError, len(e.snapshots("api")))
	}

	// Revoked for real: the 401 stays after the refresh, and the installation needs a reconnect.
	e.emuJSON("POST", "/_emulator/users/alice/revoke-tokens", "", nil)
	e.emuJSON("POST", "/_emulator/repositories/acme/web/push", `{"commits":1}`, nil)
	e.backup("web")
	if inst := e.installationStatus(); inst.Status != store.InstallationNeedsReauth {
		t.Fatalf("installation after revocation: %s (%s), want needs_reauth", inst.Status, inst.StatusMessage)
	}
	if skipped := e.sweep(); !strings.Contains(skipped.Skipped, "needs a reconnect") {
		t.Fatalf("sweep after revocation = %+v, want skipped", skipped)
	}
	replayAllOnQueue(t, e.temporal, e.settings.TaskQueue)
}
