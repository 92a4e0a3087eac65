package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/workflows"
)

// TestBackupsThroughTheAPI: onboarding starts the first backups; the API lists their snapshots,
// queues manual backups and reports live status; excluded repositories and other tenants are
// refused.
func TestBackupsThroughTheAPI(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&q=acme/api", "acme-corp", "")
	repos := body["repositories"].([]any)
	if len(repos) != 1 {
		t.Fatalf("repositories = %v", body)
	}
	repo := repos[0].(map[string]any)
	repoID := repo["id"].(string)
	backupID := workflows.BackupWorkflowID(e.backupTarget("acme-corp", repo))

	// The initial backup onboarding started finishes on its own.
	waitWorkflow(t, e, backupID)
	_, body = e.call("GET", "/api/v1/repositories/"+repoID+"/snapshots", "acme-corp", "")
	snaps := body["snapshots"].([]any)
	if len(snaps) != 1 {
		t.Fatalf("snapshots after onboarding = %v", body)
	}
	first := snaps[0].(map[string]any)
	if first["trigger"] != "initial" || first["refs"].(float64) < 1 || first["packs"].(float64) != 1 {
		t.Fatalf("initial snapshot = %v", first)
	}
	status, one := e.call("GET", "/api/v1/snapshots/"+first["id"].(string), "acme-corp", "")
	if status != 200 || one["snapshot"].(map[string]any)["id"] != first["id"] {
		t.Fatalf("GET snapshot = %d %v", status, one)
	}
	_, st := e.call("GET", "/api/v1/repositories/"+repoID+"/backup-status", "acme-corp", "")
	if st["last_backup_status"] != "succeeded" || st["last_snapshot_id"] != first["id"] {
		t.Fatalf("backup-status = %v", st)
	}

	// A manual backup after a push produces a second snapshot.
	// The push's webhook would back it up on its own; dropped, the manual request is what runs.
	e.addFaults(emulator.FaultRule{Target: "webhook", Kind: "drop", Event: "repo:push"})
	e.emulatorPOST("/_emulator/repositories/acme/api/push", `{"commits":1}`)
	status, queued := e.call("POST", "/api/v1/repositories/"+repoID+"/backups", "acme-corp", "")
	if status != 202 || queued["workflow_id"] != backupID {
		t.Fatalf("POST backups = %d %v", status, queued)
	}
	waitWorkflow(t, e, backupID)
	_, body = e.call("GET", "/api/v1/repositories/"+repoID+"/snapshots?limit=1", "acme-corp", "")
	latest := body["snapshots"].([]any)[0].(map[string]any)
	if latest["trigger"] != "manual" || latest["parent_id"] != first["id"] || body["next_cursor"] == nil {
		t.Fatalf("latest snapshot = %v (page %v)", latest, body)
	}
	_, page2 := e.call("GET", "/api/v1/repositories/"+repoID+"/snapshots?limit=1&cursor="+body["next_cursor"].(string), "acme-corp", "")
	if got := page2["snapshots"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != first["id"] {
		t.Fatalf("second page = %v", page2)
	}

	// Excluded: refused with a clear message, snapshots kept.
	e.call("PATCH", "/api/v1/repositories/"+repoID, "acme-corp", `{"included":false}`)
	if status, body := e.call("POST", "/api/v1/repositories/"+repoID+"/backups", "acme-corp", ""); status != 409 || errorCode(t, body) != "excluded" {
		t.Fatalf("backup of excluded repository = %d %v", status, body)
	}
	_, body = e.call("GET", "/api/v1/repositories/"+repoID+"/snapshots", "acme-corp", "")
	if n := len(body["snapshots"].([]any)); n != 2 {
		t.Fatalf("snapshots after exclusion = %d, want 2 kept", n)
	}

	// Other tenants see nothing.
	for _, p := range []string{"/api/v1/repositories/" + repoID + "/snapshots", "/api/v1/snapshots/" + first["id"].(string), "/api/v1/repositories/" + repoID + "/backup-status"} {
		if status, _ := e.call("GET", p, "other-corp", ""); status != 404 {
			t.Fatalf("other tenant GET %s = %d, want 404", p, status)
		}
	}
	if status, _ := e.call("POST", "/api/v1/repositories/"+repoID+"/backups", "other-corp", ""); status != 404 {
		t.Fatalf("other tenant POST backups = %d, want 404", status)
	}
}

// backupTarget is the backup target of a repository as the API lists it.
func (e *connectEnv) backupTarget(tenant string, repo map[string]any) workflows.BackupTarget {
	e.t.Helper()
	ten, err := e.store.TenantByName(context.Background(), tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	return workflows.BackupTarget{TenantID: ten.ID.String(), InstallationID: repo["installation_id"].(string),
		RepositoryID: repo["id"].(string), ProviderUUID: repo["uuid"].(string)}
}

func (e *connectEnv) emulatorPOST(path, body string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := newRequest(ctx, "POST", e.emu.URL()+path, body)
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		e.t.Fatalf("POST %s = %d", path, resp.StatusCode)
	}
}

func newRequest(ctx context.Context, method, url, body string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}
