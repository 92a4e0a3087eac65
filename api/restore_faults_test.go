package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// restoreWorld is a connected installation with the Restore App, whose acme/web has an open
// pull request captured in its latest snapshot.
type restoreWorld struct {
	e      *connectEnv
	instID string
	repo   map[string]any
	snapID string
}

func newRestoreWorld(t *testing.T) *restoreWorld {
	e := newConnectEnvWith(t, connectOptions{retryInterval: 200 * time.Millisecond})
	instID, _ := e.connect("acme-corp", "alice")
	repo := e.waitSnapshots("acme-corp", instID, "acme/web", 1)
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/web/push", `{"branch":"feature/login","commits":1}`, nil)
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/web/pullrequests",
		`{"title":"Add login","description":"Adds the login page.","source":"feature/login","destination":"main","author":"alice"}`, nil)
	var snapID string
	e.waitFor("a snapshot of acme/web with its open pull request", 2*time.Minute, func() bool {
		for _, s := range e.snapshots("acme-corp", repo) {
			_, prs := e.call("GET", "/api/v1/snapshots/"+s["id"].(string)+"/pull-requests", "acme-corp", "")
			if list, _ := prs["pull_requests"].([]any); len(list) == 1 {
				snapID = s["id"].(string)
				return true
			}
		}
		return false
	})
	if status, resp := e.connectRestoreApp("acme-corp", instID, "alice"); status != http.StatusOK {
		t.Fatalf("restore app = %d %v", status, resp)
	}
	return &restoreWorld{e: e, instID: instID, repo: repo, snapID: snapID}
}

func (w *restoreWorld) restoreNew(slug, options string) map[string]any {
	w.e.t.Helper()
	if options == "" {
		options = "{}"
	}
	id := w.e.startRestore("acme-corp", fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":%q},"options":%s}`, w.snapID, slug, options))
	return w.e.waitRestore("acme-corp", id)
}

func TestRestoreFaultsAndOptions(t *testing.T) {
	w := newRestoreWorld(t)
	e := w.e
	reader := e.gitToken("alice", "repository")

	t.Run("metadata and open pull requests", func(t *testing.T) {
		done := w.restoreNew("web-full", `{"restore_metadata":true,"restore_open_pull_requests":true}`)
		if done["status"] != domain.RestoreOK {
			t.Fatalf("restore = %v", done)
		}
		result := done["result"].(map[string]any)
		prs := result["pull_requests"].(map[string]any)
		if prs["restored"].(float64) != 1 || prs["failed"].(float64) != 0 {
			t.Fatalf("pull requests = %v", prs)
		}
		applied := fmt.Sprint(result["metadata"].(map[string]any)["applied"])
		if !strings.Contains(applied, "main_branch") || !strings.Contains(applied, "description") {
			t.Fatalf("metadata applied = %s", applied)
		}
		req, _ := http.NewRequest("GET", e.emu.URL()+"/2.0/repositories/acme/web-full/pullrequests", nil)
		req.Header.Set("Authorization", "Bearer "+e.gitToken("alice", "pullrequest"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var list map[string]any
		json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		values, _ := list["values"].([]any)
		if len(values) != 1 || values[0].(map[string]any)["title"] != "Add login" {
			t.Fatalf("pull requests of the restored repository = %v", list)
		}
	})

	t.Run("5xx and a cut connection during the push are retried", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/faults", `{"rules":[
			{"path":"/acme/web-flaky.git/git-receive-pack","kind":"5xx","status":502,"count":1},
			{"path":"/acme/web-flaky.git/git-receive-pack","kind":"drop","drop_after_bytes":10,"count":1}]}`, nil)
		defer e.emulatorAdmin("DELETE", "/_emulator/faults", "", nil)
		done := w.restoreNew("web-flaky", "")
		if done["status"] != domain.RestoreOK {
			t.Fatalf("restore through faults = %v", done)
		}
		wantRefs, _ := e.cloneFacts(reader, "acme/web")
		gotRefs, _ := e.cloneFacts(reader, "acme/web-flaky")
		if gotRefs != wantRefs {
			t.Fatalf("refs after retried pushes:\n%s\nwant\n%s", gotRefs, wantRefs)
		}
	})

	t.Run("a branch restriction refuses one ref: partial, the rest pushed", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.emu.URL()+"/2.0/repositories/acme/web-locked", strings.NewReader(`{"scm":"git","is_private":true}`))
		req.Header.Set("Authorization", "Bearer "+e.gitToken("alice", "repository:admin"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			t.Fatalf("create acme/web-locked: %v %v", resp, err)
		}
		resp.Body.Close()
		e.emulatorAdmin("PUT", "/_emulator/repositories/acme/web-locked/settings", `{"branch_restrictions":[{"kind":"push","pattern":"feature/*"}]}`, nil)
		id := e.startRestore("acme-corp", fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"existing","repository":"acme/web-locked"}}`, w.snapID))
		done := e.waitRestore("acme-corp", id)
		if done["status"] != domain.RestorePartial || !strings.Contains(done["message"].(string), "refs/heads/feature/login") {
			t.Fatalf("restore into a restricted repository = %v", done)
		}
		refs := done["result"].(map[string]any)["refs"].(map[string]any)
		if r, _ := refs["refs/heads/feature/login"].(string); !strings.HasPrefix(r, "rejected") {
			t.Fatalf("feature/login = %q, want rejected with the reason", r)
		}
		if refs["refs/heads/main"] != "pushed" {
			t.Fatalf("main = %v, want pushed", refs["refs/heads/main"])
		}
	})

	t.Run("a tampered pack fails before anything is pushed", func(t *testing.T) {
		packs, _ := filepath.Glob(filepath.Join(e.backupDir, "storage", "tenants", e.tenantID("acme-corp").String(), "repositories",
			strings.ToLower(strings.Trim(w.repo["uuid"].(string), "{}")), "packs", "*.pack"))
		if len(packs) == 0 {
			t.Fatal("no stored pack")
		}
		original, err := os.ReadFile(packs[0])
		if err != nil {
			t.Fatal(err)
		}
		tampered := append([]byte(nil), original...)
		tampered[len(tampered)/2] ^= 0xff
		if err := os.WriteFile(packs[0], tampered, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(packs[0], original, 0o644)
		done := w.restoreNew("web-tampered", "")
		if done["status"] != domain.RestoreFailed || !strings.Contains(done["message"].(string), "checksum") ||
			!strings.Contains(done["message"].(string), "nothing was pushed") {
			t.Fatalf("restore of a tampered snapshot = %v", done)
		}
		if out := strings.TrimSpace(e.gitCLI(reader, "ls-remote", e.emu.URL()+"/acme/web-tampered.git")); out != "" {
			t.Fatalf("the target received refs from a tampered snapshot:\n%s", out)
		}
	})

	t.Run("the worker killed mid-push: the retried attempt completes", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/faults", `{"path":"/acme/web-killed.git/git-receive-pack","kind":"latency","latency":"3s","count":1}`, nil)
		defer e.emulatorAdmin("DELETE", "/_emulator/faults", "", nil)
		id := e.startRestore("acme-corp", fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-killed"}}`, w.snapID))
		e.waitFor("the restore to reach its push", time.Minute, func() bool {
			_, r := e.call("GET", "/api/v1/restores/"+id, "acme-corp", "")
			p, _ := r["progress"].(map[string]any)
			return p["step"] == domain.RestoreStepPush
		})
		time.Sleep(time.Second)
		e.stopWorker()
		e.startWorker()
		done := e.waitRestore("acme-corp", id)
		if done["status"] != domain.RestoreOK {
			t.Fatalf("restore after the worker was killed = %v", done)
		}
		wantRefs, _ := e.cloneFacts(reader, "acme/web")
		if gotRefs, _ := e.cloneFacts(reader, "acme/web-killed"); gotRefs != wantRefs {
			t.Fatalf("refs after the retried push:\n%s\nwant\n%s", gotRefs, wantRefs)
		}
	})

	t.Run("the target deleted mid-restore fails saying so", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/faults", `{"path":"/acme/web-gone.git/git-receive-pack","kind":"latency","latency":"2s","count":1}`, nil)
		defer e.emulatorAdmin("DELETE", "/_emulator/faults", "", nil)
		id := e.startRestore("acme-corp", fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-gone"}}`, w.snapID))
		e.waitFor("the restore to reach its push", time.Minute, func() bool {
			_, r := e.call("GET", "/api/v1/restores/"+id, "acme-corp", "")
			p, _ := r["progress"].(map[string]any)
			return p["step"] == domain.RestoreStepPush
		})
		e.emulatorAdmin("DELETE", "/_emulator/repositories/acme/web-gone", "", nil)
		done := e.waitRestore("acme-corp", id)
		msg, _ := done["message"].(string)
		if done["status"] != domain.RestoreFailed || !strings.Contains(msg, "push") {
			t.Fatalf("restore into a deleted target = %v", done)
		}
	})

	t.Run("cancel stops a running restore and records how far it got", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/faults", `{"path":"/acme/web-cancelled.git/git-receive-pack","kind":"latency","latency":"5s","count":1}`, nil)
		defer e.emulatorAdmin("DELETE", "/_emulator/faults", "", nil)
		id := e.startRestore("acme-corp", fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-cancelled"}}`, w.snapID))
		// While it pushes, the progress shows the sub-step of the step's latest heartbeat (Temporal
		// passes heartbeats on at most once a minute after the first: hydrate or push).
		e.waitFor("the restore's progress to show its push step's heartbeat", time.Minute, func() bool {
			_, r := e.call("GET", "/api/v1/restores/"+id, "acme-corp", "")
			p, _ := r["progress"].(map[string]any)
			d, _ := p["detail"].(string)
			return p["step"] == domain.RestoreStepPush && (strings.HasPrefix(d, "hydrate") || strings.HasPrefix(d, "push"))
		})
		if status, resp := e.call("POST", "/api/v1/restores/"+id+"/cancel", "other-corp", ""); status != http.StatusNotFound {
			t.Fatalf("cancel by another tenant = %d %v, want 404", status, resp)
		}
		if status, resp := e.call("POST", "/api/v1/restores/"+id+"/cancel", "acme-corp", ""); status != http.StatusAccepted {
			t.Fatalf("cancel = %d %v", status, resp)
		}
		done := e.waitRestore("acme-corp", id)
		if msg, _ := done["message"].(string); done["status"] != domain.RestoreCancelled || !strings.Contains(msg, "step push") {
			t.Fatalf("cancelled restore = %v", done)
		}
	})

	t.Run("a restore terminated from the Temporal UI is settled as failed", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/faults", `{"path":"/acme/web-terminated.git/git-receive-pack","kind":"latency","latency":"5s","count":1}`, nil)
		defer e.emulatorAdmin("DELETE", "/_emulator/faults", "", nil)
		body := fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-terminated"}}`, w.snapID)
		id := e.startRestore("acme-corp", body)
		e.waitFor("the restore to reach its push", time.Minute, func() bool {
			_, r := e.call("GET", "/api/v1/restores/"+id, "acme-corp", "")
			p, _ := r["progress"].(map[string]any)
			return p["step"] == domain.RestoreStepPush
		})
		if err := e.temporal.TerminateWorkflow(context.Background(), workflows.RestoreWorkflowID(id), "", "operator"); err != nil {
			t.Fatal(err)
		}
		done := e.waitRestore("acme-corp", id)
		if msg, _ := done["message"].(string); done["status"] != domain.RestoreFailed || !strings.Contains(msg, "Terminated") {
			t.Fatalf("terminated restore = %v", done)
		}
	})

	t.Run("an expired restore token is refreshed", func(t *testing.T) {
		ctx := context.Background()
		tenantID, inst := e.tenantID("acme-corp"), uuid.MustParse(w.instID)
		enc, err := e.store.AppCredentials(ctx, tenantID, inst, domain.AppRestore)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := providerclient.OpenToken(ctx, e.box, enc)
		if err != nil {
			t.Fatal(err)
		}
		tok.Expiry = time.Now().Add(-time.Hour)
		sealed, err := providerclient.SealToken(ctx, e.box, tok)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.UpdateAppCredentials(ctx, tenantID, inst, domain.AppRestore, sealed); err != nil {
			t.Fatal(err)
		}
		if done := w.restoreNew("web-refreshed", ""); done["status"] != domain.RestoreOK {
			t.Fatalf("restore with an expired token = %v", done)
		}
		enc, _ = e.store.AppCredentials(ctx, tenantID, inst, domain.AppRestore)
		if now, err := providerclient.OpenToken(ctx, e.box, enc); err != nil || now.AccessToken == tok.AccessToken || !now.Expiry.After(time.Now()) {
			t.Fatalf("stored restore token after the restore: %v (same access token: %v)", err, now != nil && now.AccessToken == tok.AccessToken)
		}
		e.assertNoSecretLeaks(append(e.secretsOf(w.instID), e.restoreSecrets(w.instID)...))
	})

	t.Run("a revoked grant fails clearly", func(t *testing.T) {
		e.emulatorAdmin("POST", "/_emulator/users/alice/revoke-tokens", "", nil)
		// The API checks the grant before it starts anything...
		status, resp := e.call("POST", "/api/v1/restores", "acme-corp",
			fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-revoked"}}`, w.snapID))
		if errObj, _ := resp["error"].(map[string]any); status != http.StatusConflict || errObj["code"] != "restore_app_revoked" ||
			!strings.Contains(errObj["message"].(string), "/restore-app/connect") {
			t.Fatalf("restore request with a revoked grant = %d %v", status, resp)
		}
		// ...and a restore that was already started when the grant went fails saying where.
		done := e.runRestoreWorkflow(w.instID, w.repo, w.snapID, "web-revoked")
		if done.Status != domain.RestoreFailed || !strings.Contains(done.StatusMessage, "Restore App") || !strings.Contains(done.StatusMessage, "check_grant") {
			t.Fatalf("restore workflow with a revoked grant = %s: %s", done.Status, done.StatusMessage)
		}
	})
}

// runRestoreWorkflow starts the Restore workflow directly (as the API would after its checks)
// and returns the recorded row once it finished.
func (e *connectEnv) runRestoreWorkflow(instID string, repo map[string]any, snapID, slug string) store.Restore {
	e.t.Helper()
	ctx := context.Background()
	tenantID := e.tenantID("acme-corp")
	inst, repoID := uuid.MustParse(instID), uuid.MustParse(repo["id"].(string))
	row, err := e.store.CreateRestore(ctx, store.Restore{ID: uuid.New(), TenantID: tenantID, InstallationID: &inst, RepositoryID: &repoID,
		SnapshotID: snapID, Target: "acme/" + slug, TargetMode: domain.RestoreTargetNew, Request: []byte(`{}`)})
	if err != nil {
		e.t.Fatal(err)
	}
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.RestoreWorkflowID(row.ID.String()), TaskQueue: e.taskQueue},
		workflows.RestoreWorkflowName, workflows.RestoreInput{TenantID: tenantID.String(), RestoreID: row.ID.String(), InstallationID: instID,
			RepositoryID: repoID.String(), RepositoryUUID: repo["uuid"].(string), SnapshotID: snapID,
			Target: workflows.RestoreTarget{Mode: domain.RestoreTargetNew, Workspace: "acme", Slug: slug, Private: true}})
	if err != nil {
		e.t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_ = run.Get(wctx, nil)
	row, err = e.store.GetRestore(ctx, tenantID, row.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return row
}
