package bitbucket

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/oauth2"
)

// requestLog records what a client reports through Options.OnRequest.
type requestLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *requestLog) record(kind, class string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, kind+"/"+class)
}

func (l *requestLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen)
}

func TestOnRequestSeesEveryRESTAttempt(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/2.0/user":
			// Two failures, then the answer: three requests for one call.
			switch calls.Add(1) {
			case 1:
				writeRateLimited(w)
			case 2:
				w.WriteHeader(http.StatusBadGateway)
			default:
				writeJSON(w, http.StatusOK, testUser)
			}
		default:
			writeJSON(w, http.StatusNotFound, map[string]any{"type": "error", "error": map[string]any{"message": "no"}})
		}
	}))
	defer srv.Close()
	log := &requestLog{}
	c, _ := newTestClient(t, srv, testClientConfig{mutate: func(o *Options) { o.OnRequest = log.record }})
	ctx := context.Background()
	if _, err := c.CurrentUser(ctx); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if _, err := c.GetRepository(ctx, "acme", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRepository err = %v, want ErrNotFound", err)
	}
	want := []string{"rest/4xx", "rest/5xx", "rest/2xx", "rest/4xx"}
	if got := log.all(); !slices.Equal(got, want) {
		t.Fatalf("observed %v, want %v", got, want)
	}

	// No answer at all is an error, once per attempt.
	srv.Close()
	log.seen = nil
	c, _ = newTestClient(t, srv, testClientConfig{mutate: func(o *Options) { o.OnRequest = log.record; o.MaxAttempts = 2 }})
	if _, err := c.CurrentUser(ctx); err == nil {
		t.Fatal("CurrentUser against a closed server succeeded")
	}
	if got := log.all(); !slices.Equal(got, []string{"rest/error", "rest/error"}) {
		t.Fatalf("observed %v, want two errors", got)
	}
}

// refreshingTokens is a TokenRefresher whose refresh hands out the next token.
type refreshingTokens struct {
	mu      sync.Mutex
	current string
	next    string
}

func (r *refreshingTokens) Token() (*oauth2.Token, error) {
	return r.TokenContext(context.Background())
}

func (r *refreshingTokens) TokenContext(context.Context) (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &oauth2.Token{AccessToken: r.current}, nil
}

func (r *refreshingTokens) ForceRefresh(context.Context, string) (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = r.next
	return &oauth2.Token{AccessToken: r.current}, nil
}

func TestOnRequestSeesEveryGitOperation(t *testing.T) {
	// A git host that rejects the first token and then fails with 502: go-git reports the 401 as
	// a sentinel and the 502 as an UnexpectedError around *githttp.Err.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pass, _ := r.BasicAuth(); pass != "fresh" {
			w.Header().Set("WWW-Authenticate", `Basic realm="Bitbucket"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	log := &requestLog{}
	tokens := &refreshingTokens{current: "stale", next: "fresh"}
	c := New(Options{APIBaseURL: srv.URL, GitBaseURL: srv.URL, TokenSource: tokens, OnRequest: log.record})
	remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.CloneURL("acme", "widgets")}})
	err := c.WithGitAuth(context.Background(), func(auth *githttp.BasicAuth) error {
		_, err := remote.ListContext(context.Background(), &git.ListOptions{Auth: auth})
		return err
	})
	if err == nil {
		t.Fatal("ls-remote against a failing host succeeded")
	}
	if got, want := log.all(), []string{"git/4xx", "git/5xx"}; !slices.Equal(got, want) {
		t.Fatalf("observed %v, want %v (err %v)", got, want, err)
	}
}

func TestGitClass(t *testing.T) {
	status := func(code int) error {
		return plumbing.NewUnexpectedError(&githttp.Err{Response: &http.Response{StatusCode: code, Request: &http.Request{}}})
	}
	cases := []struct {
		err  error
		want string
	}{
		{nil, "2xx"},
		{git.NoErrAlreadyUpToDate, "2xx"},
		{fmt.Errorf("fetch: %w", transport.ErrEmptyRemoteRepository), "2xx"},
		{fmt.Errorf("fetch: %w: rejected", transport.ErrAuthenticationRequired), "4xx"},
		{fmt.Errorf("%w: %w", ErrForbidden, transport.ErrAuthorizationFailed), "4xx"},
		{fmt.Errorf("ls-remote: %w", transport.ErrRepositoryNotFound), "4xx"},
		{status(503), "5xx"},
		{fmt.Errorf("fetch: %w", status(429)), "4xx"},
		{status(302), "3xx"},
		{context.DeadlineExceeded, "error"},
		{errors.New("write pack: no space left on device"), "error"},
	}
	for _, tc := range cases {
		if got := gitClass(tc.err); got != tc.want {
			t.Errorf("gitClass(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	for code, want := range map[int]string{0: "error", 101: "error", 200: "2xx", 204: "2xx", 301: "3xx", 410: "4xx", 599: "5xx", 600: "error"} {
		if got := RequestClass(code); got != want {
			t.Errorf("RequestClass(%d) = %s, want %s", code, got, want)
		}
	}
}

func TestLimiterRegistryRemaining(t *testing.T) {
	var nilRegistry *LimiterRegistry
	if got := nilRegistry.Remaining(); got != nil {
		t.Fatalf("nil registry Remaining = %v", got)
	}
	reg := NewLimiterRegistry(1000, 20)
	if got := reg.Remaining(); len(got) != 0 {
		t.Fatalf("fresh registry Remaining = %v", got)
	}
	l := reg.For("inst-a")
	reg.For("inst-b")
	for range 5 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := reg.Remaining()
	// Refill is 980/hour: well under one token in the milliseconds this test takes.
	if len(got) != 2 || got["inst-a"] < 15 || got["inst-a"] > 15.5 || got["inst-b"] < 20 || got["inst-b"] > 20 {
		t.Fatalf("Remaining = %v, want inst-a ~15 and inst-b 20", got)
	}
}

// Every Event* constant of this package must be a known key, or its deliveries would be
// counted as "other"; and every known key must be one DecodeEvent understands.
func TestKnownEventKeyCoversEveryEventConstant(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "webhook.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	constants := 0
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Values) != 1 || !strings.HasPrefix(spec.Names[0].Name, "Event") {
			return true
		}
		lit, ok := spec.Values[0].(*ast.BasicLit)
		if !ok {
			return true
		}
		key, _ := strconv.Unquote(lit.Value)
		constants++
		if !KnownEventKey(key) {
			t.Errorf("%s = %q is not a KnownEventKey", spec.Names[0].Name, key)
		}
		return true
	})
	if constants != len(eventKeys) {
		t.Errorf("webhook.go declares %d event constants, KnownEventKey knows %d", constants, len(eventKeys))
	}
	for key := range eventKeys {
		if _, err := DecodeEvent(key, []byte(`{}`)); errors.Is(err, ErrUnknownEvent) {
			t.Errorf("DecodeEvent does not understand known key %s", key)
		}
	}
	for _, key := range []string{"", "repo:pushed", "issue:created", "REPO:PUSH"} {
		if KnownEventKey(key) {
			t.Errorf("KnownEventKey(%q) = true", key)
		}
	}
}
