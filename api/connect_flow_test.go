package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/proto"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/api"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/internal/webhooks"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// connectEnv is the whole connect stack on real servers: Postgres, the Temporal dev server with
// a worker on this test's task queue, the Bitbucket emulator, and the API over HTTP.
type connectEnv struct {
	t                testing.TB
	opts             connectOptions
	api              *httptest.Server
	apiURL           string
	emu              *emulator.Server
	store            *store.Store
	box              *secretbox.Box
	temporal         client.Client
	oauth            *oauth2.Config
	restoreOAuth     *oauth2.Config
	log              *slog.Logger
	worker           sdkworker.Worker // nil while stopped
	logs             *lockedBuffer
	tokens           map[string]string // tenant name -> API token
	bodies           *lockedBuffer     // every API response body, for the secret scan
	taskQueue        string
	backupDir        string // object storage and mirrors of the backups onboarding starts
	lastInstallation string
	// metrics is the one registry of the test's "process" (API, dispatcher and worker), as in
	// `gitsec dev`.
	metrics *metrics.Metrics
	// webhooks is the API process's dispatcher (its re-driver runs every 200 ms here).
	webhooks *webhooks.Dispatcher
	// apiPostgres and apiTemporal are the proxies of partitionAPI (nil otherwise).
	apiPostgres, apiTemporal *testenv.Proxy
	// browser is the client that asks for connect links and follows their callbacks: its cookie
	// jar carries the binding from POST .../connect to the callback, as a browser's would.
	browser *http.Client
}

// connectOptions vary the connect stack for the fault tests; the zero value is the default world.
type connectOptions struct {
	seed           *emulator.Seed // nil: defaultConnectSeed
	emulatorDir    string         // "": a fresh t.TempDir()
	accessTokenTTL time.Duration  // the emulator's; 0 keeps its two hours
	// retryInterval, when set, replaces the interval between activity attempts (30 s for
	// provider calls in production) so that a test can watch Temporal's retry happen. The
	// attempt limits and non-retryable error types stay those of the workflow's presets.
	retryInterval time.Duration
	// partitionAPI routes the API's own Postgres and Temporal connections (the receiver and the
	// webhook dispatcher) through proxies the test can cut, while the worker keeps the servers.
	partitionAPI bool
	// coalescing replaces the backup workflows' quick test settings (100 ms quiet period, 1 s
	// max wait, 1 s idle timeout) for the tests that measure coalescing.
	coalescing *backupqueue.Settings
}

// defaultConnectSeed: alice administers acme and acme-labs, bob is a member of acme, carol has
// no workspace. acme's repositories are in project CORE (WEB is there to move one to);
// acme-labs has the emulator's default project.
func defaultConnectSeed() *emulator.Seed {
	return &emulator.Seed{
		Users: []emulator.SeedUser{{Username: "alice"}, {Username: "bob"}, {Username: "carol"}},
		Workspaces: []emulator.SeedWorkspace{
			{Slug: "acme", Admins: []string{"alice"}, Members: []string{"bob"}, Projects: []emulator.SeedProject{{Key: "CORE", Name: "Core"}, {Key: "WEB", Name: "Web"}}, Repositories: []emulator.SeedRepository{
				{Slug: "api", Generate: &emulator.Generate{Commits: 3}},
				{Slug: "web", Generate: &emulator.Generate{Commits: 2, Branches: 1}},
				{Slug: "empty"},
			}},
			{Slug: "acme-labs", Admins: []string{"alice"}, Repositories: []emulator.SeedRepository{
				{Slug: "lab-1"}, {Slug: "lab-2"},
			}},
		},
	}
}

func newConnectEnv(t *testing.T) *connectEnv {
	t.Helper()
	return newConnectEnvWith(t, connectOptions{})
}

func newConnectEnvWith(t testing.TB, opts connectOptions) *connectEnv {
	t.Helper()
	ctx := context.Background()
	e := &connectEnv{t: t, opts: opts, logs: &lockedBuffer{}, bodies: &lockedBuffer{}, tokens: map[string]string{}, metrics: metrics.New("test")}
	jar, _ := cookiejar.New(nil)
	e.browser = &http.Client{Jar: jar}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var err error
	dbURL := testenv.Postgres(t)
	if e.store, err = store.Open(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	if _, err := e.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	keyURL, _ := secretbox.NewLocalKeyURL()
	if e.box, err = secretbox.Open(ctx, keyURL); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"acme-corp", "other-corp"} {
		ten, err := e.store.CreateTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if e.tokens[name], _, err = e.store.IssueAPIToken(ctx, ten.ID, "test"); err != nil {
			t.Fatal(err)
		}
	}

	// The API's address must be known before the emulator registers the consumer's callback.
	e.api = httptest.NewUnstartedServer(nil)
	e.apiURL = "http://" + e.api.Listener.Addr().String()
	seed, dataDir := opts.seed, opts.emulatorDir
	if seed == nil {
		seed = defaultConnectSeed()
	}
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	e.emu, err = emulator.Start(ctx, emulator.Options{
		Listen:         "127.0.0.1:0",
		DataDir:        dataDir,
		Seed:           seed,
		AccessTokenTTL: opts.accessTokenTTL,
		Consumers: []emulator.Consumer{{Key: "gitsec-test", Secret: "consumer-secret-value", CallbackURL: e.apiURL + "/oauth/bitbucket/callback"},
			{Key: "gitsec-test-restore", Secret: "restore-secret-value", CallbackURL: e.apiURL + "/oauth/bitbucket/restore/callback",
				Scopes: []string{"account", "repository", "repository:write", "repository:admin", "pullrequest", "pullrequest:write"}}},
		Logger: e.log.With("component", "emulator"),
	})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { e.emu.Close() })

	tenv := testenv.Temporal(t)
	e.taskQueue = tenv.TaskQueue
	if e.temporal, err = client.DialContext(ctx, client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.temporal.Close)
	e.oauth = bitbucket.OAuthConfig("gitsec-test", "consumer-secret-value", e.emu.URL()+"/site/oauth2", e.apiURL+"/oauth/bitbucket/callback")
	e.restoreOAuth = bitbucket.OAuthConfig("gitsec-test-restore", "restore-secret-value", e.emu.URL()+"/site/oauth2", e.apiURL+"/oauth/bitbucket/restore/callback")
	e.startWorker()
	t.Cleanup(func() {
		if e.worker != nil {
			e.worker.Stop()
		}
	})

	apiStore, apiTemporal := e.store, e.temporal
	if opts.partitionAPI {
		apiStore, apiTemporal = e.partitionedClients(dbURL, tenv)
	}
	backups := e.backupSettings()
	e.webhooks = &webhooks.Dispatcher{Store: apiStore, Temporal: apiTemporal, Backups: backups, Logger: e.log.With("component", "webhooks"),
		RedriveEvery: 200 * time.Millisecond, CallTimeout: 2 * time.Second, Metrics: e.metrics}
	dispatchCtx, stopDispatch := context.WithCancel(context.Background())
	dispatched := make(chan struct{})
	go func() { defer close(dispatched); _ = e.webhooks.Run(dispatchCtx) }()
	t.Cleanup(func() { stopDispatch(); <-dispatched })
	// The API reads exports from the storage the worker writes, as `gitsec api` does.
	apiArchive, err := archive.Open(ctx, "file://"+filepath.Join(e.backupDir, "storage")+"?create_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apiArchive.Close() })
	e.api.Config.Handler = api.NewHandler(api.Deps{
		Store: apiStore, Logger: e.log, Version: "test", Temporal: apiTemporal, TaskQueue: tenv.TaskQueue,
		Box: e.box, BitbucketOAuth: e.oauth, BitbucketAPIURL: e.emu.URL(),
		Backups: backups, Webhooks: e.webhooks, Metrics: e.metrics, Archive: apiArchive,
		RestoreOAuth: e.restoreOAuth,
		Clients: &providerclient.Factory{Store: apiStore, Box: e.box, OAuth: e.oauth, RestoreOAuth: e.restoreOAuth, APIURL: e.emu.URL(), GitURL: e.emu.URL(),
			RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000), Logger: e.log},
	})
	e.api.Start()
	t.Cleanup(e.api.Close)
	return e
}

// backupSettings are the backup workflows' settings of every starter (API, dispatcher, worker).
func (e *connectEnv) backupSettings() backupqueue.Settings {
	if e.opts.coalescing != nil {
		s := *e.opts.coalescing
		s.TaskQueue = e.taskQueue
		return s
	}
	return backupqueue.Settings{TaskQueue: e.taskQueue, QuietPeriod: 100 * time.Millisecond, MaxWait: time.Second, IdleTimeout: time.Second}
}

// partitionedClients are a store and a Temporal client that reach the test's servers through
// proxies (e.apiPostgres, e.apiTemporal) the test can cut.
func (e *connectEnv) partitionedClients(dbURL string, tenv testenv.TemporalEnv) (*store.Store, client.Client) {
	e.t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.apiPostgres = testenv.NewProxy(e.t, u.Host)
	u.Host = e.apiPostgres.Addr()
	st, err := store.Open(context.Background(), u.String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(st.Close)
	e.apiTemporal = testenv.NewProxy(e.t, tenv.HostPort)
	tc, err := client.NewLazyClient(client.Options{HostPort: e.apiTemporal.Addr(), Namespace: tenv.Namespace})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(tc.Close)
	return st, tc
}

// startWorker starts a worker on the test's task queue with fresh activities: a new client
// factory, so nothing (cached clients, in-memory tokens) carries over from a stopped worker, as
// with a new process.
func (e *connectEnv) startWorker() {
	e.t.Helper()
	if e.worker != nil {
		e.t.Fatal("startWorker: a worker is already running")
	}
	if e.backupDir == "" {
		e.backupDir = e.t.TempDir()
	}
	arch, err := archive.Open(context.Background(), "file://"+filepath.Join(e.backupDir, "storage")+"?create_dir=true")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { arch.Close() })
	clients := &providerclient.Factory{
		Store: e.store, Box: e.box, OAuth: e.oauth, RestoreOAuth: e.restoreOAuth, APIURL: e.emu.URL(), GitURL: e.emu.URL(),
		RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000),
		Logger: e.log,
	}
	queue := e.backupSettings()
	acts := worker.Activities{
		Onboarding: &activities.Onboarding{Store: e.store, Clients: clients, Box: e.box, PublicURL: e.apiURL, Logger: e.log},
		// Onboarding starts the first backups; they run on this same worker (its task queue
		// doubles as the host queue), so the connect tests exercise them too.
		Backups: &activities.Backups{
			Store: e.store, Clients: clients, Archive: arch, MirrorDir: filepath.Join(e.backupDir, "mirrors"),
			HostQueue: e.taskQueue, Temporal: e.temporal, Queue: queue, Logger: e.log, Metrics: e.metrics,
		},
		Sweeps:       &activities.Sweeps{Store: e.store, Clients: clients, Archive: arch, Temporal: e.temporal, Queue: queue, Logger: e.log},
		Housekeeping: &activities.Housekeeping{Store: e.store, Logger: e.log},
		Uninstall:    &activities.Uninstall{Store: e.store, Clients: clients},
		Exports:      &activities.Exports{Store: e.store, Clients: clients, Archive: arch, Logger: e.log},
		Drills:       &activities.Drills{Store: e.store, Archive: arch, Temporal: e.temporal, TaskQueue: e.taskQueue, Logger: e.log},
		Restores:     &activities.Restores{Store: e.store, Clients: clients, Archive: arch, ScratchDir: e.t.TempDir(), Logger: e.log},
		Retention: &activities.Retention{Store: e.store, Archive: arch, Temporal: e.temporal, Logger: e.log,
			Settings: activities.RetentionSettings{TaskQueue: e.taskQueue}},
	}
	var w sdkworker.Worker
	if e.opts.retryInterval > 0 {
		w = sdkworker.New(e.temporal, e.taskQueue, sdkworker.Options{
			Interceptors: []interceptor.WorkerInterceptor{&quickActivityRetries{interval: e.opts.retryInterval}},
		})
		worker.Register(w, acts)
	} else {
		w = worker.New(worker.Options{Client: e.temporal, TaskQueue: e.taskQueue, Activities: acts, Logger: e.log})
	}
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.worker = w
}

// stopWorker stops the worker: activities in flight see their context cancelled.
func (e *connectEnv) stopWorker() {
	e.t.Helper()
	if e.worker == nil {
		e.t.Fatal("stopWorker: no worker is running")
	}
	e.worker.Stop()
	e.worker = nil
}

// quickActivityRetries shortens the wait between activity attempts of every workflow the worker
// runs. Only the intervals change: attempt limits and non-retryable error types are the
// workflow's own, so a test still sees which errors are retried at all.
type quickActivityRetries struct {
	interceptor.WorkerInterceptorBase
	interval time.Duration
}

func (q *quickActivityRetries) InterceptWorkflow(_ workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	return &quickRetriesInbound{WorkflowInboundInterceptorBase: interceptor.WorkflowInboundInterceptorBase{Next: next}, interval: q.interval}
}

type quickRetriesInbound struct {
	interceptor.WorkflowInboundInterceptorBase
	interval time.Duration
}

func (i *quickRetriesInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	return i.Next.Init(&quickRetriesOutbound{WorkflowOutboundInterceptorBase: interceptor.WorkflowOutboundInterceptorBase{Next: outbound}, interval: i.interval})
}

type quickRetriesOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
	interval time.Duration
}

func (o *quickRetriesOutbound) ExecuteActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	if rp := workflow.GetActivityOptions(ctx).RetryPolicy; rp != nil {
		quick := *rp
		quick.InitialInterval, quick.MaximumInterval = o.interval, o.interval
		ctx = workflow.WithRetryPolicy(ctx, quick)
	}
	return o.Next.ExecuteActivity(ctx, activityType, args...)
}

// call makes an API request and decodes the JSON answer; every body is kept for the secret scan.
func (e *connectEnv) call(method, path, tenant, body string) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.api.URL + path
	}
	req, _ := http.NewRequest(method, u, rd)
	if tenant != "" {
		req.Header.Set("Authorization", "Bearer "+e.tokens[tenant])
	}
	return e.roundTrip(e.browser, req)
}

// roundTrip sends req, keeps the body for the secret scan and decodes the JSON answer.
func (e *connectEnv) roundTrip(c *http.Client, req *http.Request) (int, map[string]any) {
	e.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	e.bodies.Write(raw)
	checkOpenAPI(e.t, req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: not JSON: %q", req.Method, req.URL.Path, raw)
	}
	return resp.StatusCode, out
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// consent asks for a connect link and answers the emulator's consent form; it returns the
// callback URL the emulator redirects to (not yet followed).
func (e *connectEnv) consent(tenant, user, decision string) string {
	e.t.Helper()
	status, body := e.call("POST", "/api/v1/installations/bitbucket/connect", tenant, "")
	if status != 200 {
		e.t.Fatalf("connect = %d %v", status, body)
	}
	authURL := body["authorize_url"].(string)
	if !strings.HasPrefix(authURL, e.emu.URL()+"/site/oauth2/authorize?") {
		e.t.Fatalf("authorize_url = %s", authURL)
	}
	resp, err := noRedirect.PostForm(authURL, url.Values{"user": {user}, "decision": {decision}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("consent form = %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// connect walks the whole OAuth flow for a Bitbucket user and waits for onboarding to finish.
func (e *connectEnv) connect(tenant, user string) (string, workflows.OnboardResult) {
	e.t.Helper()
	id, wfID := e.startConnect(tenant, user)
	var res workflows.OnboardResult
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.temporal.GetWorkflow(ctx, wfID, "").Get(ctx, &res); err != nil {
		e.t.Fatalf("onboarding %s: %v", id, err)
	}
	return id, res
}

// startConnect walks the OAuth flow up to the callback, which starts onboarding; it returns the
// installation and workflow IDs without waiting.
func (e *connectEnv) startConnect(tenant, user string) (installationID, workflowID string) {
	e.t.Helper()
	status, body := e.call("GET", e.consent(tenant, user, "grant"), "", "")
	if status != 201 {
		e.t.Fatalf("callback = %d %v", status, body)
	}
	e.lastInstallation = body["installation_id"].(string)
	return e.lastInstallation, body["workflow_id"].(string)
}

// emulatorGET reads the emulator's REST API as user (token from its admin endpoint).
func (e *connectEnv) emulatorGET(user, path string) map[string]any {
	e.t.Helper()
	resp, err := http.Post(e.emu.URL()+"/_emulator/tokens", "application/json", strings.NewReader(fmt.Sprintf(`{"user":%q,"scopes":["account","repository","webhook"]}`, user)))
	if err != nil {
		e.t.Fatal(err)
	}
	var tok map[string]any
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest("GET", e.emu.URL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

func (e *connectEnv) hooksOf(workspace string) []any {
	e.t.Helper()
	return e.hooksOfAs("alice", workspace)
}

// hooksOfAs lists a workspace's hooks as user, who must administer it: anything but a page of
// hooks fails the test, so a refused listing cannot pass for "no hooks".
func (e *connectEnv) hooksOfAs(user, workspace string) []any {
	e.t.Helper()
	page := e.emulatorGET(user, "/2.0/workspaces/"+workspace+"/hooks")
	v, ok := page["values"].([]any)
	if !ok {
		e.t.Fatalf("hooks of %s as %s: %v", workspace, user, page)
	}
	return v
}

func TestConnectBitbucketEndToEnd(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("alice's installation ended %+v, want active", res)
	}

	// The installations table shows both admin workspaces with their webhook.
	_, list := e.call("GET", "/api/v1/installations", "acme-corp", "")
	insts := list["installations"].([]any)
	if len(insts) != 1 {
		t.Fatalf("installations = %v", list)
	}
	inst := insts[0].(map[string]any)
	if inst["status"] != "active" || inst["account"].(map[string]any)["name"] != "alice" {
		t.Fatalf("installation = %v", inst)
	}
	if repos := inst["repositories"].(map[string]any); repos["total"].(float64) != 5 {
		t.Fatalf("repository counts = %v", repos)
	}
	for _, w := range inst["workspaces"].([]any) {
		ws := w.(map[string]any)
		if ws["admin"] != true || ws["webhook_registered"] != true {
			t.Fatalf("workspace = %v", ws)
		}
	}
	for _, ws := range []string{"acme", "acme-labs"} {
		hooks := e.hooksOf(ws)
		if len(hooks) != 1 {
			t.Fatalf("%s has %d hooks in the emulator, want 1", ws, len(hooks))
		}
		h := hooks[0].(map[string]any)
		if h["url"] != e.api.URL+"/webhooks/bitbucket/"+instID || h["secret_set"] != true {
			t.Fatalf("%s hook = %v", ws, h)
		}
	}

	// A second discovery (sync) updates the hook in place: still one per workspace.
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/sync", "acme-corp", ""); status != 202 {
		t.Fatalf("sync = %d %v", status, body)
	}
	waitWorkflow(t, e, workflows.OnboardWorkflowID(instID))
	for _, ws := range []string{"acme", "acme-labs"} {
		if n := len(e.hooksOf(ws)); n != 1 {
			t.Fatalf("after sync %s has %d hooks, want 1", ws, n)
		}
	}

	// Detail with progress.
	status, detail := e.call("GET", "/api/v1/installations/"+instID, "acme-corp", "")
	if status != 200 {
		t.Fatalf("detail = %d %v", status, detail)
	}
	prog := detail["installation"].(map[string]any)["progress"].(map[string]any)
	if prog["repositories_found"].(float64) != 5 || prog["done"] != true {
		t.Fatalf("progress = %v", prog)
	}

	// Repositories: paging with a stable cursor, filters, include/exclude.
	var names []string
	cursor := ""
	for page := 0; page < 10; page++ {
		_, body := e.call("GET", "/api/v1/repositories?limit=2&installation="+instID+"&cursor="+cursor, "acme-corp", "")
		for _, r := range body["repositories"].([]any) {
			names = append(names, r.(map[string]any)["full_name"].(string))
		}
		next, _ := body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = url.QueryEscape(next)
	}
	want := "acme-labs/lab-1,acme-labs/lab-2,acme/api,acme/empty,acme/web"
	if strings.Join(names, ",") != want {
		t.Fatalf("paged repositories = %v, want %s", names, want)
	}
	_, body := e.call("GET", "/api/v1/repositories?workspace=acme&q=ap", "acme-corp", "")
	repos := body["repositories"].([]any)
	if len(repos) != 1 {
		t.Fatalf("filtered = %v", body)
	}
	apiRepo := repos[0].(map[string]any)
	if st := apiRepo["last_backup_status"]; (st != "pending_backup" && st != "succeeded") || apiRepo["included"] != true || !strings.HasPrefix(apiRepo["uuid"].(string), "{") {
		t.Fatalf("repository = %v", apiRepo)
	}
	// Discovery records each repository's project as Bitbucket lists it.
	if p, _ := apiRepo["project"].(map[string]any); p["key"] != "CORE" || p["name"] != "Core" {
		t.Fatalf("acme/api project = %v, want CORE/Core", apiRepo["project"])
	}
	_, labs := e.call("GET", "/api/v1/repositories?workspace=acme-labs&q=lab-1", "acme-corp", "")
	upstream := e.emulatorGET("alice", "/2.0/repositories/acme-labs/lab-1")["project"].(map[string]any)
	if p := labs["repositories"].([]any)[0].(map[string]any)["project"].(map[string]any); p["key"] != upstream["key"] || p["name"] != upstream["name"] || p["key"] == "" {
		t.Fatalf("acme-labs/lab-1 project = %v, upstream %v", p, upstream)
	}
	repoID := apiRepo["id"].(string)
	if status, body := e.call("PATCH", "/api/v1/repositories/"+repoID, "acme-corp", `{"included":false}`); status != 200 || body["repository"].(map[string]any)["included"] != false {
		t.Fatalf("exclude = %d %v", status, body)
	}
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/repositories:bulk", "acme-corp", `{"exclude":["acme-labs/*"],"include":["acme/*"],"default_included":false}`); status != 200 ||
		body["matched_exclude"].(float64) != 2 || body["changed_to_included"].(float64) != 1 {
		t.Fatalf("bulk = %d %v", status, body)
	}
	_, body = e.call("GET", "/api/v1/repositories?included=false", "acme-corp", "")
	if n := len(body["repositories"].([]any)); n != 2 {
		t.Fatalf("excluded repositories = %d, want the two acme-labs ones", n)
	}
	for _, bad := range []struct{ method, path, body string }{
		{"POST", "/api/v1/installations/" + instID + "/repositories:bulk", `{"include":["[bad"]}`},
		{"POST", "/api/v1/installations/" + instID + "/repositories:bulk", `{}`},
		{"PATCH", "/api/v1/repositories/" + repoID, `{"included":"yes"}`},
		{"PATCH", "/api/v1/repositories/" + repoID, `{}`},
		{"GET", "/api/v1/repositories?included=maybe", ""},
		{"GET", "/api/v1/repositories?cursor=bm9wZQ", ""},
	} {
		if status, body := e.call(bad.method, bad.path, "acme-corp", bad.body); status != 400 {
			t.Fatalf("%s %s %s = %d %v, want 400", bad.method, bad.path, bad.body, status, body)
		}
	}

	// Another tenant sees none of it: 404, never 403.
	for _, p := range []string{"/api/v1/installations/" + instID, "/api/v1/repositories/" + repoID} {
		if status, _ := e.call("GET", p, "other-corp", ""); status != 404 {
			t.Fatalf("other tenant GET %s = %d, want 404", p, status)
		}
	}
	if status, _ := e.call("PATCH", "/api/v1/repositories/"+repoID, "other-corp", `{"included":true}`); status != 404 {
		t.Fatalf("other tenant PATCH = %d, want 404", status)
	}
	if status, _ := e.call("DELETE", "/api/v1/installations/"+instID, "other-corp", ""); status != 404 {
		t.Fatalf("other tenant DELETE = %d, want 404", status)
	}
	_, other := e.call("GET", "/api/v1/repositories", "other-corp", "")
	if n := len(other["repositories"].([]any)); n != 0 {
		t.Fatalf("other tenant lists %d repositories", n)
	}

	// Every change is audited.
	_, audit := e.call("GET", "/api/v1/audit-events", "acme-corp", "")
	var actions []string
	for _, ev := range audit["audit_events"].([]any) {
		actions = append(actions, ev.(map[string]any)["action"].(string))
	}
	for _, want := range []string{"installation.connected", "installation.sync_requested", "repository.excluded", "repositories.bulk_inclusion"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Fatalf("audit actions %v lack %s", actions, want)
		}
	}

	// Collect the secrets before uninstall drops the credentials.
	secrets := e.secretsOf(instID)

	// Uninstall removes the hooks GitSec registered and keeps backups.
	status, del := e.call("DELETE", "/api/v1/installations/"+instID, "acme-corp", "")
	if status != 202 || !strings.Contains(del["backups"].(string), "kept") {
		t.Fatalf("uninstall = %d %v", status, del)
	}
	waitWorkflow(t, e, workflows.UninstallWorkflowID(instID))
	for _, ws := range []string{"acme", "acme-labs"} {
		if n := len(e.hooksOf(ws)); n != 0 {
			t.Fatalf("after uninstall %s has %d hooks", ws, n)
		}
	}
	_, detail = e.call("GET", "/api/v1/installations/"+instID, "acme-corp", "")
	if st := detail["installation"].(map[string]any)["status"]; st != "removed" {
		t.Fatalf("status after uninstall = %v", st)
	}
	// Its repositories stay readable, but nothing more is backed up for them.
	if status, body := e.call("POST", "/api/v1/repositories/"+repoID+"/backups", "acme-corp", ""); status != 409 || errorCode(t, body) != "installation_removed" {
		t.Fatalf("backup of a removed installation's repository = %d %v, want 409 installation_removed", status, body)
	}
	if status, body := e.call("PATCH", "/api/v1/repositories/"+repoID, "acme-corp", `{"included":true}`); status != 409 || errorCode(t, body) != "installation_removed" {
		t.Fatalf("including a removed installation's repository = %d %v, want 409", status, body)
	}
	if status, _ := e.call("GET", "/api/v1/repositories/"+repoID, "acme-corp", ""); status != 200 {
		t.Fatalf("GET a removed installation's repository = %d, want 200", status)
	}

	e.assertNoSecretLeaks(secrets)

	// Every execution of this flow replays against the current workflow code.
	if n, err := worker.ReplayTaskQueue(context.Background(), e.temporal, e.taskQueue); err != nil || n < 3 {
		t.Fatalf("replayed %d executions: %v", n, err)
	}
}

func TestConnectAccountsWithoutAdminOrWorkspace(t *testing.T) {
	e := newConnectEnv(t)
	bobInst, res := e.connect("acme-corp", "bob")
	if res.Status != "active_partial" {
		t.Fatalf("bob's installation = %+v, want active_partial", res)
	}
	_, detail := e.call("GET", "/api/v1/installations/"+bobInst, "acme-corp", "")
	wss := detail["installation"].(map[string]any)["workspaces"].([]any)
	if len(wss) != 1 {
		t.Fatalf("bob's workspaces = %v", wss)
	}
	ws := wss[0].(map[string]any)
	if ws["slug"] != "acme" || ws["status"] != "no_admin" || ws["webhook_registered"] != false || !strings.Contains(ws["status_reason"].(string), "not an administrator") {
		t.Fatalf("bob's workspace = %v", ws)
	}
	if n := len(e.hooksOf("acme")); n != 0 {
		t.Fatalf("a hook was registered for a non-admin: %d", n)
	}
	if n := detail["installation"].(map[string]any)["repositories"].(map[string]any)["total"].(float64); n != 3 {
		t.Fatalf("bob's repositories = %v, want acme's 3 (listed for scheduled backups)", n)
	}

	carolInst, res := e.connect("acme-corp", "carol")
	if res.Status != "no_workspace" || res.Message != "No Bitbucket Workspace" {
		t.Fatalf("carol's installation = %+v", res)
	}
	_, detail = e.call("GET", "/api/v1/installations/"+carolInst, "acme-corp", "")
	inst := detail["installation"].(map[string]any)
	if inst["status"] != "no_workspace" || inst["status_message"] != "No Bitbucket Workspace" {
		t.Fatalf("carol's installation = %v", inst)
	}
}

func TestCallbackRejectsBadStatesAndDenials(t *testing.T) {
	e := newConnectEnv(t)
	count := func() int {
		_, list := e.call("GET", "/api/v1/installations", "acme-corp", "")
		return len(list["installations"].([]any))
	}

	// Denied at the consent page: shown, nothing created.
	denied := e.consent("acme-corp", "alice", "deny")
	if status, body := e.call("GET", denied, "", ""); status != 400 || errorCode(t, body) != "access_denied" {
		t.Fatalf("denied callback = %d %v", status, body)
	}

	callback := e.consent("acme-corp", "alice", "grant")
	u, _ := url.Parse(callback)
	state := u.Query().Get("state")
	tampered := *u
	q := u.Query()
	q.Set("state", state[:len(state)-2]+"xx")
	tampered.RawQuery = q.Encode()
	foreign := *u
	q = u.Query()
	q.Set("state", "Zm9yZ2Vk.c2lnbmF0dXJl")
	foreign.RawQuery = q.Encode()
	for name, cb := range map[string]string{"tampered": tampered.String(), "foreign": foreign.String()} {
		if status, body := e.call("GET", cb, "", ""); status != 400 || errorCode(t, body) != "invalid_state" {
			t.Fatalf("%s state = %d %v", name, status, body)
		}
	}
	if status, _ := e.call("GET", callback, "", ""); status != 201 {
		t.Fatalf("genuine callback = %d", status)
	}
	// Replayed: the state was used.
	if status, body := e.call("GET", callback, "", ""); status != 400 || errorCode(t, body) != "invalid_state" {
		t.Fatalf("replayed state = %d %v", status, body)
	}
	if n := count(); n != 1 {
		t.Fatalf("installations = %d, want exactly the one genuine callback", n)
	}
	if status, _ := e.call("GET", e.api.URL+"/oauth/bitbucket/callback?code=x", "", ""); status != 400 {
		t.Fatalf("callback without state = %d", status)
	}
}

// A connect link opened in a browser that did not ask for it (someone was sent the link) is
// refused and connects nothing; the client that asked still finishes it, with its binding
// cookie or, from a shell without one, with the tenant's API token.
func TestConnectLinkIsBoundToTheClientThatAsked(t *testing.T) {
	e := newConnectEnv(t)
	count := func(tenant string) int {
		_, list := e.call("GET", "/api/v1/installations", tenant, "")
		return len(list["installations"].([]any))
	}
	callbackPath, _ := url.Parse(e.api.URL + "/oauth/bitbucket/callback")
	boundCookies := func() map[string]*http.Cookie {
		out := map[string]*http.Cookie{}
		for _, c := range e.browser.Jar.Cookies(callbackPath) {
			out[c.Name] = c
		}
		return out
	}
	stranger := func(callback, accept string, cookies ...*http.Cookie) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", callback, nil)
		req.Header.Set("Accept", accept)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(raw)
	}

	// The connect answer sets the binding: HttpOnly, SameSite=Lax, scoped to the callback,
	// expiring with the link.
	req, _ := http.NewRequest("POST", e.api.URL+"/api/v1/installations/bitbucket/connect", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens["acme-corp"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Cookies(); len(cs) != 1 || !strings.HasPrefix(cs[0].Name, "gitsec_connect_") || !cs[0].HttpOnly ||
		cs[0].SameSite != http.SameSiteLaxMode || cs[0].Path != "/oauth/bitbucket/callback" || cs[0].MaxAge <= 0 || cs[0].MaxAge > 15*60 {
		t.Fatalf("connect cookies = %v", resp.Header.Values("Set-Cookie"))
	}

	first := e.consent("acme-corp", "alice", "grant")
	firstBinding := boundCookies()
	if len(firstBinding) != 1 {
		t.Fatalf("browser holds %d binding cookies after one connect", len(firstBinding))
	}
	var c1 *http.Cookie
	for _, c := range firstBinding {
		c1 = c
	}
	second := e.consent("acme-corp", "bob", "grant")
	var c2 *http.Cookie
	for name, c := range boundCookies() {
		if name != c1.Name {
			c2 = c
		}
	}
	if c2 == nil {
		t.Fatal("the second connect set no cookie of its own")
	}

	// Another browser: refused with a clear answer for API clients and for browsers.
	status, _, body := stranger(first, "application/json")
	var parsed map[string]any
	if json.Unmarshal([]byte(body), &parsed); status != 403 || errorCode(t, parsed) != "not_bound" {
		t.Fatalf("callback from another client = %d %s", status, body)
	}
	status, ctype, body := stranger(first, "text/html")
	if status != 403 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "different browser") || !strings.Contains(body, "nothing was connected") {
		t.Fatalf("callback page in another browser = %d %s %s", status, ctype, body)
	}
	// A forged binding, and another link's binding, are refused as well.
	if status, _, body := stranger(first, "application/json", &http.Cookie{Name: c1.Name, Value: "forged"}); status != 403 {
		t.Fatalf("forged binding = %d %s", status, body)
	}
	if status, _, body := stranger(second, "application/json", &http.Cookie{Name: c2.Name, Value: c1.Value}); status != 403 {
		t.Fatalf("another link's binding = %d %s", status, body)
	}
	if n := count("acme-corp"); n != 0 {
		t.Fatalf("refused callbacks stored %d installations", n)
	}

	// The browser that asked finishes the first link: the refusals did not use it up.
	if status, body := e.call("GET", first, "", ""); status != 201 {
		t.Fatalf("callback in the browser that asked = %d %v", status, body)
	}
	if status, body := e.call("GET", first, "", ""); status != 400 || errorCode(t, body) != "invalid_state" {
		t.Fatalf("replayed callback in the browser that asked = %d %v", status, body)
	}

	// The second link, finished from the shell with the tenant's token; another tenant cannot.
	finish := `{"callback_url":` + strconv.Quote(second) + `}`
	if status, body := e.call("POST", "/api/v1/installations/bitbucket/complete", "other-corp", finish); status != 400 || errorCode(t, body) != "invalid_state" {
		t.Fatalf("another tenant completing = %d %v", status, body)
	}
	if status, body := e.call("POST", "/api/v1/installations/bitbucket/complete", "acme-corp", `{"callback_url":"https://example.test/no-state"}`); status != 400 || errorCode(t, body) != "invalid_field" {
		t.Fatalf("complete without a state = %d %v", status, body)
	}
	if status, body := e.call("POST", "/api/v1/installations/bitbucket/complete", "acme-corp", finish); status != 201 || body["installation_id"] == nil {
		t.Fatalf("complete with the tenant's token = %d %v", status, body)
	}
	if status, body := e.call("POST", "/api/v1/installations/bitbucket/complete", "acme-corp", finish); status != 400 || errorCode(t, body) != "invalid_state" {
		t.Fatalf("second complete = %d %v", status, body)
	}
	if a, o := count("acme-corp"), count("other-corp"); a != 2 || o != 0 {
		t.Fatalf("installations: acme-corp %d, other-corp %d; want 2 and 0", a, o)
	}
}

func waitWorkflow(t *testing.T, e *connectEnv, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.temporal.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatalf("workflow %s: %v", id, err)
	}
}

// secretsOf decrypts what GitSec stores for an installation: the OAuth tokens and the webhook
// secrets. None of them may appear anywhere else.
func (e *connectEnv) secretsOf(instID string) []string {
	e.t.Helper()
	ctx := context.Background()
	ten, err := e.store.TenantByName(ctx, "acme-corp")
	if err != nil {
		e.t.Fatal(err)
	}
	id := uuid.MustParse(instID)
	enc, err := e.store.InstallationCredentials(ctx, ten.ID, id)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := providerclient.OpenToken(ctx, e.box, enc)
	if err != nil {
		e.t.Fatal(err)
	}
	secrets := []string{tok.AccessToken, tok.RefreshToken, "consumer-secret-value"}
	wss, err := e.store.ListWorkspaces(ctx, ten.ID, id)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, w := range wss {
		enc, err := e.store.WorkspaceWebhookSecret(ctx, ten.ID, id, w.WebhookUUID)
		if err != nil {
			e.t.Fatal(err)
		}
		s, err := e.box.Decrypt(ctx, enc)
		if err != nil {
			e.t.Fatal(err)
		}
		secrets = append(secrets, string(s))
	}
	for _, s := range secrets {
		if len(s) < 8 {
			e.t.Fatalf("implausible secret %q", s)
		}
	}
	return secrets
}

// assertNoSecretLeaks scans every workflow history of the test's task queue, the captured logs
// and every API response for the secrets.
func (e *connectEnv) assertNoSecretLeaks(secrets []string) {
	e.t.Helper()
	ctx := context.Background()
	var histories bytes.Buffer
	nWorkflows := 0
	var next []byte
	for {
		resp, err := e.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("TaskQueue = %q", e.taskQueue), NextPageToken: next,
		})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, wf := range resp.Executions {
			it := e.temporal.GetWorkflowHistory(ctx, wf.Execution.WorkflowId, wf.Execution.RunId, false, 0)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					e.t.Fatal(err)
				}
				// The wire encoding keeps payload bytes verbatim (JSON would base64 them).
				raw, err := proto.Marshal(ev)
				if err != nil {
					e.t.Fatal(err)
				}
				histories.Write(raw)
			}
			nWorkflows++
		}
		if next = resp.NextPageToken; len(next) == 0 {
			break
		}
	}
	if nWorkflows < 3 {
		e.t.Fatalf("scanned %d workflow histories, want at least onboarding, sync and uninstall", nWorkflows)
	}
	// The scan must be able to see payloads at all: the installation ID is in every input.
	if !strings.Contains(histories.String(), e.lastInstallation) {
		e.t.Fatal("workflow payloads are not readable by the scan; it would miss secrets too")
	}
	for _, s := range secrets {
		for where, text := range map[string]string{"workflow histories": histories.String(), "logs": e.logs.String(), "API responses": e.bodies.String()} {
			if strings.Contains(text, s) {
				e.t.Errorf("a secret (%s...) appears in the %s", s[:4], where)
			}
		}
	}
}
