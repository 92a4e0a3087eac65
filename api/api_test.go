package api_test

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
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/api"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true, S3: true}))
}

// lockedBuffer collects log output written from handler goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	srv    *httptest.Server
	store  *store.Store
	dbURL  string
	deps   api.Deps
	logs   *lockedBuffer
	tokenA string
	tokenB string
}

func newFixture(t *testing.T, checks ...api.Check) *fixture {
	t.Helper()
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, dbURL: dbURL, logs: &lockedBuffer{}}
	for name, dst := range map[string]*string{"acme": &f.tokenA, "globex": &f.tokenB} {
		ten, err := st.CreateTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if *dst, _, err = st.IssueAPIToken(ctx, ten.ID, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if checks == nil {
		checks = []api.Check{{Name: "postgres", Fn: st.Ping}}
	}
	f.deps = api.Deps{Store: st, Checks: checks, Logger: slog.New(slog.NewJSONHandler(f.logs, nil)), Version: "test"}
	f.serve(t)
	return f
}

// serve (re)starts the API on f.deps, so a test can swap a dependency for one that is down.
func (f *fixture) serve(t *testing.T) {
	t.Helper()
	if f.srv != nil {
		f.srv.Close()
	}
	srv := httptest.NewServer(api.NewHandler(f.deps))
	f.srv = srv
	t.Cleanup(srv.Close)
}

func (f *fixture) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	status, _, out := f.send(t, method, path, token, body, "")
	return status, out
}

// send is do with a caller-chosen X-Request-Id (none when empty) that also returns the raw body.
func (f *fixture) send(t *testing.T, method, path, token, body, requestID string) (int, string, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	checkOpenAPI(t, method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: response is not a JSON object: %q", method, path, raw)
	}
	return resp.StatusCode, string(raw), out
}

// installationA records a pending installation for tenant A (token A) and returns its ID.
func (f *fixture) installationA(t *testing.T) uuid.UUID {
	t.Helper()
	_, me := f.do(t, "GET", "/api/v1/me", f.tokenA, "")
	tenantID := uuid.MustParse(me["tenant"].(map[string]any)["id"].(string))
	instID, err := f.store.CreateInstallation(context.Background(), tenantID, "bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	return instID
}

func errorCode(t *testing.T, body map[string]any) string {
	t.Helper()
	e, ok := body["error"].(map[string]any)
	if !ok {
		t.Fatalf("body has no error object: %v", body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Fatalf("error has no message: %v", body)
	}
	code, _ := e["code"].(string)
	return code
}

func TestHealthz(t *testing.T) {
	f := newFixture(t)
	status, body := f.do(t, "GET", "/healthz", "", "")
	if status != 200 || body["status"] != "ok" {
		t.Fatalf("healthz = %d %v", status, body)
	}
}

func TestAuthentication(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, header string
		want         int
	}{
		{"valid", f.tokenA, 200},
		{"missing", "", 401},
		{"wrong", "gsk_" + strings.Repeat("A", 43), 401},
		{"malformed", "not-a-token", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.do(t, "GET", "/api/v1/me", tc.header, "")
			if status != tc.want {
				t.Fatalf("status = %d, want %d (%v)", status, tc.want, body)
			}
			if tc.want == 401 && errorCode(t, body) != "unauthorized" {
				t.Fatalf("code = %v", body)
			}
			if tc.want == 200 {
				ten := body["tenant"].(map[string]any)
				if ten["name"] != "acme" {
					t.Fatalf("me = %v", body)
				}
			}
		})
	}
	// The other tenant's token sees its own tenant.
	_, body := f.do(t, "GET", "/api/v1/me", f.tokenB, "")
	if body["tenant"].(map[string]any)["name"] != "globex" {
		t.Fatalf("token B resolved to %v", body)
	}
}

func TestOtherTenantNeverSeesRows(t *testing.T) {
	f := newFixture(t)
	status, created := f.do(t, "POST", "/api/v1/tokens", f.tokenA, `{"name":"ci"}`)
	if status != 201 {
		t.Fatalf("create token = %d %v", status, created)
	}
	newToken, _ := created["token"].(string)
	if !strings.HasPrefix(newToken, "gsk_") {
		t.Fatalf("token = %v", created)
	}
	// The new token works for tenant A ...
	if status, body := f.do(t, "GET", "/api/v1/me", newToken, ""); status != 200 || body["tenant"].(map[string]any)["name"] != "acme" {
		t.Fatalf("new token: %d %v", status, body)
	}
	// ... A's audit trail shows the creation without the token, and B sees none of it.
	_, evA := f.do(t, "GET", "/api/v1/audit-events", f.tokenA, "")
	listA := evA["audit_events"].([]any)
	if len(listA) != 1 || listA[0].(map[string]any)["action"] != "api_token.created" {
		t.Fatalf("tenant A audit = %v", evA)
	}
	raw, _ := json.Marshal(evA)
	if strings.Contains(string(raw), newToken) || strings.Contains(string(raw), f.tokenA) {
		t.Fatal("audit events contain a token")
	}
	_, evB := f.do(t, "GET", "/api/v1/audit-events", f.tokenB, "")
	if n := len(evB["audit_events"].([]any)); n != 0 {
		t.Fatalf("tenant B sees %d of tenant A's audit events", n)
	}
}

func TestErrorShapes(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		method, path, body string
		token              bool
		status             int
		code               string
	}{
		{"GET", "/no/such/route", "", false, 404, "not_found"},
		{"GET", "/api/v1/nothing-here", "", true, 404, "not_found"},
		{"DELETE", "/healthz", "", false, 405, "method_not_allowed"},
		{"POST", "/api/v1/tokens", `{"name":`, true, 400, "invalid_json"},
		{"POST", "/api/v1/tokens", `{"nmae":"typo"}`, true, 400, "invalid_json"},
		{"POST", "/api/v1/tokens", `{"name":42}`, true, 400, "invalid_json"},
		{"POST", "/api/v1/tokens", `{"name":"a"} {"name":"b"}`, true, 400, "invalid_json"},
		{"POST", "/api/v1/tokens", ``, true, 400, "invalid_json"},
		{"GET", "/api/v1/audit-events?limit=0", "", true, 400, "invalid_parameter"},
		{"GET", "/api/v1/audit-events?cursor=abc", "", true, 400, "invalid_parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			tok := ""
			if tc.token {
				tok = f.tokenA
			}
			status, body := f.do(t, tc.method, tc.path, tok, tc.body)
			if status != tc.status || errorCode(t, body) != tc.code {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	// Bad input loses nothing: no token was created by the rejected requests.
	_, ev := f.do(t, "GET", "/api/v1/audit-events", f.tokenA, "")
	if n := len(ev["audit_events"].([]any)); n != 0 {
		t.Fatalf("rejected requests wrote %d audit events", n)
	}
}

func TestReadyzReportsEachDependency(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	for _, failing := range []string{"", "postgres", "temporal", "storage"} {
		t.Run("down="+failing, func(t *testing.T) {
			var checks []api.Check
			for _, name := range []string{"postgres", "temporal", "storage"} {
				fn := ok
				if name == failing {
					fn = down
				}
				checks = append(checks, api.Check{Name: name, Fn: fn})
			}
			f := newFixture(t, checks...)
			status, body := f.do(t, "GET", "/readyz", "", "")
			res := body["checks"].(map[string]any)
			if len(res) != 3 {
				t.Fatalf("checks = %v", res)
			}
			if failing == "" {
				if status != 200 || body["status"] != "ok" {
					t.Fatalf("readyz = %d %v", status, body)
				}
				return
			}
			if status != 503 {
				t.Fatalf("readyz = %d, want 503", status)
			}
			for name, r := range res {
				st := r.(map[string]any)["status"]
				if (name == failing) != (st == "down") {
					t.Fatalf("%s status = %v (failing=%s)", name, st, failing)
				}
			}
		})
	}
}

// /readyz is unauthenticated: it shows status words only; the dependency's error (hosts,
// database users) goes to the log.
func TestReadyzHidesDependencyErrors(t *testing.T) {
	const detail = "dial tcp db.internal.example:5432: user=gitsec_admin: connection refused"
	f := newFixture(t,
		api.Check{Name: "postgres", Fn: func(context.Context) error { return errors.New(detail) }},
		api.Check{Name: "temporal", Fn: func(context.Context) error { return nil }},
	)
	status, raw, body := f.send(t, "GET", "/readyz", "", "", "req-readyz")
	if status != 503 || body["status"] != "unavailable" {
		t.Fatalf("readyz = %d %s", status, raw)
	}
	for _, leak := range []string{"db.internal.example", "5432", "gitsec_admin", "connection refused", `"error"`} {
		if strings.Contains(raw, leak) {
			t.Fatalf("readyz body shows %q: %s", leak, raw)
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "readiness check failed") || !strings.Contains(logs, detail) || !strings.Contains(logs, `"check":"postgres"`) {
		t.Fatalf("the failed check's error is not in the log:\n%s", logs)
	}
}

func TestLogsNeverHoldTokens(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/api/v1/me", f.tokenA, "")
	f.do(t, "GET", "/api/v1/me?access_token=secret-in-query", "gsk_"+strings.Repeat("B", 43), "")
	_, created := f.do(t, "POST", "/api/v1/tokens", f.tokenA, `{"name":"x"}`)
	logs := f.logs.String()
	for _, secret := range []string{f.tokenA, strings.Repeat("B", 43), "secret-in-query", created["token"].(string)} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain a secret %q:\n%s", secret[:8], logs)
		}
	}
	if !strings.Contains(logs, `"route":"/api/v1/me"`) || !strings.Contains(logs, `"request_id"`) {
		t.Fatalf("request log lacks route or request id:\n%s", logs)
	}
}

// repositories:bulk matches every pattern against every name, so its input is bounded and a
// request over a bound is refused naming it, before any matching.
func TestBulkInclusionLimits(t *testing.T) {
	f := newFixture(t)
	instID := f.installationA(t)
	path := "/api/v1/installations/" + instID.String() + "/repositories:bulk"
	patterns := func(n, length int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = fmt.Sprintf("ws/%0*d*", length-4, i)
		}
		raw, _ := json.Marshal(p)
		return string(raw)
	}
	cases := []struct {
		name, body string
		status     int
		code, says string
	}{
		{"within the limits", `{"include":` + patterns(100, 256) + `,"exclude":` + patterns(100, 256) + `}`, 200, "", ""},
		{"too many includes", `{"include":` + patterns(101, 10) + `}`, 400, "too_many_patterns", "at most 100"},
		{"too many excludes", `{"exclude":` + patterns(101, 10) + `}`, 400, "too_many_patterns", "at most 100"},
		{"pattern too long", `{"include":` + patterns(1, 257) + `}`, 400, "pattern_too_long", "at most 256"},
		{"body too large", `{"include":` + patterns(100, 256) + `,"exclude":` + patterns(100, 256) + `,"default_included":true` + strings.Repeat(" ", 64<<10) + `}`, 413, "body_too_large", "65536 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.do(t, "POST", path, f.tokenA, tc.body)
			if status != tc.status {
				t.Fatalf("bulk (%d bytes) = %d %v, want %d", len(tc.body), status, body, tc.status)
			}
			if tc.code == "" {
				return
			}
			msg, _ := body["error"].(map[string]any)["message"].(string)
			if errorCode(t, body) != tc.code || !strings.Contains(msg, tc.says) {
				t.Fatalf("bulk = %v, want code %s naming %q", body, tc.code, tc.says)
			}
		})
	}
}
