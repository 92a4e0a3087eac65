package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const testAccessToken = "test-access-token-must-not-leak"

// recordingSleeper replaces the client's sleep so tests observe backoff decisions without
// waiting for them.
type recordingSleeper struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recordingSleeper) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *recordingSleeper) recorded() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.delays...)
}

type testClientConfig struct {
	tokens  oauth2.TokenSource
	limiter *Limiter
	logs    *bytes.Buffer
	mutate  func(*Options)
}

func newTestClient(t *testing.T, srv *httptest.Server, cfg testClientConfig) (*Client, *recordingSleeper) {
	t.Helper()
	if cfg.tokens == nil {
		cfg.tokens = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccessToken})
	}
	handler := slog.DiscardHandler
	if cfg.logs != nil {
		handler = slog.NewTextHandler(cfg.logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	opts := Options{
		APIBaseURL:  srv.URL,
		GitBaseURL:  "https://git.example.test",
		TokenSource: cfg.tokens,
		HTTPClient:  srv.Client(),
		Limiter:     cfg.limiter,
		Logger:      slog.New(handler),
		MaxAttempts: 5,
		BaseBackoff: time.Second,
		MaxBackoff:  30 * time.Second,
	}
	if cfg.mutate != nil {
		cfg.mutate(&opts)
	}
	c := New(opts)
	sleeper := &recordingSleeper{}
	c.sleep = sleeper.sleep
	return c, sleeper
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeRateLimited mimics Bitbucket's 429: text/plain, 46 bytes, no Retry-After.
func writeRateLimited(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = io.WriteString(w, "Rate limit for this resource has been exceeded")
}

var testUser = map[string]any{"type": "user", "uuid": "{87bb15eb-47c1-49b3-9f16-ca824a2979a4}", "display_name": "Brad", "account_id": "557058:1"}

func requireBearer(t *testing.T, r *http.Request, want string) bool {
	t.Helper()
	if got := r.Header.Get("Authorization"); got != "Bearer "+want {
		t.Errorf("%s %s: Authorization = %q, want bearer %q", r.Method, r.URL.Path, got, want)
		return false
	}
	return true
}

func TestRateLimitStormWithoutRetryAfterRecovers(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) <= 3 {
			writeRateLimited(w)
			return
		}
		requireBearer(t, r, testAccessToken)
		writeJSON(w, http.StatusOK, testUser)
	}))
	defer srv.Close()
	var logs bytes.Buffer
	c, sleeper := newTestClient(t, srv, testClientConfig{limiter: NewLimiter(100, 10), logs: &logs})

	user, err := c.CurrentUser(context.Background())
	if err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if user.UUID != testUser["uuid"] {
		t.Errorf("uuid = %q", user.UUID)
	}
	if got := requests.Load(); got != 4 {
		t.Errorf("server saw %d requests, want 4 (3 throttled + 1)", got)
	}
	delays := sleeper.recorded()
	if len(delays) != 3 {
		t.Fatalf("slept %d times, want 3", len(delays))
	}
	for i, d := range delays {
		ceiling := time.Second << i
		if d < 0 || d > ceiling {
			t.Errorf("delay %d = %v, want full jitter within [0, %v]", i+1, d, ceiling)
		}
	}
	if !strings.Contains(logs.String(), "retrying") || strings.Contains(logs.String(), testAccessToken) {
		t.Errorf("logs should record retries without the token:\n%s", logs.String())
	}
}

func TestRateLimitStormGivesUpAfterMaxAttempts(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		writeRateLimited(w)
	}))
	defer srv.Close()
	c, sleeper := newTestClient(t, srv, testClientConfig{})

	_, err := c.CurrentUser(context.Background())
	if !errors.Is(err, ErrRateLimited) || !IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ErrRateLimited", err)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Message != "Rate limit for this resource has been exceeded" {
		t.Errorf("APIError = %+v", apiErr)
	}
	if got := requests.Load(); got != 5 {
		t.Errorf("server saw %d requests, want MaxAttempts = 5", got)
	}
	if got := len(sleeper.recorded()); got != 4 {
		t.Errorf("slept %d times, want 4", got)
	}
}

func TestRateLimitStormNeverExceedsLimiterBudget(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		writeRateLimited(w)
	}))
	defer srv.Close()
	// Five requests per hour, four of them as burst: the fifth has to wait about an hour,
	// which the context's deadline does not allow, so the limiter refuses at once.
	limiter := NewLimiter(5, 4)
	c, _ := newTestClient(t, srv, testClientConfig{limiter: limiter, mutate: func(o *Options) { o.MaxAttempts = 20 }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := c.CurrentUser(ctx)
	if !errors.Is(err, ErrRateLimited) || !IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable ErrRateLimited once the local budget is spent", err)
	}
	if got := requests.Load(); got != 4 {
		t.Errorf("server saw %d requests, want exactly the limiter budget of 4", got)
	}

	// A second client for the same credential shares the bucket and sends nothing.
	registry := NewLimiterRegistry(5, 4)
	shared := registry.For("installation-1")
	if registry.For("installation-1") != shared || registry.For("installation-2") == shared {
		t.Fatal("registry must hand out one limiter per credential")
	}
	requests.Store(0)
	first, _ := newTestClient(t, srv, testClientConfig{limiter: shared, mutate: func(o *Options) { o.MaxAttempts = 3 }})
	second, _ := newTestClient(t, srv, testClientConfig{limiter: shared, mutate: func(o *Options) { o.MaxAttempts = 3 }})
	_, _ = first.CurrentUser(ctx)
	_, _ = second.CurrentUser(ctx)
	if got := requests.Load(); got != 4 {
		t.Errorf("two clients sharing a credential sent %d requests, want the shared budget of 4", got)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.Header().Set("Retry-After", "7")
			writeRateLimited(w)
			return
		}
		writeJSON(w, http.StatusOK, testUser)
	}))
	defer srv.Close()
	c, sleeper := newTestClient(t, srv, testClientConfig{})
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if delays := sleeper.recorded(); len(delays) != 1 || delays[0] != 7*time.Second {
		t.Errorf("delays = %v, want exactly the 7s Retry-After", delays)
	}
}

func TestRetryAfterBeyondLimitIsReturned(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Retry-After", "3600")
		writeRateLimited(w)
	}))
	defer srv.Close()
	c, sleeper := newTestClient(t, srv, testClientConfig{})
	_, err := c.CurrentUser(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.RetryAfter != time.Hour || !IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable APIError with RetryAfter 1h", err)
	}
	if requests.Load() != 1 || len(sleeper.recorded()) != 0 {
		t.Errorf("requests/sleeps = %d/%d, want 1/0", requests.Load(), len(sleeper.recorded()))
	}
}

func TestServerErrorThenSuccess(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch requests.Add(1) {
		case 1:
			writeJSON(w, http.StatusBadGateway, map[string]any{"type": "error", "error": map[string]any{"message": "bad gateway"}})
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			writeJSON(w, http.StatusOK, testUser)
		}
	}))
	defer srv.Close()
	c, sleeper := newTestClient(t, srv, testClientConfig{})
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if requests.Load() != 3 || len(sleeper.recorded()) != 2 {
		t.Errorf("requests/sleeps = %d/%d, want 3/2", requests.Load(), len(sleeper.recorded()))
	}
}

func TestPostIsNotRetriedOnServerError(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	_, err := c.CreateWorkspaceHook(context.Background(), "ws", HookRequest{URL: "https://hooks.example/bb", Events: []string{EventRepoPush}})
	if !errors.Is(err, ErrServer) {
		t.Fatalf("err = %v, want ErrServer", err)
	}
	if requests.Load() != 1 {
		t.Errorf("a POST was sent %d times after a 500; it may have been applied", requests.Load())
	}
}

func TestTransportFailureIsRetried(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			// Drop the connection without an answer.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		writeJSON(w, http.StatusOK, testUser)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser after a dropped connection: %v", err)
	}
	if requests.Load() != 2 {
		t.Errorf("requests = %d, want 2", requests.Load())
	}
}

func TestErrorKinds(t *testing.T) {
	notFound := readFixture(t, "rest/error_repository_not_found.json")
	gone := []byte(`{"type":"error","error":{"message":"CHANGE-2770 - Functionality has been deprecated","detail":"Please read the changelog entry for more details.","data":{"announcement_url":"https://developer.atlassian.com/cloud/bitbucket/changelog#CHANGE-2770"}}}`)
	scope := []byte(`{"type":"error","error":{"message":"Your credentials lack one or more required privilege scopes.","detail":{"granted":["account"],"required":["webhook"]}}}`)
	cases := []struct {
		status      int
		body        []byte
		want        error
		wantMessage string
		wantDetail  string
	}{
		{http.StatusNotFound, notFound, ErrNotFound, "Repository dev/null not found", ""},
		{http.StatusGone, gone, ErrGone, "CHANGE-2770 - Functionality has been deprecated", "Please read the changelog entry for more details."},
		{http.StatusForbidden, scope, ErrForbidden, "Your credentials lack one or more required privilege scopes.", `{"granted":["account"],"required":["webhook"]}`},
		{http.StatusBadRequest, []byte("<html>proxy error</html>"), nil, "<html>proxy error</html>", ""},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			}))
			defer srv.Close()
			c, _ := newTestClient(t, srv, testClientConfig{})
			_, err := c.GetRepository(context.Background(), "dev", "null")
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.want)
			}
			for _, other := range []error{ErrNotFound, ErrGone, ErrForbidden, ErrCredentialsRevoked, ErrRateLimited, ErrServer} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("err also matches %v", other)
				}
			}
			if apiErr.Status != tc.status || apiErr.Message != tc.wantMessage || apiErr.Detail != tc.wantDetail {
				t.Errorf("APIError = %+v", apiErr)
			}
			if apiErr.Method != http.MethodGet || apiErr.Path != "/2.0/repositories/dev/null" {
				t.Errorf("method/path = %s %s", apiErr.Method, apiErr.Path)
			}
			if IsRetryable(err) || requests.Load() != 1 {
				t.Errorf("a %d must not be retried (requests %d)", tc.status, requests.Load())
			}
			if strings.Contains(err.Error(), testAccessToken) {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
}

func TestGoneIsNeverAnEmptyList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusGone, map[string]any{"type": "error", "error": map[string]any{"message": "CHANGE-2770 - Functionality has been deprecated"}})
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	repos, err := c.ListRepositories(context.Background(), "ws")
	if !errors.Is(err, ErrGone) || repos != nil {
		t.Fatalf("repos/err = %v/%v, want nil and ErrGone", repos, err)
	}
}

func TestPaginationAcrossManyPages(t *testing.T) {
	const total, pagelen = 1000, 100
	var requests atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path != "/2.0/repositories/acme" {
			t.Errorf("unexpected path %s", r.URL.Path)
		}
		if got := r.URL.Query().Get("pagelen"); got != strconv.Itoa(pagelen) {
			t.Errorf("pagelen = %q, want %d", got, pagelen)
		}
		page := 1
		if p := r.URL.Query().Get("page"); p != "" {
			page, _ = strconv.Atoi(p)
		}
		values := []map[string]any{}
		for i := (page - 1) * pagelen; i < page*pagelen && i < total; i++ {
			values = append(values, map[string]any{
				"type": "repository", "uuid": fmt.Sprintf("{00000000-0000-0000-0000-%012d}", i),
				"full_name": fmt.Sprintf("acme/repo-%d", i), "slug": fmt.Sprintf("repo-%d", i), "name": fmt.Sprintf("repo-%d", i),
			})
		}
		body := map[string]any{"pagelen": pagelen, "page": page, "size": total, "values": values}
		if page*pagelen < total {
			body["next"] = fmt.Sprintf("%s/2.0/repositories/acme?pagelen=%d&page=%d", srv.URL, pagelen, page+1)
		}
		writeJSON(w, http.StatusOK, body)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{limiter: NewLimiter(DefaultRESTPerHour, DefaultRESTBurst)})

	repos, err := c.ListRepositories(context.Background(), "acme")
	if err != nil {
		t.Fatalf("ListRepositories: %v", err)
	}
	if len(repos) != total || requests.Load() != total/pagelen {
		t.Fatalf("got %d repositories in %d requests, want %d in %d", len(repos), requests.Load(), total, total/pagelen)
	}
	for i, r := range repos {
		if want := fmt.Sprintf("{00000000-0000-0000-0000-%012d}", i); r.UUID != want {
			t.Fatalf("repository %d uuid = %s, want %s", i, r.UUID, want)
		}
	}

	// The walk form stops as soon as the callback says so.
	requests.Store(0)
	stop := errors.New("enough")
	seen := 0
	err = c.WalkRepositories(context.Background(), "acme", func(Repository) error {
		seen++
		if seen == 150 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || requests.Load() != 2 {
		t.Errorf("walk err/requests = %v/%d, want the callback's error after 2 pages", err, requests.Load())
	}
}

func TestNextLinkToAnotherHostIsRefused(t *testing.T) {
	var foreignRequests atomic.Int32
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreignRequests.Add(1)
		writeJSON(w, http.StatusOK, map[string]any{"pagelen": 1, "values": []any{}})
	}))
	defer foreign.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"pagelen": 1, "values": []any{testUser}, "next": foreign.URL + "/2.0/steal"})
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	if _, err := c.ListRepositories(context.Background(), "ws"); err == nil || !strings.Contains(err.Error(), "not the API host") {
		t.Fatalf("err = %v, want refusal of a foreign next link", err)
	}
	if foreignRequests.Load() != 0 {
		t.Error("the bearer token was sent to a foreign host")
	}
}

func TestBodyWithoutValuesIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"pagelen": 10})
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	if _, err := c.ListUserWorkspaces(context.Background()); err == nil || !strings.Contains(err.Error(), "no values") {
		t.Fatalf("err = %v, want a not-a-page error", err)
	}
}

func TestNextLinkLoopIsDetected(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"pagelen": 1, "values": []any{}, "next": srv.URL + "/2.0/user/workspaces?page=2"})
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	if _, err := c.ListUserWorkspaces(context.Background()); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("err = %v, want loop detection", err)
	}
}

func TestListUserWorkspacesUsesTheSurvivingEndpoint(t *testing.T) {
	page := readFixture(t, "rest/openapi-examples/user_workspaces_page.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/2.0/user/workspaces" {
			writeJSON(w, http.StatusGone, map[string]any{"type": "error", "error": map[string]any{"message": "CHANGE-2770"}})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(page)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	workspaces, err := c.ListUserWorkspaces(context.Background())
	if err != nil {
		t.Fatalf("ListUserWorkspaces: %v", err)
	}
	if len(workspaces) != 1 || !workspaces[0].Administrator || workspaces[0].Workspace.Slug != "bbworkspace1" {
		t.Errorf("workspaces = %+v", workspaces)
	}
}

func TestPullRequestQueryAndPaths(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.EscapedPath(); got != "/2.0/repositories/%7B470c176d-3574-44ea-bb41-89e8638bcca4%7D/my-repo/pullrequests" {
			t.Errorf("path = %s", got)
		}
		q := r.URL.Query()
		if states := q["state"]; strings.Join(states, ",") != "OPEN,MERGED,DECLINED,SUPERSEDED" {
			t.Errorf("state params = %v", states)
		}
		if q.Get("q") != `updated_on > 2026-01-01T00:00:00+00:00` || q.Get("sort") != "-updated_on" || q.Get("pagelen") != "50" {
			t.Errorf("query = %v", q)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(readFixture(t, "rest/pullrequests_page_5_open.json"))
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	prs, err := c.ListPullRequests(context.Background(), "{470c176d-3574-44ea-bb41-89e8638bcca4}", "my-repo", PullRequestQuery{
		States: AllPullRequestStates, Q: `updated_on > 2026-01-01T00:00:00+00:00`, Sort: "-updated_on",
	})
	if err != nil {
		t.Fatalf("ListPullRequests: %v", err)
	}
	if len(prs) != 5 {
		t.Errorf("got %d pull requests", len(prs))
	}
}

func TestDiffstatFollowsRedirectWithAuthorization(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requireBearer(t, r, testAccessToken)
		if strings.HasSuffix(r.URL.Path, "/pullrequests/7/diffstat") {
			http.Redirect(w, r, "/2.0/repositories/ws/repo/diffstat/ws/repo:abc%0Ddef?from_pullrequest_id=7", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(readFixture(t, "rest/pullrequest_diffstat_page.json"))
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	stats, err := c.PullRequestDiffstat(context.Background(), "ws", "repo", 7)
	if err != nil {
		t.Fatalf("PullRequestDiffstat: %v", err)
	}
	if len(stats) != 1 || stats[0].New == nil || stats[0].New.Path != "CONTRIBUTING.md" {
		t.Errorf("diffstat = %+v", stats)
	}
}

func TestHookCreateSendsSecretButNeverPrintsIt(t *testing.T) {
	const secret = "hook-secret-value"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/2.0/workspaces/acme/hooks" {
			t.Errorf("request = %s %s", r.Method, r.URL.Path)
		}
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body["secret"] != secret || body["url"] != "https://gitsec.example/webhooks/bitbucket" || body["active"] != true {
			t.Errorf("body = %v", body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(readFixture(t, "rest/hook_created.json"))
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	s := secret
	req := HookRequest{Description: "GitSec", URL: "https://gitsec.example/webhooks/bitbucket", Active: true, Events: []string{EventRepoPush}, Secret: &s}
	hook, err := c.CreateWorkspaceHook(context.Background(), "acme", req)
	if err != nil {
		t.Fatalf("CreateWorkspaceHook: %v", err)
	}
	if !hook.SecretSet || hook.UUID != "{202cf34e-7ccf-44b7-ba6b-8827a14d5324}" {
		t.Errorf("hook = %+v", hook)
	}
	for _, printed := range []string{fmt.Sprint(req), fmt.Sprintf("%+v", req), fmt.Sprintf("%#v", req), req.String()} {
		if strings.Contains(printed, secret) {
			t.Errorf("secret printed: %s", printed)
		}
	}
}

func TestHookUpdateAndDelete(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		switch r.Method {
		case http.MethodPut:
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			if _, present := body["secret"]; present {
				t.Errorf("update without Secret must leave it unchanged (omit the field): %v", body)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(readFixture(t, "rest/hook_created.json"))
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	uid := "{202cf34e-7ccf-44b7-ba6b-8827a14d5324}"
	if _, err := c.UpdateRepositoryHook(context.Background(), "amuniz", "test-repos", uid, HookRequest{URL: "https://x", Active: false, Events: []string{EventRepoPush}}); err != nil {
		t.Fatalf("UpdateRepositoryHook: %v", err)
	}
	if err := c.DeleteRepositoryHook(context.Background(), "amuniz", "test-repos", uid); err != nil {
		t.Fatalf("DeleteRepositoryHook: %v", err)
	}
	want := []string{
		"PUT /2.0/repositories/amuniz/test-repos/hooks/%7B202cf34e-7ccf-44b7-ba6b-8827a14d5324%7D",
		"DELETE /2.0/repositories/amuniz/test-repos/hooks/%7B202cf34e-7ccf-44b7-ba6b-8827a14d5324%7D",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

func TestCanceledContextStopsBeforeSending(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		writeJSON(w, http.StatusOK, testUser)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{limiter: NewLimiter(100, 10)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.CurrentUser(ctx)
	if !errors.Is(err, context.Canceled) || IsRetryable(err) {
		t.Fatalf("err = %v, want context.Canceled, not retryable", err)
	}
	if requests.Load() != 0 {
		t.Errorf("sent %d requests with a canceled context", requests.Load())
	}
}

func TestCancelDuringBackoffStops(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		writeRateLimited(w)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv, testClientConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return sleepContext(ctx, d)
	}
	_, err := c.CurrentUser(ctx)
	if !errors.Is(err, context.Canceled) || requests.Load() != 1 {
		t.Fatalf("err/requests = %v/%d, want context.Canceled after 1 request", err, requests.Load())
	}
}

func TestConfigurationErrorsAreReported(t *testing.T) {
	c := New(Options{APIBaseURL: "not a url", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})})
	if _, err := c.CurrentUser(context.Background()); err == nil || !strings.Contains(err.Error(), "scheme and host") {
		t.Errorf("err = %v", err)
	}
	c = New(Options{APIBaseURL: "https://api.bitbucket.org"})
	if _, err := c.CurrentUser(context.Background()); err == nil || !strings.Contains(err.Error(), "token source") {
		t.Errorf("err = %v", err)
	}
	// A base given with /2.0 must not produce /2.0/2.0 paths.
	c = New(Options{APIBaseURL: "https://api.bitbucket.org/2.0/", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})})
	u, err := c.resolve("/2.0/user", nil)
	if err != nil || u.String() != "https://api.bitbucket.org/2.0/user" {
		t.Errorf("resolve = %v, %v", u, err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		"120":                           2 * time.Minute,
		"Fri, 01 May 2026 12:00:30 GMT": 30 * time.Second,
		"Fri, 01 May 2026 11:00:00 GMT": 0,
		"soon":                          0,
	}
	for header, want := range cases {
		if got := parseRetryAfter(header, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestBackoffIsBoundedFullJitter(t *testing.T) {
	c := New(Options{APIBaseURL: "https://api.example", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), BaseBackoff: time.Second, MaxBackoff: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	var ceilings []time.Duration
	c.jitter = func(ceiling time.Duration) time.Duration {
		ceilings = append(ceilings, ceiling)
		return ceiling
	}
	c.sleep = func(context.Context, time.Duration) error { return nil }
	for attempt := 1; attempt <= 6; attempt++ {
		if err := c.backoff(context.Background(), "GET", "/x", attempt, 429, 0); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if fmt.Sprint(ceilings) != fmt.Sprint(want) {
		t.Errorf("ceilings = %v, want %v", ceilings, want)
	}
	for i := 0; i < 1000; i++ {
		if d := fullJitter(time.Second); d < 0 || d > time.Second {
			t.Fatalf("fullJitter out of range: %v", d)
		}
	}
}
