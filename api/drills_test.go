package api_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/worker"
)

// withDrillWorker connects the API to Temporal and runs a worker whose drills read the
// fixture's storage (the other activity structs are there only to satisfy registration).
func (a *archiveFixture) withDrillWorker(t *testing.T) {
	t.Helper()
	tenv := testenv.Temporal(t)
	tc, err := client.Dial(client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w := worker.New(worker.Options{Client: tc, TaskQueue: tenv.TaskQueue, Logger: log, Activities: worker.Activities{
		Onboarding: &activities.Onboarding{}, Backups: &activities.Backups{}, Sweeps: &activities.Sweeps{},
		Housekeeping: &activities.Housekeeping{}, Uninstall: &activities.Uninstall{}, Exports: &activities.Exports{},
		Drills:    &activities.Drills{Store: a.store, Archive: a.deps.Archive, ScratchDir: t.TempDir(), Logger: log},
		Restores:  &activities.Restores{},
		Retention: &activities.Retention{Store: a.store, Archive: a.deps.Archive, Temporal: tc, Logger: log},
	}})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	a.deps.Temporal, a.deps.TaskQueue = tc, tenv.TaskQueue
	a.serve(t)
}

// drill starts a drill through the API and polls it until it finished.
func (a *archiveFixture) drill(t *testing.T, body string) map[string]any {
	t.Helper()
	status, started := a.do(t, "POST", "/api/v1/repositories/"+a.repoID.String()+"/drills", a.tokenA, body)
	if status != 202 || started["status"] != "running" || started["workflow_id"] == "" {
		t.Fatalf("POST drills = %d %v", status, started)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		status, got := a.do(t, "GET", "/api/v1/drills/"+started["drill_id"].(string), a.tokenA, "")
		if status != 200 {
			t.Fatalf("GET drill = %d %v", status, got)
		}
		if d := got["drill"].(map[string]any); d["status"] != "running" {
			if d["snapshot_id"] != started["snapshot_id"] {
				t.Fatalf("drill of %v, started for %v", d["snapshot_id"], started["snapshot_id"])
			}
			return d
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the drill did not finish in 2 minutes")
	return nil
}

func lastDrill(t *testing.T, body map[string]any, key string) map[string]any {
	t.Helper()
	d, _ := body[key].(map[string]any)["last_drill"].(map[string]any)
	return d
}

func TestDrillRoutes(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	a.withDrillWorker(t)
	ctx := context.Background()
	repoPath := "/api/v1/repositories/" + a.repoID.String()

	// Nothing drilled yet: null statuses, no alerts.
	if status, body := a.do(t, "GET", repoPath, a.tokenA, ""); status != 200 || lastDrill(t, body, "repository") != nil {
		t.Fatalf("repository before drills = %d %v", status, body)
	}

	d := a.drill(t, "")
	if d["status"] != "passed" || d["snapshot_id"] != a.latest.ID || d["reason"] != "" || d["duration_ms"].(float64) <= 0 {
		t.Fatalf("drill of the latest snapshot = %v", d)
	}
	var names []string
	for _, s := range d["steps"].([]any) {
		s := s.(map[string]any)
		names = append(names, s["name"].(string)+"="+s["status"].(string))
	}
	if strings.Join(names, " ") != "restore=passed refs=passed fsck=passed pull_requests=skipped metadata=skipped" {
		t.Fatalf("steps = %v", names)
	}
	_, body := a.do(t, "GET", repoPath, a.tokenA, "")
	if ld := lastDrill(t, body, "repository"); ld["status"] != "passed" || ld["id"] != d["id"] {
		t.Fatalf("repository's last drill = %v", ld)
	}
	_, body = a.do(t, "GET", "/api/v1/snapshots/"+a.latest.ID, a.tokenA, "")
	if ld := lastDrill(t, body, "snapshot"); ld["status"] != "passed" {
		t.Fatalf("snapshot's last drill = %v", ld)
	}
	_, body = a.do(t, "GET", repoPath+"/snapshots", a.tokenA, "")
	snaps := body["snapshots"].([]any)
	if snaps[0].(map[string]any)["last_drill"] == nil || snaps[1].(map[string]any)["last_drill"] != nil {
		t.Fatalf("snapshot listing = %v", snaps)
	}

	// An older snapshot by its ID.
	if d := a.drill(t, `{"snapshot_id":"`+a.first.ID+`"}`); d["status"] != "passed" || d["snapshot_id"] != a.first.ID {
		t.Fatalf("drill of the first snapshot = %v", d)
	}

	// A tampered pack fails the drill: the reason names the checksum; it is an alert.
	archivetest.FlipStoredByte(t, a.storageURL, a.key.PackKey(a.latest.Packs[1].Name))
	d = a.drill(t, "")
	if reason, _ := d["reason"].(string); d["status"] != "failed" || !strings.Contains(reason, "sha256") || !strings.HasPrefix(reason, "restore: ") {
		t.Fatalf("drill of a tampered snapshot = %v", d)
	}
	status, body := a.do(t, "GET", "/api/v1/alerts", a.tokenA, "")
	alerts, _ := body["alerts"].([]any)
	if status != 200 || len(alerts) != 1 {
		t.Fatalf("alerts = %d %v", status, body)
	}
	alert := alerts[0].(map[string]any)
	if alert["kind"] != "drill_failed" || alert["full_name"] != "acme/widgets" || alert["drill_id"] != d["id"] || !strings.Contains(alert["message"].(string), "sha256") {
		t.Fatalf("alert = %v", alert)
	}
	if _, me := a.do(t, "GET", "/api/v1/me", a.tokenA, ""); me["open_alerts"] != 1.0 {
		t.Fatalf("me = %v", me)
	}
	_, body = a.do(t, "GET", repoPath+"/drills", a.tokenA, "")
	if drills := body["drills"].([]any); len(drills) != 3 || drills[0].(map[string]any)["status"] != "failed" {
		t.Fatalf("drills = %v", body)
	}
	events, err := a.store.ListAuditEvents(ctx, a.tenantID, 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Actor+":"+ev.Action)
	}
	if all := strings.Join(actions, " "); strings.Count(all, "system:drill:repository.drill_failed") != 1 || strings.Count(all, "repository.drill_requested") != 3 {
		t.Errorf("audit trail = %v", actions)
	}

	// Tenant B sees none of it.
	if status, body := a.do(t, "GET", "/api/v1/alerts", a.tokenB, ""); status != 200 || len(body["alerts"].([]any)) != 0 {
		t.Errorf("tenant B's alerts = %d %v", status, body)
	}
	if _, me := a.do(t, "GET", "/api/v1/me", a.tokenB, ""); me["open_alerts"] != 0.0 {
		t.Errorf("tenant B's me = %v", me)
	}
}

func TestDrillRouteErrors(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	a.withDrillWorker(t)
	emptyID, _, err := a.store.UpsertRepository(context.Background(), store.Repository{TenantID: a.tenantID, InstallationID: a.instID,
		ProviderUUID: "{11111111-2222-4333-8444-555555555555}", FullName: "acme/empty"})
	if err != nil {
		t.Fatal(err)
	}
	repoPath := "/api/v1/repositories/" + a.repoID.String()
	for _, c := range []struct {
		method, path, token, body string
		status                    int
		code, names               string
	}{
		{"POST", "/api/v1/repositories/" + emptyID.String() + "/drills", a.tokenA, "", 409, "no_snapshot", "acme/empty"},
		{"POST", repoPath + "/drills", a.tokenB, "", 404, "not_found", a.repoID.String()},
		{"GET", repoPath + "/drills", a.tokenB, "", 404, "not_found", a.repoID.String()},
		{"POST", repoPath + "/drills", a.tokenA, `{"snapshot_id":"20200101T000000.000Z-00000000"}`, 404, "not_found", "20200101T000000.000Z-00000000"},
		{"POST", "/api/v1/repositories/" + emptyID.String() + "/drills", a.tokenA, `{"snapshot_id":"` + a.latest.ID + `"}`, 404, "not_found", a.latest.ID},
		{"POST", repoPath + "/drills", a.tokenA, `{"snapshot":"x"}`, 400, "invalid_json", "snapshot"},
		{"GET", repoPath + "/drills?limit=0", a.tokenA, "", 400, "invalid_parameter", "limit"},
		{"GET", "/api/v1/drills/not-a-uuid", a.tokenA, "", 404, "not_found", "not-a-uuid"},
	} {
		status, body := a.do(t, c.method, c.path, c.token, c.body)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != c.status || errorCode(t, body) != c.code || !strings.Contains(msg, c.names) {
			t.Errorf("%s %s %s = %d %v, want %d %s naming %s", c.method, c.path, c.body, status, body, c.status, c.code, c.names)
		}
	}
}
