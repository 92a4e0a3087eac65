package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
)

// connectRestoreApp walks the Restore App's OAuth flow as user for the installation.
func (e *connectEnv) connectRestoreApp(tenant, instID, user string) (int, map[string]any) {
	e.t.Helper()
	status, body := e.call("POST", "/api/v1/installations/"+instID+"/restore-app/connect", tenant, "")
	if status != http.StatusOK {
		e.t.Fatalf("restore-app connect = %d %v", status, body)
	}
	authURL := body["authorize_url"].(string)
	if !strings.Contains(authURL, "client_id=gitsec-test-restore") {
		e.t.Fatalf("authorize_url %s is not the Restore App's consumer", authURL)
	}
	resp, err := noRedirect.PostForm(authURL, url.Values{"user": {user}, "decision": {"grant"}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("consent = %d", resp.StatusCode)
	}
	return e.call("GET", resp.Header.Get("Location"), "", "")
}

// waitRestore polls a restore until it is final and returns it.
func (e *connectEnv) waitRestore(tenant, id string) map[string]any {
	e.t.Helper()
	var body map[string]any
	e.waitFor("restore "+id+" to finish", 2*time.Minute, func() bool {
		_, body = e.call("GET", "/api/v1/restores/"+id, tenant, "")
		s, _ := body["status"].(string)
		return domain.RestoreFinished(s)
	})
	return body
}

func (e *connectEnv) startRestore(tenant, body string) string {
	e.t.Helper()
	status, resp := e.call("POST", "/api/v1/restores", tenant, body)
	if status != http.StatusAccepted {
		e.t.Fatalf("POST /restores = %d %v", status, resp)
	}
	return resp["id"].(string)
}

// gitToken is an emulator token of user with scopes, for the git CLI.
func (e *connectEnv) gitToken(user string, scopes ...string) string {
	e.t.Helper()
	raw, _ := json.Marshal(map[string]any{"user": user, "scopes": scopes})
	resp, err := http.Post(e.emu.URL()+"/_emulator/tokens", "application/json", strings.NewReader(string(raw)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok map[string]any
	json.NewDecoder(resp.Body).Decode(&tok)
	return tok["access_token"].(string)
}

// gitCLI runs git with an x-token-auth header for the emulator.
func (e *connectEnv) gitCLI(token string, args ...string) string {
	e.t.Helper()
	header := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x-token-auth:"+token))
	cmd := exec.Command("git", append([]string{"-c", "http.extraHeader=" + header}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cloneFacts mirror-clones a repository with the git CLI and returns its branches and tags
// (`git for-each-ref`) and `git rev-list --all --count`.
func (e *connectEnv) cloneFacts(token, fullName string) (refs string, count string) {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), "clone.git")
	e.gitCLI(token, "clone", "--quiet", "--mirror", e.emu.URL()+"/"+fullName+".git", dir)
	refs = e.gitCLI(token, "-C", dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")
	count = strings.TrimSpace(e.gitCLI(token, "-C", dir, "rev-list", "--all", "--count"))
	return refs, count
}

// restoreSecrets are the Restore App's tokens and consumer secret: they must not leak either.
func (e *connectEnv) restoreSecrets(instID string) []string {
	e.t.Helper()
	ctx := context.Background()
	enc, err := e.store.AppCredentials(ctx, e.tenantID("acme-corp"), uuid.MustParse(instID), domain.AppRestore)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := providerclient.OpenToken(ctx, e.box, enc)
	if err != nil {
		e.t.Fatal(err)
	}
	return []string{tok.AccessToken, tok.RefreshToken, "restore-secret-value"}
}

// The done-when test: back up a repository, delete it upstream, restore its latest snapshot
// into a new repository through the Restore App, and compare a git CLI clone of the restored
// repository with one of the original.
func TestRestoreDeletedRepositoryIntoANewOne(t *testing.T) {
	e := newConnectEnv(t)
	instID, _ := e.connect("acme-corp", "alice")
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/web/push", `{"branch":"release/1","commits":2}`, nil)
	repo := e.waitSnapshots("acme-corp", instID, "acme/web", 1)
	reader := e.gitToken("alice", "repository")
	wantRefs, wantCount := e.cloneFacts(reader, "acme/web")
	snap := e.waitSnapshotWithRef("acme-corp", repo, "refs/heads/release/1", strings.Fields(e.gitCLI(reader, "ls-remote", e.emu.URL()+"/acme/web.git", "refs/heads/release/1"))[0])
	snapID := snap["id"].(string)
	body := fmt.Sprintf(`{"snapshot_id":%q,"target":{"mode":"new","workspace":"acme","slug":"web-restored"}}`, snapID)

	// Without the Restore App: 409, saying what to install and where.
	status, resp := e.call("POST", "/api/v1/restores", "acme-corp", body)
	errObj, _ := resp["error"].(map[string]any)
	if status != http.StatusConflict || errObj["code"] != "restore_app_not_installed" ||
		!strings.Contains(errObj["message"].(string), "/api/v1/installations/"+instID+"/restore-app/connect") {
		t.Fatalf("restore without the Restore App = %d %v", status, resp)
	}
	// A grant by somebody who is neither the installation's account nor an admin of its
	// workspaces is refused and stores nothing.
	for _, who := range []string{"carol", "bob"} {
		status, resp := e.connectRestoreApp("acme-corp", instID, who)
		if errObj, _ := resp["error"].(map[string]any); status != http.StatusForbidden || errObj["code"] != "restore_account_mismatch" {
			t.Fatalf("restore app granted by %s = %d %v, want 403 restore_account_mismatch", who, status, resp)
		}
	}
	if _, ra := e.call("GET", "/api/v1/installations/"+instID+"/restore-app", "acme-corp", ""); ra["granted"] != false {
		t.Fatalf("restore app after refused grants = %v", ra)
	}
	if status, resp := e.connectRestoreApp("acme-corp", instID, "alice"); status != http.StatusOK || resp["granted"] != true {
		t.Fatalf("restore app callback = %d %v", status, resp)
	}
	_, detail := e.call("GET", "/api/v1/installations/"+instID, "acme-corp", "")
	inst := detail["installation"].(map[string]any)
	if ra, _ := inst["restore_app"].(map[string]any); ra["granted"] != true || ra["granted_at"] == nil || ra["account"] != "alice" {
		t.Fatalf("installation's restore_app = %v", inst["restore_app"])
	}

	// Bad input is refused before anything runs.
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"snapshot_id":"` + snapID + `","target":{"mode":"new","workspace":"acme","slug":"Bad Slug!"}}`, 400, "invalid_field"},
		{`{"snapshot_id":"` + snapID + `","target":{"mode":"new","workspace":"acme","slug":"api"}}`, 400, "slug_taken"},
		{`{"snapshot_id":"` + snapID + `","target":{"mode":"sideways"}}`, 400, "invalid_field"},
		{`{"snapshot_id":"` + snapID + `","target":{"mode":"existing","repository":"acme/api","on_conflict":"maybe"}}`, 400, "invalid_field"},
		{`{"snapshot_id":"` + snapID + `","target":{"mode":"new","workspace":"acme","slug":"x"},"options":{"refs":["no-such-branch"]}}`, 400, "invalid_field"},
		{`{"snapshot_id":"20990101T000000.000Z-00000000","target":{"mode":"new","workspace":"acme","slug":"x"}}`, 404, "not_found"},
		{`{"repository_id":"` + repo["id"].(string) + `","at":"2001-01-01T00:00:00Z","target":{"mode":"new","workspace":"acme","slug":"x"}}`, 400, "no_snapshot"},
		{`{"repository_id":"` + repo["id"].(string) + `","at":"yesterday","target":{"mode":"new","workspace":"acme","slug":"x"}}`, 400, "invalid_field"},
	} {
		status, resp := e.call("POST", "/api/v1/restores", "acme-corp", c.body)
		errObj, _ := resp["error"].(map[string]any)
		if status != c.status || errObj["code"] != c.code || errObj["message"] == "" {
			t.Errorf("POST %s = %d %v, want %d %s", c.body, status, resp, c.status, c.code)
		}
	}
	// Another tenant cannot restore this tenant's snapshot, nor tell it exists.
	if status, resp := e.call("POST", "/api/v1/restores", "other-corp", body); status != http.StatusNotFound {
		t.Fatalf("other tenant's restore = %d %v, want 404", status, resp)
	}

	e.emulatorAdmin("DELETE", "/_emulator/repositories/acme/web", "", nil)
	id := e.startRestore("acme-corp", body)
	// A second restore into the same target while the first runs is refused.
	if status, resp := e.call("POST", "/api/v1/restores", "acme-corp", body); status != http.StatusConflict && status != http.StatusBadRequest {
		t.Fatalf("a second restore into the same target = %d %v, want 409 (or 400 once the first created it)", status, resp)
	}
	done := e.waitRestore("acme-corp", id)
	if done["status"] != domain.RestoreOK {
		t.Fatalf("restore = %v", done)
	}
	result := done["result"].(map[string]any)
	if result["refs_total"].(float64) == 0 || result["refs_pushed"] != result["refs_total"] {
		t.Fatalf("restore result = %v", result)
	}
	gotRefs, gotCount := e.cloneFacts(reader, "acme/web-restored")
	if gotRefs != wantRefs || gotCount != wantCount {
		t.Fatalf("restored repository differs from the original:\n refs %q\n want %q\n rev-list count %s, want %s", gotRefs, wantRefs, gotCount, wantCount)
	}
	// The restored repository's main branch is the snapshot's HEAD.
	if got := e.emulatorGET("alice", "/2.0/repositories/acme/web-restored"); got["mainbranch"].(map[string]any)["name"] != "main" {
		t.Fatalf("restored main branch = %v", got["mainbranch"])
	}
	_, list := e.call("GET", "/api/v1/restores?repository_id="+repo["id"].(string), "acme-corp", "")
	if rs := list["restores"].([]any); len(rs) != 1 || rs[0].(map[string]any)["id"] != id {
		t.Fatalf("restores of the repository = %v", list)
	}
	_, audit := e.call("GET", "/api/v1/audit-events", "acme-corp", "")
	actions := map[string]bool{}
	for _, ev := range audit["audit_events"].([]any) {
		actions[ev.(map[string]any)["action"].(string)] = true
	}
	for _, a := range []string{"restore_app.connected", "restore.requested", "restore.finished"} {
		if !actions[a] {
			t.Errorf("audit log lacks %s: %v", a, actions)
		}
	}
	if status, _ := e.call("POST", "/api/v1/restores/"+id+"/cancel", "acme-corp", ""); status != http.StatusConflict {
		t.Fatalf("cancel of a finished restore = %d, want 409", status)
	}
	e.assertNoSecretLeaks(append(e.secretsOf(instID), e.restoreSecrets(instID)...))

	// DELETE drops the grant; restores then answer 409 again.
	if status, resp := e.call("DELETE", "/api/v1/installations/"+instID+"/restore-app", "acme-corp", ""); status != http.StatusOK || resp["granted"] != false {
		t.Fatalf("DELETE restore-app = %d %v", status, resp)
	}
	if status, _ := e.call("POST", "/api/v1/restores", "acme-corp", body); status != http.StatusConflict {
		t.Fatalf("restore after the grant was dropped = %d, want 409", status)
	}
}

// The second done-when test: restore into the existing repository at a point in time between
// two snapshots, after a force-push rewrote upstream history. on_conflict=fail refuses and
// lists the refs; force makes the refs equal the older snapshot's.
func TestRestorePointInTimeIntoExistingAfterForcePush(t *testing.T) {
	e := newConnectEnv(t)
	instID, _ := e.connect("acme-corp", "alice")
	repo := e.waitSnapshots("acme-corp", instID, "acme/api", 1)
	first := e.snapshots("acme-corp", repo)[0]
	firstRefs := e.manifestRefs("acme-corp", repo, first["id"].(string))
	between := time.Now().UTC()
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/api/push", `{"commits":2}`, nil)
	e.waitSnapshotCount("acme-corp", repo, 2)
	if status, resp := e.connectRestoreApp("acme-corp", instID, "alice"); status != http.StatusOK {
		t.Fatalf("restore app = %d %v", status, resp)
	}
	// Upstream history is rewritten: main is moved back and gets a different commit.
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/api/force-push", `{"branch":"main","back":3}`, nil)
	e.emulatorAdmin("POST", "/_emulator/repositories/acme/api/push", `{"commits":1,"message":"rewritten"}`, nil)

	body := func(onConflict string) string {
		return fmt.Sprintf(`{"repository_id":%q,"at":%q,"target":{"mode":"existing","repository":"acme/api","on_conflict":%q}}`,
			repo["id"], between.Format(time.RFC3339Nano), onConflict)
	}
	refused := e.waitRestore("acme-corp", e.startRestore("acme-corp", body("fail")))
	if refused["status"] != domain.RestoreFailed || refused["snapshot_id"] != first["id"] ||
		!strings.Contains(refused["message"].(string), "refs/heads/main") || !strings.Contains(refused["message"].(string), "on_conflict=force") {
		t.Fatalf("restore with on_conflict=fail = %v", refused)
	}
	conflicts, _ := refused["result"].(map[string]any)["conflicts"].([]any)
	if len(conflicts) == 0 || conflicts[0].(map[string]any)["ref"] != "refs/heads/main" {
		t.Fatalf("conflicts = %v", refused["result"])
	}

	forced := e.waitRestore("acme-corp", e.startRestore("acme-corp", body("force")))
	if forced["status"] != domain.RestoreOK {
		t.Fatalf("restore with on_conflict=force = %v", forced)
	}
	reader := e.gitToken("alice", "repository")
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(e.gitCLI(reader, "ls-remote", e.emu.URL()+"/acme/api.git")), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(f[1], "refs/heads/") || strings.HasPrefix(f[1], "refs/tags/") {
			got[f[1]] = f[0]
		}
	}
	want := map[string]string{}
	for name, oid := range firstRefs {
		if strings.HasPrefix(name, "refs/heads/") || strings.HasPrefix(name, "refs/tags/") {
			want[name] = oid
		}
	}
	if fmt.Sprint(sortedPairs(got)) != fmt.Sprint(sortedPairs(want)) {
		t.Fatalf("target refs after the forced restore:\n%v\nwant the older snapshot's:\n%v", sortedPairs(got), sortedPairs(want))
	}
}

func sortedPairs(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
