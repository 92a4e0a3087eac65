package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func authorize(t *testing.T, s *Server, user, decision, state string) *url.URL {
	t.Helper()
	form := url.Values{"user": {user}, "decision": {decision}, "client_id": {"demo-key"}, "response_type": {"code"}, "state": {state}}
	resp, err := noRedirect.PostForm(s.URL()+"/site/oauth2/authorize", form)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("bad Location: %v", err)
	}
	return loc
}

func tokenRequest(t *testing.T, s *Server, form url.Values, basic bool) (int, tokenResp, string) {
	t.Helper()
	if !basic {
		form.Set("client_id", "demo-key")
		form.Set("client_secret", "demo-secret")
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/site/oauth2/access_token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth("demo-key", "demo-secret")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tr tokenResp
	_ = json.Unmarshal(b, &tr)
	return resp.StatusCode, tr, string(b)
}

func TestOAuthCodeFlowRefreshAndExpiry(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed(), AccessTokenTTL: 2 * time.Second})

	resp, err := http.Get(s.URL() + "/site/oauth2/authorize?client_id=demo-key&response_type=code&state=xyz")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Grant access") || !strings.Contains(string(page), "carol") {
		t.Fatalf("consent page: %d %s", resp.StatusCode, page)
	}

	denied := authorize(t, s, "alice", "deny", "xyz")
	if denied.Query().Get("error") != "access_denied" || denied.Query().Get("state") != "xyz" || denied.Query().Get("error_description") == "" {
		t.Errorf("deny redirect = %s", denied)
	}

	loc := authorize(t, s, "alice", "grant", "st-1")
	if !strings.HasPrefix(loc.String(), "http://127.0.0.1:8080/oauth/bitbucket/callback?") || loc.Query().Get("state") != "st-1" {
		t.Fatalf("grant redirect = %s", loc)
	}
	code := loc.Query().Get("code")
	status, tr, body := tokenRequest(t, s, url.Values{"grant_type": {"authorization_code"}, "code": {code}}, true)
	if status != http.StatusOK || tr.AccessToken == "" || tr.RefreshToken == "" || tr.TokenType != "bearer" ||
		tr.ExpiresIn != 2 || tr.State != "authorization_code" || tr.Scopes != "account repository pullrequest webhook" {
		t.Fatalf("code exchange: %d %s", status, body)
	}
	user := getJSON(t, s.URL()+"/2.0/user", tr.AccessToken)
	if user["username"] != "alice" {
		t.Errorf("/2.0/user = %v", user["username"])
	}
	if status, _, _ := tokenRequest(t, s, url.Values{"grant_type": {"authorization_code"}, "code": {code}}, true); status != http.StatusBadRequest {
		t.Errorf("code reuse: %d, want 400", status)
	}

	// Refresh with form client credentials: a new refresh token, the old one dies.
	status, tr2, body := tokenRequest(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}}, false)
	if status != http.StatusOK || tr2.RefreshToken == "" || tr2.RefreshToken == tr.RefreshToken || tr2.AccessToken == tr.AccessToken {
		t.Fatalf("refresh: %d %s", status, body)
	}
	if status, _, _ := tokenRequest(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}}, false); status != http.StatusBadRequest {
		t.Errorf("old refresh token: %d, want 400", status)
	}
	if status, _, _ := tokenRequest(t, s, url.Values{"grant_type": {"password"}}, true); status != http.StatusBadRequest {
		t.Errorf("unsupported grant: %d, want 400", status)
	}

	// Expiry: poll until the short-lived token is refused with Bitbucket's message.
	var expiredBody []byte
	waitFor(t, "access token expiry", func() bool {
		st, b := do(t, http.MethodGet, s.URL()+"/2.0/user", tr2.AccessToken, nil)
		expiredBody = b
		return st == http.StatusUnauthorized
	})
	if !strings.Contains(string(expiredBody), "Access token expired.") {
		t.Errorf("expired token body = %s", expiredBody)
	}
	host := strings.TrimPrefix(s.URL(), "http://")
	runGitExpectFail(t, "", "ls-remote", "http://x-token-auth:"+tr2.AccessToken+"@"+host+"/acme/api.git")
	// The rotated refresh token still works after the access token expired.
	if status, _, body := tokenRequest(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr2.RefreshToken}}, true); status != http.StatusOK {
		t.Errorf("refresh after expiry: %d %s", status, body)
	}
}
