package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/store"
)

// TestGitPushBacksUpThroughTheWebhook is the headline path: onboarding registers the workspace
// hook, a `git push` with the git CLI makes the emulator deliver a signed repo:push, and the
// receiver's backup request produces a snapshot holding the pushed commit. No API call and no
// schedule is involved.
func TestGitPushBacksUpThroughTheWebhook(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/api")
	e.waitSnapshotCount("acme-corp", repo, 1)

	pushed := time.Now()
	tip := e.gitPush("alice", "acme/api", "main", "webhook.txt")
	snap := e.waitSnapshotWithRef("acme-corp", repo, "refs/heads/main", tip)
	if snap["trigger"] != "webhook" {
		t.Fatalf("snapshot after the push = %v, want trigger webhook", snap)
	}
	pushedAt, err := time.Parse(time.RFC3339Nano, fmt.Sprint(snap["pushed_at"]))
	if err != nil {
		t.Fatalf("snapshot pushed_at = %v: %v", snap["pushed_at"], err)
	}
	finished, _ := time.Parse(time.RFC3339Nano, snap["finished_at"].(string))
	t.Logf("push-to-snapshot: %.2f s from the delivery's receipt, %.2f s from the end of git push",
		finished.Sub(pushedAt).Seconds(), finished.Sub(pushed).Seconds())

	_, body := e.call("GET", "/api/v1/repositories/"+repo["id"].(string), "acme-corp", "")
	got := body["repository"].(map[string]any)
	if got["last_push_at"] == nil || got["last_snapshot_at"] == nil || got["behind"] != false {
		t.Fatalf("repository after the webhook backup = %v", got)
	}
	_, body = e.call("GET", "/api/v1/installations/"+instID, "acme-corp", "")
	health := body["installation"].(map[string]any)["webhooks"].(map[string]any)
	if health["deliveries_24h"].(float64) < 1 || health["last_delivery_at"] == nil || health["unprocessed"].(float64) != 0 {
		t.Fatalf("webhook health = %v", health)
	}
	_, body = e.call("GET", "/api/v1/installations/"+instID+"/webhook-deliveries", "acme-corp", "")
	var push map[string]any
	for _, d := range body["deliveries"].([]any) {
		if d := d.(map[string]any); d["event"] == "repo:push" {
			push = d
		}
	}
	if push == nil || push["result"] != "backup_requested" || push["processed_at"] == nil {
		t.Fatalf("deliveries = %v", body)
	}
	// The hook secrets and tokens stay out of logs, responses and Temporal histories.
	e.assertNoSecretLeaks(e.secretsOf(instID))
}

// repository is the API's view of one repository of the installation, by full name.
func (e *connectEnv) repository(tenant, instID, fullName string) map[string]any {
	e.t.Helper()
	_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&q="+fullName, tenant, "")
	for _, r := range body["repositories"].([]any) {
		if r := r.(map[string]any); r["full_name"] == fullName {
			return r
		}
	}
	e.t.Fatalf("repository %s not listed: %v", fullName, body)
	return nil
}

// snapshots lists a repository's snapshots, newest first.
func (e *connectEnv) snapshots(tenant string, repo map[string]any) []map[string]any {
	e.t.Helper()
	_, body := e.call("GET", "/api/v1/repositories/"+repo["id"].(string)+"/snapshots?limit=200", tenant, "")
	var out []map[string]any
	for _, s := range body["snapshots"].([]any) {
		out = append(out, s.(map[string]any))
	}
	return out
}

func (e *connectEnv) waitSnapshotCount(tenant string, repo map[string]any, n int) []map[string]any {
	e.t.Helper()
	var snaps []map[string]any
	e.waitFor(fmt.Sprintf("%d snapshot(s) of %s", n, repo["full_name"]), 2*time.Minute, func() bool {
		snaps = e.snapshots(tenant, repo)
		return len(snaps) >= n
	})
	return snaps
}

// waitSnapshotWithRef waits for a snapshot whose ref map has ref at hash and returns it.
func (e *connectEnv) waitSnapshotWithRef(tenant string, repo map[string]any, ref, hash string) map[string]any {
	e.t.Helper()
	var found map[string]any
	e.waitFor(fmt.Sprintf("a snapshot of %s with %s at %s", repo["full_name"], ref, hash), 2*time.Minute, func() bool {
		for _, s := range e.snapshots(tenant, repo) {
			if e.manifestRefs(tenant, repo, s["id"].(string))[ref] == hash {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// manifestRefs reads a snapshot's ref map from object storage.
func (e *connectEnv) manifestRefs(tenant string, repo map[string]any, snapshotID string) map[string]string {
	e.t.Helper()
	ctx := context.Background()
	arch, err := archive.Open(ctx, "file://"+filepath.Join(e.backupDir, "storage"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer arch.Close()
	key, err := archive.NewRepoKey(e.tenantID(tenant).String(), repo["uuid"].(string))
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := arch.LoadManifest(ctx, key, snapshotID)
	if err != nil {
		e.t.Fatalf("manifest %s: %v", snapshotID, err)
	}
	return m.Refs
}

func (e *connectEnv) waitFor(what string, limit time.Duration, done func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for !done() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeToken is an emulator access token of user that may push.
func (e *connectEnv) writeToken(user string) string {
	e.t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	e.emulatorAdmin("POST", "/_emulator/tokens", `{"user":"`+user+`","scopes":["repository:write"]}`, &tok)
	return tok.AccessToken
}

// gitPush commits a new file on branch with the git CLI and pushes it over smart HTTP, as a
// developer would; it returns the pushed commit.
func (e *connectEnv) gitPush(user, fullName, branch, file string) string {
	e.t.Helper()
	remote := "http://x-token-auth:" + e.writeToken(user) + "@" + strings.TrimPrefix(e.emu.URL(), "http://") + "/" + fullName + ".git"
	dir := filepath.Join(e.t.TempDir(), "clone")
	git := func(args ...string) string {
		e.t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Dev", "GIT_AUTHOR_EMAIL=dev@example.com",
			"GIT_COMMITTER_NAME=Dev", "GIT_COMMITTER_EMAIL=dev@example.com", "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.t.Fatalf("git %s: %v\n%s", args[0], err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	git("init", "-q")
	git("fetch", "-q", remote, branch)
	git("checkout", "-q", "-b", branch, "FETCH_HEAD")
	if err := os.WriteFile(filepath.Join(dir, file), []byte(time.Now().String()+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	git("add", file)
	git("commit", "-q", "-m", "add "+file)
	tip := git("rev-parse", "HEAD")
	git("push", "-q", remote, "HEAD:refs/heads/"+branch)
	return tip
}

// hook is the installation's registered hook on workspace and its secret.
func (e *connectEnv) hook(tenant, instID, workspace string) (hookUUID, secret string) {
	e.t.Helper()
	ctx := context.Background()
	ten := e.tenantID(tenant)
	id := uuid.MustParse(instID)
	wss, err := e.store.ListWorkspaces(ctx, ten, id)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, w := range wss {
		if w.Slug != workspace || w.WebhookUUID == "" {
			continue
		}
		enc, err := e.store.WorkspaceWebhookSecret(ctx, ten, id, w.WebhookUUID)
		if err != nil {
			e.t.Fatal(err)
		}
		plain, err := e.box.Decrypt(ctx, enc)
		if err != nil {
			e.t.Fatal(err)
		}
		return w.WebhookUUID, string(plain)
	}
	e.t.Fatalf("installation %s has no hook on %s", instID, workspace)
	return "", ""
}

// delivery is a webhook request as Bitbucket sends it.
type delivery struct {
	instID, event, requestUUID, hookUUID string
	// secret signs the body; "" sends no signature, signature overrides it.
	secret, signature string
	body              []byte
	attempt           int
}

// deliver POSTs d to the installation's webhook URL and returns the status and JSON answer.
func (e *connectEnv) deliver(d delivery) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.apiURL+"/webhooks/bitbucket/"+d.instID, bytes.NewReader(d.body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(bitbucket.HeaderEventKey, d.event)
	if d.requestUUID != "" {
		req.Header.Set(bitbucket.HeaderRequestUUID, d.requestUUID)
	}
	req.Header.Set(bitbucket.HeaderHookUUID, strings.Trim(d.hookUUID, "{}"))
	req.Header.Set(bitbucket.HeaderAttemptNumber, fmt.Sprint(max(d.attempt, 1)))
	switch {
	case d.signature != "":
		req.Header.Set(bitbucket.HeaderSignature, d.signature)
	case d.secret != "":
		req.Header.Set(bitbucket.HeaderSignature, bitbucket.Sign([]byte(d.secret), d.body))
	}
	return e.roundTrip(http.DefaultClient, req)
}

// storedDeliveries are the tenant's delivery rows of an installation, newest first.
func (e *connectEnv) storedDeliveries(tenant, instID string) []store.WebhookDelivery {
	e.t.Helper()
	rows, err := e.store.ListWebhookDeliveries(context.Background(), e.tenantID(tenant), uuid.MustParse(instID), 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}
