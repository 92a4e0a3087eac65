package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	// /metrics shows the delivery and the push-to-snapshot observation.
	scrape := e.scrapeMetrics()
	for _, want := range []string{
		`gitsec_webhook_deliveries_total{event="repo:push",result="accepted"} `,
		`gitsec_push_to_snapshot_seconds_count `,
		`gitsec_backup_runs_total{result="succeeded",trigger="webhook"} `,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The hook secrets and tokens stay out of logs, responses and Temporal histories.
	e.assertNoSecretLeaks(e.secretsOf(instID))
}

// scrapeMetrics is GET /metrics (no token) as Prometheus would scrape it.
func (e *connectEnv) scrapeMetrics() string {
	e.t.Helper()
	resp, err := http.Get(e.apiURL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		e.t.Fatalf("GET /metrics = %d %s", resp.StatusCode, raw)
	}
	return string(raw)
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

// emulatorToken is an emulator access token of user with scopes.
func (e *connectEnv) emulatorToken(user string, scopes ...string) string {
	e.t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	raw, _ := json.Marshal(map[string]any{"user": user, "scopes": scopes})
	e.emulatorAdmin("POST", "/_emulator/tokens", string(raw), &tok)
	return tok.AccessToken
}

// emulatorREST calls the emulator's Bitbucket REST API as user (a repository admin's scopes)
// and fails the test on an error status.
func (e *connectEnv) emulatorREST(user, method, path, body string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.emu.URL()+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.emulatorToken(user, "repository:admin", "repository:delete", "webhook", "account"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		raw, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("emulator %s %s = %d %s", method, path, resp.StatusCode, raw)
	}
}

// gitPush commits a new file on branch with the git CLI and pushes it over smart HTTP, as a
// developer would; it returns the pushed commit.
func (e *connectEnv) gitPush(user, fullName, branch, file string) string {
	e.t.Helper()
	remote := "http://x-token-auth:" + e.emulatorToken(user, "repository:write") + "@" + strings.TrimPrefix(e.emu.URL(), "http://") + "/" + fullName + ".git"
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

// pushBody is a minimal repo:push payload for repo (as the API lists it) moving branch to tip.
func pushBody(repo map[string]any, branch, tip string) []byte {
	ws, _, _ := strings.Cut(repo["full_name"].(string), "/")
	return []byte(fmt.Sprintf(`{"actor":{"type":"user","display_name":"Dev"},`+
		`"repository":{"type":"repository","uuid":%q,"full_name":%q,"name":%q,"workspace":{"slug":%q},"parent":null},`+
		`"push":{"changes":[{"old":null,"new":{"type":"branch","name":%q,"target":{"type":"commit","hash":%q}},`+
		`"created":true,"closed":false,"forced":false,"truncated":false,"commits":[]}]}}`,
		repo["uuid"], repo["full_name"], repo["full_name"], ws, branch, tip))
}

// TestWebhookReceiverRefusesBadDeliveries sends what a forger, a misconfigured proxy or a
// confused Bitbucket might: each gets a clear 4xx, nothing of it is stored or acted on, and the
// installation's webhook health counts the refusals by reason.
func TestWebhookReceiverRefusesBadDeliveries(t *testing.T) {
	e := newConnectEnv(t)
	instA, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding of acme-corp = %+v", res)
	}
	// Another tenant connects the same account: its hook on the same workspace has its own secret.
	instB, res := e.connect("other-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding of other-corp = %+v", res)
	}
	hookA, secretA := e.hook("acme-corp", instA, "acme")
	hookB, secretB := e.hook("other-corp", instB, "acme")
	if secretA == secretB || hookA == hookB {
		t.Fatalf("the two installations share a hook or a secret")
	}
	repo := e.repository("acme-corp", instA, "acme/api")
	body := pushBody(repo, "main", strings.Repeat("ab", 20))
	good := delivery{instID: instA, event: "repo:push", hookUUID: hookA, secret: secretA, body: body}
	const marker = "BODY-MARKER-7f3a"

	cases := []struct {
		name   string
		d      delivery
		status int
		code   string
	}{
		{"wrong signature", with(good, func(d *delivery) { d.secret = "not-the-secret" }), 401, "invalid_signature"},
		{"no signature", with(good, func(d *delivery) { d.secret = "" }), 401, "invalid_signature"},
		{"malformed signature header", with(good, func(d *delivery) { d.signature = "sha1=abc" }), 401, "invalid_signature"},
		{"unknown installation", with(good, func(d *delivery) { d.instID = uuid.NewString() }), 404, "not_found"},
		{"installation ID that is no UUID", with(good, func(d *delivery) { d.instID = "not-an-id" }), 404, "not_found"},
		{"A's delivery at B's URL", with(good, func(d *delivery) { d.instID = instB }), 401, "invalid_signature"},
		{"A's secret with B's hook at B's URL", with(good, func(d *delivery) { d.instID, d.hookUUID = instB, hookB }), 401, "invalid_signature"},
		{"unknown hook UUID", with(good, func(d *delivery) { d.hookUUID = uuid.NewString() }), 401, "invalid_signature"},
		{"body not JSON", with(good, func(d *delivery) { d.body = []byte("not json " + marker) }), 400, "malformed_payload"},
		{"JSON of the wrong shape", with(good, func(d *delivery) { d.body = []byte(`{"push":{"changes":[]},"note":"` + marker + `"}`) }), 400, "malformed_payload"},
		{"push without changes", with(good, func(d *delivery) {
			d.body = []byte(`{"repository":{"uuid":"{1}","full_name":"acme/api"},"note":"` + marker + `"}`)
		}), 400, "malformed_payload"},
		{"no request UUID", with(good, func(d *delivery) { d.requestUUID = "-" }), 400, "invalid_header"},
		{"10 MB body", with(good, func(d *delivery) { d.body = bytes.Repeat([]byte("x"), 10<<20) }), 413, "body_too_large"},
	}
	for _, c := range cases {
		if c.d.requestUUID == "" {
			c.d.requestUUID = uuid.NewString()
		} else if c.d.requestUUID == "-" {
			c.d.requestUUID = ""
		}
		status, out := e.deliver(c.d)
		if status != c.status || errorCode(t, out) != c.code {
			t.Errorf("%s: %d %v, want %d %s", c.name, status, out, c.status, c.code)
		}
	}
	if n := len(e.storedDeliveries("acme-corp", instA)) + len(e.storedDeliveries("other-corp", instB)); n != 0 {
		t.Fatalf("refused deliveries stored %d rows", n)
	}
	if strings.Contains(e.logs.String(), marker) {
		t.Fatalf("a refused delivery's body reached the log")
	}

	// The same delivery twice (Bitbucket redelivers after a timeout): acknowledged, done once.
	good.requestUUID = uuid.NewString()
	if status, out := e.deliver(good); status != 202 || out["status"] != "accepted" {
		t.Fatalf("good delivery = %d %v", status, out)
	}
	again := good
	again.attempt = 2
	if status, out := e.deliver(again); status != 200 || out["status"] != "duplicate" {
		t.Fatalf("redelivery = %d %v", status, out)
	}
	rows := e.storedDeliveries("acme-corp", instA)
	if len(rows) != 1 || rows[0].Attempt != 1 || rows[0].RepositoryUUID != repo["uuid"] {
		t.Fatalf("stored deliveries = %+v", rows)
	}
	e.waitFor("the delivery to be processed", time.Minute, func() bool {
		rows = e.storedDeliveries("acme-corp", instA)
		return rows[0].ProcessedAt != nil
	})
	if rows[0].Result != "backup_requested" {
		t.Fatalf("processed delivery = %+v", rows[0])
	}

	// An event GitSec does not act on is recorded and acknowledged.
	unknown := with(good, func(d *delivery) { d.event, d.requestUUID = "repo:something_new", uuid.NewString() })
	if status, out := e.deliver(unknown); status != 202 {
		t.Fatalf("unknown event = %d %v", status, out)
	}
	e.waitFor("the unknown event to be recorded", time.Minute, func() bool {
		for _, r := range e.storedDeliveries("acme-corp", instA) {
			if r.EventKey == "repo:something_new" && r.ProcessedAt != nil {
				return r.Result == "recorded"
			}
		}
		return false
	})

	// Webhook health counts what was refused, by reason, per installation.
	_, out := e.call("GET", "/api/v1/installations/"+instA, "acme-corp", "")
	health := out["installation"].(map[string]any)["webhooks"].(map[string]any)
	rejected := health["rejected_24h"].(map[string]any)
	if rejected["rejected_signature"] != float64(4) || rejected["malformed"] != float64(4) || rejected["too_large"] != float64(1) {
		t.Fatalf("acme-corp's rejections = %v", rejected)
	}
	if health["deliveries_24h"] != float64(2) {
		t.Fatalf("acme-corp's deliveries = %v", health)
	}
	_, out = e.call("GET", "/api/v1/installations/"+instB, "other-corp", "")
	if got := out["installation"].(map[string]any)["webhooks"].(map[string]any)["rejected_24h"].(map[string]any); got["rejected_signature"] != float64(2) {
		t.Fatalf("other-corp's rejections = %v", got)
	}
	// Another tenant cannot read the installation's deliveries.
	if status, _ := e.call("GET", "/api/v1/installations/"+instA+"/webhook-deliveries", "other-corp", ""); status != 404 {
		t.Fatalf("other tenant reading deliveries = %d", status)
	}

	// A removed installation answers like an unknown one, even to a correctly signed delivery.
	if err := e.store.SetInstallationStatus(context.Background(), e.tenantID("acme-corp"), uuid.MustParse(instA), "removed", "test"); err != nil {
		t.Fatal(err)
	}
	if status, out := e.deliver(with(good, func(d *delivery) { d.requestUUID = uuid.NewString() })); status != 404 || errorCode(t, out) != "not_found" {
		t.Fatalf("delivery to a removed installation = %d %v", status, out)
	}
}

// with is a copy of d changed by change.
func with(d delivery, change func(*delivery)) delivery {
	change(&d)
	return d
}
