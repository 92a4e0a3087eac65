package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/workflows"
)

// quickRetry replaces the production 30 s between provider activity attempts where a fault
// test needs Temporal's retry to happen.
const quickRetry = 200 * time.Millisecond

// TestFaultBurstsDuringOnboarding: rate limiting and server errors that the client's own
// retries absorb, and a hook creation whose answer is lost (the hook exists, the activity
// fails), which Temporal retries: onboarding ends active with exactly one hook per workspace.
func TestFaultBurstsDuringOnboarding(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{retryInterval: quickRetry})
	rules := e.addFaults(
		emulator.FaultRule{Method: "GET", Path: "/2.0/user/workspaces", Kind: "429", Count: 2},
		emulator.FaultRule{Method: "GET", Path: "/2.0/repositories/acme", Kind: "5xx", Status: 502, Count: 2},
		emulator.FaultRule{Method: "GET", Path: "/2.0/workspaces/acme-labs/hooks", Kind: "5xx", Status: 503, Count: 1},
		emulator.FaultRule{Method: "POST", Path: "/2.0/workspaces/acme/hooks", Kind: "drop", Count: 1},
	)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding ended %+v, want active", res)
	}
	// Every fault fired: otherwise this test would prove nothing.
	fired := e.faults()
	for _, r := range rules {
		if fired[r.ID].Fired != r.Count {
			t.Fatalf("fault %s %s %s fired %d times, want %d", r.Kind, r.Method, r.Path, fired[r.ID].Fired, r.Count)
		}
	}
	// The client's own retries absorbed the 429s and 5xx; only the lost answer to a create (a
	// POST is never repeated blindly) took a second activity attempt.
	attempts := e.activityAttempts(workflows.OnboardWorkflowID(instID))
	if attempts[workflows.DiscoverWorkspacesActivity] != 1 || attempts[workflows.SyncRepositoriesActivity] != 1 {
		t.Fatalf("activity attempts = %v: the client should have absorbed the 429 and 5xx bursts", attempts)
	}
	if attempts[workflows.RegisterWorkspaceHookActivity] != 2 {
		t.Fatalf("activity attempts = %v: registering acme's hook should have taken a second attempt", attempts)
	}
	e.assertOneRegisteredHookPerWorkspace(instID, "acme", "acme-labs")
	if inst := e.installation(instID); inst["repositories"].(map[string]any)["total"].(float64) != 5 {
		t.Fatalf("repositories = %v, want 5", inst["repositories"])
	}
}

// TestExpiredAccessTokenIsRefreshedMidOnboarding: Bitbucket rejects the access token as expired
// while GitSec still believes it valid; the client refreshes once, onboarding finishes, and the
// rotated refresh token is persisted (a new worker process can still use the installation).
func TestExpiredAccessTokenIsRefreshedMidOnboarding(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{accessTokenTTL: 2 * time.Second})
	ctx := context.Background()
	// No worker while the callback runs: the test gets to see and shape the credentials before
	// onboarding uses them.
	e.stopWorker()
	instID, wfID := e.startConnect("acme-corp", "alice")
	original := e.storedToken(instID)
	// The stored expiry claims two hours, as if Bitbucket ended the token early (or the clocks
	// disagree): the client cannot refresh ahead of time and only learns from the 401.
	claimed := *original
	claimed.Expiry = time.Now().Add(2 * time.Hour)
	sealed, err := providerclient.SealToken(ctx, e.box, &claimed)
	if err != nil {
		t.Fatal(err)
	}
	tenantID, id := e.tenantID("acme-corp"), uuid.MustParse(instID)
	if err := e.store.UpdateInstallationCredentials(ctx, tenantID, id, sealed); err != nil {
		t.Fatal(err)
	}
	e.waitAccessTokenExpired(original.AccessToken)

	e.startWorker()
	res, err := e.waitOnboarding(wfID)
	if err != nil || res.Status != "active" {
		t.Fatalf("onboarding = %+v, %v; want active", res, err)
	}
	if !strings.Contains(e.logs.String(), "bitbucket rejected the access token; forcing one refresh") {
		t.Fatal("the client never saw the expired token rejected: the test did not exercise the refresh on 401")
	}
	refreshed := e.storedToken(instID)
	if refreshed.AccessToken == original.AccessToken || refreshed.RefreshToken == original.RefreshToken {
		t.Fatal("the refreshed token was not persisted")
	}
	e.assertOneRegisteredHookPerWorkspace(instID, "acme", "acme-labs")

	// The emulator rotates the refresh token on every refresh, so only the last one persisted
	// works. A new worker holds nothing in memory and must refresh from the store.
	e.stopWorker()
	e.startWorker()
	e.waitAccessTokenExpired(e.storedToken(instID).AccessToken)
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/sync", "acme-corp", ""); status != 202 {
		t.Fatalf("sync = %d %v", status, body)
	}
	if res, err := e.waitOnboarding(wfID); err != nil || res.Status != "active" {
		t.Fatalf("sync with the persisted token = %+v, %v; want active", res, err)
	}
}

// TestRevokedTokenNeedsReauth: the user revokes GitSec's access; the next discovery stops at
// once with a non-retryable CredentialsRevoked error and the installation asks for reconnecting.
func TestRevokedTokenNeedsReauth(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v, want active", res)
	}
	var revoked struct{ Revoked int }
	e.emulatorAdmin("POST", "/_emulator/users/alice/revoke-tokens", "", &revoked)
	if revoked.Revoked < 2 {
		t.Fatalf("revoked %d tokens, want at least GitSec's access and refresh token", revoked.Revoked)
	}

	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/sync", "acme-corp", ""); status != 202 {
		t.Fatalf("sync = %d %v", status, body)
	}
	_, err := e.waitOnboarding(workflows.OnboardWorkflowID(instID))
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != domain.ErrTypeCredentialsRevoked {
		t.Fatalf("sync after revocation = %v, want a %s failure", err, domain.ErrTypeCredentialsRevoked)
	}
	var actErr *temporal.ActivityError
	if !errors.As(err, &actErr) || actErr.RetryState() != enumspb.RETRY_STATE_NON_RETRYABLE_FAILURE {
		t.Fatalf("the revoked credentials were retried: %v", err)
	}
	if n := e.activityAttempts(workflows.OnboardWorkflowID(instID))[workflows.FetchAccountActivity]; n != 1 {
		t.Fatalf("%s ran %d attempts, want 1", workflows.FetchAccountActivity, n)
	}
	inst := e.installation(instID)
	if inst["status"] != "needs_reauth" || inst["status_message"] != "Bitbucket rejected GitSec's access; reconnect the account" {
		t.Fatalf("installation = %v %q", inst["status"], inst["status_message"])
	}
	// Nothing registered earlier is torn down by a failed discovery.
	for _, ws := range []string{"acme", "acme-labs"} {
		if n := len(e.hooksOf(ws)); n != 1 {
			t.Fatalf("%s has %d hooks after the failed sync, want 1", ws, n)
		}
	}
}

// TestAdminRightLostBetweenListingAndHookCreation: alice is an administrator of acme when the
// workspaces are listed and a member by the time the hook is registered. The workspace is
// recorded no_admin with the reason, its repositories are still listed, no hook exists.
func TestAdminRightLostBetweenListingAndHookCreation(t *testing.T) {
	seed := defaultConnectSeed()
	seed.Users = append(seed.Users, emulator.SeedUser{Username: "dave"})
	// dave stays an owner of acme, to look at its hooks after alice lost her right.
	seed.Workspaces[0].Owners = []string{"dave"}
	e := newConnectEnvWith(t, connectOptions{seed: seed})
	// The hook listing of acme waits long enough for the demotion to land first.
	held := e.addFaults(emulator.FaultRule{Method: "GET", Path: "/2.0/workspaces/acme/hooks", Kind: "latency", Latency: emulator.Duration(3 * time.Second), Count: 1})[0]

	instID, wfID := e.startConnect("acme-corp", "alice")
	e.waitFaultFired(held.ID)
	e.emulatorAdmin("PUT", "/_emulator/workspaces/acme/members/alice", `{"role":"member"}`, nil)
	res, err := e.waitOnboarding(wfID)
	if err != nil || res.Status != "active_partial" {
		t.Fatalf("onboarding = %+v, %v; want active_partial", res, err)
	}

	wss := e.workspaces(instID)
	acme := wss["acme"]
	if acme["status"] != "no_admin" || acme["admin"] != false || acme["webhook_registered"] != false ||
		!strings.Contains(acme["status_reason"].(string), "no longer an owner/administrator") {
		t.Fatalf("acme = %v", acme)
	}
	if labs := wss["acme-labs"]; labs["status"] != "webhook_registered" || labs["webhook_registered"] != true {
		t.Fatalf("acme-labs = %v", labs)
	}
	if n := len(e.hooksOfAs("dave", "acme")); n != 0 {
		t.Fatalf("acme has %d hooks, want none", n)
	}
	if n := len(e.hooksOf("acme-labs")); n != 1 {
		t.Fatalf("acme-labs has %d hooks, want 1", n)
	}
	if total := e.installation(instID)["repositories"].(map[string]any)["total"].(float64); total != 5 {
		t.Fatalf("repositories = %v, want all 5 (acme's are backed up on schedule)", total)
	}
}

// TestThousandRepositoriesInTenWorkspaces: 1,000 repositories over ten workspaces whose sizes
// straddle Bitbucket's page size (100): every one is recorded and listed through the API's pages.
func TestThousandRepositoriesInTenWorkspaces(t *testing.T) {
	sizes := []int{250, 150, 100, 100, 100, 100, 50, 50, 50, 50}
	seed := &emulator.Seed{Users: []emulator.SeedUser{{Username: "alice"}}}
	want := map[string]bool{}
	var slugs []string
	for i, n := range sizes {
		ws := emulator.SeedWorkspace{Slug: fmt.Sprintf("ws-%02d", i), Admins: []string{"alice"}}
		for j := range n {
			// Empty repositories: listing needs no history, and seeding stays fast.
			r := emulator.SeedRepository{Slug: fmt.Sprintf("repo-%03d", j)}
			ws.Repositories = append(ws.Repositories, r)
			want[ws.Slug+"/"+r.Slug] = true
		}
		seed.Workspaces = append(seed.Workspaces, ws)
		slugs = append(slugs, ws.Slug)
	}
	e := newConnectEnvWith(t, connectOptions{seed: seed, emulatorDir: fastTempDir(t)})
	// Discovery is under test, not a thousand first backups (which would start the moment the
	// repositories are recorded): the installation backs up nothing by default, set while no
	// worker can run the onboarding yet.
	e.stopWorker()
	instID, wfID := e.startConnect("acme-corp", "alice")
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/repositories:bulk", "acme-corp", `{"default_included":false}`); status != 200 {
		t.Fatalf("default_included=false: %d %v", status, body)
	}
	e.startWorker()
	res, err := e.waitOnboarding(wfID)
	if err != nil || res.Status != "active" || !strings.Contains(res.Message, "10 workspaces, 1000 repositories, 10 webhooks") {
		t.Fatalf("onboarding = %+v, %v", res, err)
	}
	inst := e.installation(instID)
	if total := inst["repositories"].(map[string]any)["total"].(float64); total != 1000 {
		t.Fatalf("repositories total = %v, want 1000", total)
	}
	if found := inst["progress"].(map[string]any)["repositories_found"].(float64); found != 1000 {
		t.Fatalf("progress repositories_found = %v, want 1000", found)
	}

	got := map[string]bool{}
	cursor := ""
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatalf("paging does not end: %d pages, %d repositories", page, len(got))
		}
		status, body := e.call("GET", "/api/v1/repositories?limit=150&installation="+instID+"&cursor="+cursor, "acme-corp", "")
		if status != 200 {
			t.Fatalf("page %d = %d %v", page, status, body)
		}
		for _, r := range body["repositories"].([]any) {
			repo := r.(map[string]any)
			name := repo["full_name"].(string)
			if repo["included"] != false {
				t.Fatalf("%s is included although the installation backs up nothing by default", name)
			}
			if got[name] {
				t.Fatalf("%s listed twice", name)
			}
			got[name] = true
		}
		next, _ := body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = url.QueryEscape(next)
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d repositories, want %d", len(got), len(want))
	}
	for name := range want {
		if !got[name] {
			t.Fatalf("%s missing from the pages", name)
		}
	}
	e.assertOneRegisteredHookPerWorkspace(instID, slugs...)
}

// TestWorkerKilledMidOnboarding: the worker stops while a hook is being created; a new worker
// finishes the onboarding with exactly one hook per admin workspace.
func TestWorkerKilledMidOnboarding(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{retryInterval: quickRetry})
	held := e.addFaults(emulator.FaultRule{Method: "POST", Path: "/2.0/workspaces/acme-labs/hooks", Kind: "latency", Latency: emulator.Duration(5 * time.Second), Count: 1})[0]

	instID, wfID := e.startConnect("acme-corp", "alice")
	e.waitFaultFired(held.ID)
	e.stopWorker()
	desc, err := e.temporal.DescribeWorkflowExecution(context.Background(), wfID, "")
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.WorkflowExecutionInfo.Status; st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("onboarding is %v after the worker stopped, want still running", st)
	}

	e.startWorker()
	res, err := e.waitOnboarding(wfID)
	if err != nil || res.Status != "active" {
		t.Fatalf("onboarding = %+v, %v; want active", res, err)
	}
	// The interrupted registration was attempted again, by the new worker.
	if n := e.activityAttempts(wfID)[workflows.RegisterWorkspaceHookActivity]; n < 2 {
		t.Fatalf("%s ran %d attempts: the stop did not interrupt it", workflows.RegisterWorkspaceHookActivity, n)
	}
	e.assertOneRegisteredHookPerWorkspace(instID, "acme", "acme-labs")
}

// fastTempDir is a temporary directory on tmpfs when there is one: seeding runs git init once
// per repository, which is several times faster there than on a disk.
func fastTempDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "gitsec-api-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// addFaults installs fault rules through the emulator's admin API and returns them with their IDs.
func (e *connectEnv) addFaults(rules ...emulator.FaultRule) []emulator.FaultRule {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"rules": rules})
	var added struct{ Rules []emulator.FaultRule }
	e.emulatorAdmin("POST", "/_emulator/faults", string(body), &added)
	if len(added.Rules) != len(rules) {
		e.t.Fatalf("added %d fault rules, want %d", len(added.Rules), len(rules))
	}
	return added.Rules
}

// faults returns the emulator's fault rules by ID, with how often each fired.
func (e *connectEnv) faults() map[string]emulator.FaultRule {
	e.t.Helper()
	var list struct{ Rules []emulator.FaultRule }
	e.emulatorAdmin("GET", "/_emulator/faults", "", &list)
	out := map[string]emulator.FaultRule{}
	for _, r := range list.Rules {
		out[r.ID] = r
	}
	return out
}

// waitFaultFired waits until the rule matched a request: for a latency rule, that request is
// now held by the emulator.
func (e *connectEnv) waitFaultFired(id string) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for e.faults()[id].Fired == 0 {
		if time.Now().After(deadline) {
			e.t.Fatalf("fault %s never fired", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// emulatorAdmin calls the emulator's admin API and decodes the answer into out (if not nil).
func (e *connectEnv) emulatorAdmin(method, path, body string, out any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.emu.URL()+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e.t.Fatalf("emulator %s %s = %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			e.t.Fatalf("emulator %s %s: %v", method, path, err)
		}
	}
}

// waitAccessTokenExpired waits until the emulator answers an access token with 401.
func (e *connectEnv) waitAccessTokenExpired(accessToken string) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequest("GET", e.emu.URL()+"/2.0/user", nil)
		req.Header.Set("Authorization", "Bearer "+accessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			return
		}
		if resp.StatusCode != http.StatusOK || time.Now().After(deadline) {
			e.t.Fatalf("GET /2.0/user with the stored token = %d, waiting for it to expire", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// activityAttempts reads the latest run's history: the highest attempt of each activity type.
// Temporal records only the attempt that finished, so a count above 1 means retries happened.
func (e *connectEnv) activityAttempts(workflowID string) map[string]int {
	e.t.Helper()
	types := map[int64]string{}
	out := map[string]int{}
	it := e.temporal.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			e.t.Fatal(err)
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			types[ev.GetEventId()] = a.GetActivityType().GetName()
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil {
			name := types[a.GetScheduledEventId()]
			out[name] = max(out[name], int(a.GetAttempt()))
		}
	}
	return out
}

// waitOnboarding waits for the latest run of an onboarding workflow.
func (e *connectEnv) waitOnboarding(workflowID string) (workflows.OnboardResult, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var res workflows.OnboardResult
	err := e.temporal.GetWorkflow(ctx, workflowID, "").Get(ctx, &res)
	return res, err
}

func (e *connectEnv) tenantID(name string) uuid.UUID {
	e.t.Helper()
	ten, err := e.store.TenantByName(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return ten.ID
}

// storedToken decrypts the OAuth token stored for an acme-corp installation.
func (e *connectEnv) storedToken(instID string) *oauth2.Token {
	e.t.Helper()
	ctx := context.Background()
	enc, err := e.store.InstallationCredentials(ctx, e.tenantID("acme-corp"), uuid.MustParse(instID))
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := providerclient.OpenToken(ctx, e.box, enc)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// installation reads an acme-corp installation through the API.
func (e *connectEnv) installation(instID string) map[string]any {
	e.t.Helper()
	return e.installationOf("acme-corp", instID)
}

// workspaces returns an installation's workspaces by slug, as the API shows them.
func (e *connectEnv) workspaces(instID string) map[string]map[string]any {
	e.t.Helper()
	out := map[string]map[string]any{}
	for _, w := range e.installation(instID)["workspaces"].([]any) {
		ws := w.(map[string]any)
		out[ws["slug"].(string)] = ws
	}
	return out
}

// assertOneRegisteredHookPerWorkspace checks both sides: the emulator holds exactly one hook
// per workspace, pointing at the installation, and it is the hook GitSec recorded (whose secret
// GitSec keeps), not an orphan of an interrupted attempt.
func (e *connectEnv) assertOneRegisteredHookPerWorkspace(instID string, slugs ...string) {
	e.t.Helper()
	wss := e.workspaces(instID)
	var recorded []string
	for slug := range wss {
		recorded = append(recorded, slug)
	}
	sort.Strings(recorded)
	want := append([]string(nil), slugs...)
	sort.Strings(want)
	if strings.Join(recorded, ",") != strings.Join(want, ",") {
		e.t.Fatalf("recorded workspaces %v, want %v", recorded, want)
	}
	for _, slug := range slugs {
		hooks := e.hooksOf(slug)
		if len(hooks) != 1 {
			e.t.Fatalf("%s has %d hooks in the emulator, want exactly 1", slug, len(hooks))
		}
		h := hooks[0].(map[string]any)
		ws := wss[slug]
		if h["url"] != e.apiURL+"/webhooks/bitbucket/"+instID || h["secret_set"] != true {
			e.t.Fatalf("%s hook = %v", slug, h)
		}
		if ws["webhook_registered"] != true || ws["webhook_uuid"] != h["uuid"] {
			e.t.Fatalf("%s: GitSec recorded %v, the emulator holds hook %v", slug, ws, h["uuid"])
		}
	}
}
