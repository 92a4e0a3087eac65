package bitbucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const (
	testConsumerKey    = "consumer-key"
	testConsumerSecret = "consumer-secret-must-not-leak"
)

// fakeBitbucket serves the OAuth token endpoint and a /2.0/user endpoint that accepts only
// the access tokens it considers current. Each refresh rotates the refresh token.
type fakeBitbucket struct {
	t *testing.T

	mu            sync.Mutex
	refreshToken  string
	validAccess   map[string]bool
	generation    int
	refreshCalls  atomic.Int32
	apiCalls      atomic.Int32
	rejectRefresh bool
	revokeAll     bool // the API rejects every token, as after the user revoked the consumer
}

func newFakeBitbucket(t *testing.T, refreshToken string) (*fakeBitbucket, *httptest.Server) {
	f := &fakeBitbucket{t: t, refreshToken: refreshToken, validAccess: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /site/oauth2/access_token", f.token)
	mux.HandleFunc("GET /2.0/user", f.user)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeBitbucket) token(w http.ResponseWriter, r *http.Request) {
	f.refreshCalls.Add(1)
	user, pass, ok := r.BasicAuth()
	if !ok || user != testConsumerKey || pass != testConsumerSecret {
		f.t.Errorf("token endpoint: client credentials not sent as basic auth (%q)", user)
	}
	if err := r.ParseForm(); err != nil {
		f.t.Errorf("parse form: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var ok2 bool
	switch r.PostForm.Get("grant_type") {
	case "refresh_token":
		ok2 = !f.rejectRefresh && r.PostForm.Get("refresh_token") == f.refreshToken
	case "authorization_code":
		ok2 = r.PostForm.Get("code") == "the-code"
	}
	if !ok2 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error_description": "Invalid refresh_token", "error": "invalid_grant"}`))
		return
	}
	f.generation++
	access := fmt.Sprintf("access-%d", f.generation)
	f.refreshToken = fmt.Sprintf("refresh-%d", f.generation)
	f.validAccess = map[string]bool{access: true}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": access, "token_type": "bearer", "expires_in": 7200,
		"refresh_token": f.refreshToken, "scopes": "account repository",
	})
}

func (f *fakeBitbucket) user(w http.ResponseWriter, r *http.Request) {
	f.apiCalls.Add(1)
	f.mu.Lock()
	valid := !f.revokeAll && f.validAccess[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	f.mu.Unlock()
	if !valid {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"type": "error", "error": map[string]any{"message": "Access token expired."}})
		return
	}
	writeJSON(w, http.StatusOK, testUser)
}

// expire invalidates the current access token server-side, as Bitbucket does after 2 hours.
func (f *fakeBitbucket) expire() {
	f.mu.Lock()
	f.validAccess = map[string]bool{}
	f.mu.Unlock()
}

type persistedTokens struct {
	mu     sync.Mutex
	tokens []*oauth2.Token
	fail   error
}

func (p *persistedTokens) persist(_ context.Context, tok *oauth2.Token) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.tokens = append(p.tokens, tok)
	return nil
}

func (p *persistedTokens) all() []*oauth2.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*oauth2.Token(nil), p.tokens...)
}

func newTokenSourceFor(srv *httptest.Server, tok *oauth2.Token, store *persistedTokens) *PersistingTokenSource {
	cfg := OAuthConfig(testConsumerKey, testConsumerSecret, srv.URL+"/site/oauth2/", "https://gitsec.example/oauth/callback")
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())
	return NewPersistingTokenSource(ctx, cfg, tok, store.persist)
}

func TestOAuthConfigEndpoints(t *testing.T) {
	cfg := OAuthConfig("key", "secret", "https://bitbucket.org/site/oauth2/", "https://gitsec.example/cb")
	if cfg.Endpoint.AuthURL != "https://bitbucket.org/site/oauth2/authorize" ||
		cfg.Endpoint.TokenURL != "https://bitbucket.org/site/oauth2/access_token" ||
		cfg.Endpoint.AuthStyle != oauth2.AuthStyleInHeader || len(cfg.Scopes) != 0 {
		t.Errorf("config = %+v", cfg.Endpoint)
	}
	authURL := cfg.AuthCodeURL("state-1")
	if !strings.HasPrefix(authURL, "https://bitbucket.org/site/oauth2/authorize?") ||
		!strings.Contains(authURL, "client_id=key") || !strings.Contains(authURL, "response_type=code") || !strings.Contains(authURL, "state=state-1") {
		t.Errorf("auth URL = %s", authURL)
	}
}

func TestExchangeCode(t *testing.T) {
	fake, srv := newFakeBitbucket(t, "unused")
	cfg := OAuthConfig(testConsumerKey, testConsumerSecret, srv.URL+"/site/oauth2", "")
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())
	tok, err := ExchangeCode(ctx, cfg, "the-code")
	if err != nil {
		t.Fatalf("ExchangeCode: %v", err)
	}
	if tok.AccessToken != "access-1" || tok.RefreshToken != "refresh-1" {
		t.Errorf("token = %s / %s", tok.AccessToken, tok.RefreshToken)
	}
	if left := time.Until(tok.Expiry); left < 119*time.Minute || left > 121*time.Minute {
		t.Errorf("expiry in %v, want about 2h", left)
	}
	if _, err := ExchangeCode(ctx, cfg, "wrong-code"); !errors.Is(err, ErrCredentialsRevoked) {
		t.Errorf("bad code err = %v, want ErrCredentialsRevoked", err)
	}
	if fake.refreshCalls.Load() != 2 {
		t.Errorf("token endpoint calls = %d", fake.refreshCalls.Load())
	}
}

func TestExpiredTokenIsRefreshedTransparently(t *testing.T) {
	fake, srv := newFakeBitbucket(t, "refresh-0")
	store := &persistedTokens{}
	expired := &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(-time.Minute)}
	tokens := newTokenSourceFor(srv, expired, store)
	c, _ := newTestClient(t, srv, testClientConfig{tokens: tokens})

	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if fake.refreshCalls.Load() != 1 || fake.apiCalls.Load() != 1 {
		t.Errorf("refreshes/api calls = %d/%d, want 1/1 (refresh before the request)", fake.refreshCalls.Load(), fake.apiCalls.Load())
	}
	persisted := store.all()
	if len(persisted) != 1 || persisted[0].AccessToken != "access-1" || persisted[0].RefreshToken != "refresh-1" {
		t.Fatalf("persisted = %+v, want the rotated token once", persisted)
	}

	// A token about to expire (inside the margin) is refreshed too, with the rotated refresh token.
	tokens.now = func() time.Time { return time.Now().Add(2*time.Hour - DefaultRefreshMargin/2) }
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser near expiry: %v", err)
	}
	if persisted := store.all(); len(persisted) != 2 || persisted[1].RefreshToken != "refresh-2" {
		t.Errorf("second refresh not persisted with the newest refresh token: %+v", persisted)
	}

	// A valid token is not refreshed again.
	tokens.now = time.Now
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if fake.refreshCalls.Load() != 2 {
		t.Errorf("refreshes = %d, want 2", fake.refreshCalls.Load())
	}
}

func TestUnauthorizedForcesOneRefresh(t *testing.T) {
	fake, srv := newFakeBitbucket(t, "refresh-0")
	store := &persistedTokens{}
	// The token looks valid locally, but the server has already expired it.
	tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(time.Hour)}, store)
	c, _ := newTestClient(t, srv, testClientConfig{tokens: tokens})

	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if fake.apiCalls.Load() != 2 || fake.refreshCalls.Load() != 1 || len(store.all()) != 1 {
		t.Errorf("api calls/refreshes/persists = %d/%d/%d, want 2/1/1", fake.apiCalls.Load(), fake.refreshCalls.Load(), len(store.all()))
	}

	fake.expire()
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser after server-side expiry: %v", err)
	}
	if got := store.all(); len(got) != 2 || got[1].RefreshToken != "refresh-2" {
		t.Errorf("persisted = %d tokens, want the second rotation kept", len(got))
	}
}

func TestRevokedCredentials(t *testing.T) {
	t.Run("401 after refresh", func(t *testing.T) {
		fake, srv := newFakeBitbucket(t, "refresh-0")
		fake.revokeAll = true
		tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(time.Hour)}, &persistedTokens{})
		c, _ := newTestClient(t, srv, testClientConfig{tokens: tokens})
		_, err := c.CurrentUser(context.Background())
		if !errors.Is(err, ErrCredentialsRevoked) || IsRetryable(err) {
			t.Fatalf("err = %v, want non-retryable ErrCredentialsRevoked", err)
		}
		if fake.apiCalls.Load() != 2 || fake.refreshCalls.Load() != 1 {
			t.Errorf("api calls/refreshes = %d/%d, want exactly one refresh and one retry", fake.apiCalls.Load(), fake.refreshCalls.Load())
		}
		assertNoSecrets(t, err, "access-0", "access-1", "refresh-0", "refresh-1", testConsumerSecret)
	})
	t.Run("refresh token rejected", func(t *testing.T) {
		fake, srv := newFakeBitbucket(t, "refresh-0")
		fake.rejectRefresh = true
		tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(-time.Hour)}, &persistedTokens{})
		c, _ := newTestClient(t, srv, testClientConfig{tokens: tokens})
		_, err := c.CurrentUser(context.Background())
		if !errors.Is(err, ErrCredentialsRevoked) || IsRetryable(err) {
			t.Fatalf("err = %v, want non-retryable ErrCredentialsRevoked", err)
		}
		if fake.apiCalls.Load() != 0 {
			t.Errorf("API called %d times without a valid token", fake.apiCalls.Load())
		}
		assertNoSecrets(t, err, "access-0", "refresh-0", testConsumerSecret)
	})
	t.Run("static token without refresher", func(t *testing.T) {
		_, srv := newFakeBitbucket(t, "refresh-0")
		c, _ := newTestClient(t, srv, testClientConfig{})
		if _, err := c.CurrentUser(context.Background()); !errors.Is(err, ErrCredentialsRevoked) {
			t.Fatalf("err = %v, want ErrCredentialsRevoked", err)
		}
	})
}

func assertNoSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v", err), s) {
			t.Errorf("error leaks %q: %v", s, err)
		}
	}
}

func TestPersistFailureFailsAndIsRetriedWithoutRefreshingAgain(t *testing.T) {
	fake, srv := newFakeBitbucket(t, "refresh-0")
	store := &persistedTokens{fail: errors.New("database down")}
	tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(-time.Minute)}, store)

	if _, err := tokens.TokenContext(context.Background()); err == nil || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("err = %v, want the persist failure", err)
	}
	store.mu.Lock()
	store.fail = nil
	store.mu.Unlock()
	tok, err := tokens.Token()
	if err != nil {
		t.Fatalf("Token after persist recovered: %v", err)
	}
	if tok.AccessToken != "access-1" || fake.refreshCalls.Load() != 1 {
		t.Errorf("token/refreshes = %s/%d, want the first refresh's token and no second refresh", tok.AccessToken, fake.refreshCalls.Load())
	}
	if got := store.all(); len(got) != 1 || got[0].RefreshToken != "refresh-1" {
		t.Errorf("persisted = %+v", got)
	}
}

func TestConcurrentRejectionsRefreshOnce(t *testing.T) {
	fake, srv := newFakeBitbucket(t, "refresh-0")
	store := &persistedTokens{}
	tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(time.Hour)}, store)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := tokens.ForceRefresh(context.Background(), "access-0")
			if err == nil && tok.AccessToken != "access-1" {
				err = fmt.Errorf("got token %s", tok.AccessToken)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if fake.refreshCalls.Load() != 1 || len(store.all()) != 1 {
		t.Errorf("refreshes/persists = %d/%d, want 1/1: a rotating refresh token must not be spent twice", fake.refreshCalls.Load(), len(store.all()))
	}
}

func TestTokenSourceWaitRespectsContext(t *testing.T) {
	_, srv := newFakeBitbucket(t, "refresh-0")
	tokens := newTokenSourceFor(srv, &oauth2.Token{AccessToken: "a", Expiry: time.Now().Add(time.Hour)}, &persistedTokens{})
	tokens.sem <- struct{}{} // a refresh in progress elsewhere
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tokens.TokenContext(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	<-tokens.sem
	if _, err := NewPersistingTokenSource(context.Background(), OAuthConfig("k", "s", srv.URL, ""), nil, nil).Token(); !errors.Is(err, ErrCredentialsRevoked) {
		t.Errorf("empty token source err = %v, want ErrCredentialsRevoked", err)
	}
}
