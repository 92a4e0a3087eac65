package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
)

// browserClient is a cookie-keeping client that does not follow redirects, so each hop of a
// sign-in can be checked.
func browserClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func fetch(t *testing.T, c *http.Client, method, u string, form url.Values, header map[string]string) (*http.Response, string) {
	t.Helper()
	if form == nil {
		return sendBody(t, c, method, u, "", "", header)
	}
	return sendBody(t, c, method, u, "application/x-www-form-urlencoded", form.Encode(), header)
}

// sendBody is fetch with a body of any type ("" for none).
func sendBody(t *testing.T, c *http.Client, method, u, contentType, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func (f *fixture) tenant(t *testing.T, name string) store.Tenant {
	t.Helper()
	ten, err := f.store.TenantByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ten
}

// signIn walks a login link in c and returns the page's CSRF token.
func (f *fixture) signIn(t *testing.T, c *http.Client, tenant, next string) string {
	t.Helper()
	link, _, err := websession.IssueLoginLink(context.Background(), f.store, f.tenant(t, tenant).ID, f.srv.URL, next, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := fetch(t, c, "GET", link, nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != next {
		t.Fatalf("login link = %d -> %q; want 303 -> %q", resp.StatusCode, resp.Header.Get("Location"), next)
	}
	resp, page := fetch(t, c, "GET", f.srv.URL+next, nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s after sign-in = %d", next, resp.StatusCode)
	}
	m := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return m[1]
}

func TestDashboardRoutesRedirectToSignInWithoutASession(t *testing.T) {
	f := newFixture(t)
	c := browserClient()
	for _, p := range []string{"/", "/repositories/add-provider", "/repositories/bitbucket", "/repositories/bitbucket/" + uuid.NewString(),
		"/activity", "/restores", "/audit-log", "/settings/api-tokens", "/api-docs"} {
		resp, _ := fetch(t, c, "GET", f.srv.URL+p+"?x=1", nil, nil)
		want := "/signin?next=" + url.QueryEscape(p+"?x=1")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Errorf("GET %s without a session = %d -> %q; want 303 -> %q", p, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	// A forged or stale cookie is no session either.
	u, _ := url.Parse(f.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: websession.CookieName, Value: "forged"}})
	if resp, _ := fetch(t, c, "GET", f.srv.URL+"/activity", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("forged cookie: GET /activity = %d; want 303", resp.StatusCode)
	}
	if resp, _ := fetch(t, c, "GET", f.srv.URL+"/api/v1/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged cookie: GET /api/v1/me = %d; want 401", resp.StatusCode)
	}
}

func TestLoginLinkSignsInOnceAndSetsAStrictCookie(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	link, expires, err := websession.IssueLoginLink(ctx, f.store, f.tenant(t, "acme").ID, f.srv.URL, "/activity", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("link expires in %s; want 10 minutes", d)
	}
	c := browserClient()
	resp, _ := fetch(t, c, "GET", link, nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/activity" {
		t.Fatalf("login link = %d -> %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var sc string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, websession.CookieName+"=") {
			sc = v
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Lax", "Max-Age=43200", "Path=/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("session cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, "Secure") {
		t.Errorf("session cookie %q is Secure on plain HTTP (the browser would drop it)", sc)
	}
	// The same link again, in another browser: refused.
	resp, page := fetch(t, browserClient(), "GET", link, nil, nil)
	if resp.StatusCode != http.StatusGone || !strings.Contains(page, "already used") {
		t.Errorf("second use of a login link = %d %q; want 410 naming why", resp.StatusCode, page)
	}
	// An expired link is refused too.
	old, _, err := websession.IssueLoginLink(ctx, f.store, f.tenant(t, "acme").ID, f.srv.URL, "/", time.Now().Add(-11*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := fetch(t, browserClient(), "GET", old, nil, nil); resp.StatusCode != http.StatusGone {
		t.Errorf("expired login link = %d; want 410", resp.StatusCode)
	}
	if _, _, err := websession.IssueLoginLink(ctx, f.store, f.tenant(t, "acme").ID, f.srv.URL, "https://evil.example/", time.Now()); err == nil {
		t.Error("a login link to another host was issued")
	}
}

func TestSessionNeedsTheCSRFTokenToChangeAnything(t *testing.T) {
	f := newFixture(t)
	c := browserClient()
	token := f.signIn(t, c, "acme", "/settings/api-tokens")
	if resp, body := fetch(t, c, "GET", f.srv.URL+"/api/v1/me", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `"name":"acme"`) {
		t.Fatalf("GET /api/v1/me with the session = %d %s", resp.StatusCode, body)
	}
	post := func(header map[string]string) (*http.Response, string) {
		return sendBody(t, c, "POST", f.srv.URL+"/api/v1/tokens", "application/json", `{"name":"from-browser"}`, header)
	}
	for name, h := range map[string]map[string]string{"none": nil, "wrong": {"X-CSRF-Token": "x" + token}} {
		resp, body := post(h)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"code":"csrf_failed"`) {
			t.Errorf("POST /api/v1/tokens with %s CSRF token = %d %s; want 403 csrf_failed", name, resp.StatusCode, body)
		}
	}
	resp, body := post(map[string]string{"X-CSRF-Token": token})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens with the CSRF token = %d %s", resp.StatusCode, body)
	}
	// The audit log names the session, not a token.
	_, events := f.do(t, "GET", "/api/v1/audit-events", f.tokenA, "")
	first := events["audit_events"].([]any)[0].(map[string]any)
	if first["action"] != "api_token.created" || first["actor"] != "dashboard:login_link" {
		t.Errorf("newest audit event = %v; want api_token.created by dashboard:login_link", first)
	}
}

func TestSignOutEndsTheSessionEverywhere(t *testing.T) {
	f := newFixture(t)
	c := browserClient()
	token := f.signIn(t, c, "acme", "/")
	if resp, _ := fetch(t, c, "POST", f.srv.URL+"/signout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without the CSRF token = %d; want 403", resp.StatusCode)
	}
	resp, _ := fetch(t, c, "POST", f.srv.URL+"/signout", url.Values{"csrf_token": {token}}, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		t.Fatalf("sign-out = %d -> %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := fetch(t, c, "GET", f.srv.URL+"/repositories/bitbucket", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("dashboard after sign-out = %d; want 303 to sign-in", resp.StatusCode)
	}
	if resp, _ := fetch(t, c, "GET", f.srv.URL+"/api/v1/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API after sign-out = %d; want 401", resp.StatusCode)
	}
}

func TestSignInFormTakesAnAPITokenWithItsOwnCSRFCheck(t *testing.T) {
	f := newFixture(t)
	c := browserClient()
	resp, page := fetch(t, c, "GET", f.srv.URL+"/signin?next=/activity", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("sign-in page = %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form token on the sign-in page:\n%s", page)
	}
	// Another site posting its own token into this browser (login CSRF) has no form token.
	if resp, _ := fetch(t, browserClient(), "POST", f.srv.URL+"/signin", url.Values{"token": {f.tokenB}, "next": {"/"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the form token = %d; want 403", resp.StatusCode)
	}
	resp, page = fetch(t, c, "POST", f.srv.URL+"/signin", url.Values{"token": {"gsk_not-a-token"}, "next": {"/activity"}, "csrf_token": {m[1]}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "not valid") {
		t.Errorf("sign-in with a bad token = %d; want 401 with a reason", resp.StatusCode)
	}
	m = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindStringSubmatch(page)
	resp, _ = fetch(t, c, "POST", f.srv.URL+"/signin", url.Values{"token": {f.tokenA}, "next": {"https://evil.example/"}, "csrf_token": {m[1]}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign-in with a good token and a foreign next = %d -> %q; want 303 -> /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := fetch(t, c, "GET", f.srv.URL+"/api/v1/me", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `"name":"acme"`) {
		t.Errorf("API with the new session = %d %s", resp.StatusCode, body)
	}
}

func TestDashboardPagesAndAssetsCarryTheirHeaders(t *testing.T) {
	f := newFixture(t)
	c := browserClient()
	f.signIn(t, c, "acme", "/")
	resp, page := fetch(t, c, "GET", f.srv.URL+"/repositories/bitbucket", nil, nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows inline script or eval", csp)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("page Cache-Control = %q; want no-store", resp.Header.Get("Cache-Control"))
	}
	if strings.Contains(page, "<script>") {
		t.Error("the page has an inline script")
	}
	m := regexp.MustCompile(`src="(/assets/app\.[0-9a-f]{12}\.js)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no hashed script on the page:\n%s", page)
	}
	resp, _ = fetch(t, http.DefaultClient, "GET", f.srv.URL+m[1], nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("GET %s = %d, Cache-Control %q, Content-Type %q", m[1], resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"))
	}
	if resp, _ := fetch(t, http.DefaultClient, "GET", f.srv.URL+"/assets/app.000000000000.js", nil, nil); resp.StatusCode != 404 {
		t.Errorf("unknown asset = %d; want 404", resp.StatusCode)
	}
}

func TestAnotherTenantsRepositoryPageIsNotFound(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	instID := f.installationA(t)
	repoID, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: f.tenant(t, "acme").ID, InstallationID: instID, ProviderUUID: "{r1}", FullName: "acme/api"})
	if err != nil {
		t.Fatal(err)
	}
	own := browserClient()
	f.signIn(t, own, "acme", "/")
	if resp, _ := fetch(t, own, "GET", f.srv.URL+"/repositories/bitbucket/"+repoID.String(), nil, nil); resp.StatusCode != 200 {
		t.Errorf("own repository page = %d; want 200", resp.StatusCode)
	}
	other := browserClient()
	f.signIn(t, other, "globex", "/")
	if resp, _ := fetch(t, other, "GET", f.srv.URL+"/repositories/bitbucket/"+repoID.String(), nil, nil); resp.StatusCode != 404 {
		t.Errorf("another tenant's repository page = %d; want 404", resp.StatusCode)
	}
	if resp, _ := fetch(t, other, "GET", f.srv.URL+"/api/v1/repositories/"+repoID.String(), nil, nil); resp.StatusCode != 404 {
		t.Errorf("another tenant's repository through the session = %d; want 404", resp.StatusCode)
	}
}
