package bitbucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/oauth2"
)

func TestCloneURL(t *testing.T) {
	c := New(Options{APIBaseURL: "https://api.bitbucket.org", GitBaseURL: "https://bitbucket.org/", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})})
	if got := c.CloneURL("nfalco79", "test-repos"); got != "https://bitbucket.org/nfalco79/test-repos.git" {
		t.Errorf("CloneURL = %s", got)
	}
	if got := c.CloneURL("{470c176d-3574-44ea-bb41-89e8638bcca4}", "repo"); got != "https://bitbucket.org/%7B470c176d-3574-44ea-bb41-89e8638bcca4%7D/repo.git" {
		t.Errorf("CloneURL with uuid = %s", got)
	}
}

func TestGitAuthMasksToken(t *testing.T) {
	c := New(Options{APIBaseURL: "https://api.bitbucket.org", GitBaseURL: "https://bitbucket.org", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccessToken}), GitLimiter: NewLimiter(DefaultGitPerHour, DefaultGitBurst)})
	auth, err := c.GitAuth(context.Background())
	if err != nil {
		t.Fatalf("GitAuth: %v", err)
	}
	if auth.Username != GitTokenUser || auth.Password != testAccessToken {
		t.Errorf("auth = %s / (password %d bytes)", auth.Username, len(auth.Password))
	}
	for _, printed := range []string{auth.String(), fmt.Sprint(auth), fmt.Sprintf("%v", auth), fmt.Sprintf("%s", auth)} {
		if strings.Contains(printed, testAccessToken) || !strings.Contains(printed, GitTokenUser) {
			t.Errorf("printed auth %q must show the user and mask the token", printed)
		}
	}
	var asInterface transport.AuthMethod = auth
	if strings.Contains(fmt.Sprint(asInterface), testAccessToken) {
		t.Error("auth printed through the AuthMethod interface leaks the token")
	}
}

func TestGitAuthRespectsLimiterAndRevocation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := New(Options{APIBaseURL: "https://api.bitbucket.org", GitBaseURL: "https://bitbucket.org", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), GitLimiter: NewLimiter(10, 1)})
	if _, err := c.GitAuth(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	c = New(Options{APIBaseURL: "https://api.bitbucket.org", GitBaseURL: "https://bitbucket.org", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{})})
	if _, err := c.GitAuth(context.Background()); !errors.Is(err, ErrCredentialsRevoked) {
		t.Errorf("err = %v, want ErrCredentialsRevoked for an empty token", err)
	}
}

// TestGitAuthWorksWithGoGit serves a real bare repository through git http-backend behind a
// Basic-auth check and lists its refs with go-git using CloneURL and GitAuth.
func TestGitAuthWorksWithGoGit(t *testing.T) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is required for this test (git http-backend serves the repository): %v", err)
	}
	execPath, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git-http-backend not found at %s: %v", backend, err)
	}

	root := t.TempDir()
	work := filepath.Join(root, "work")
	bare := filepath.Join(root, "repos", "acme", "widgets.git")
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(gitPath, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	run(work, "init", "-q", "-b", "main")
	run(work, "commit", "-q", "--allow-empty", "-m", "first")
	run(work, "tag", "v1")
	run(root, "clone", "-q", "--bare", work, bare)

	var unauthorized atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != GitTokenUser || pass != testAccessToken {
			unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="Bitbucket"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		(&cgi.Handler{
			Path: backend,
			Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "repos"), "GIT_HTTP_EXPORT_ALL=1"},
		}).ServeHTTP(w, r)
	}))
	defer srv.Close()

	c := New(Options{APIBaseURL: srv.URL, GitBaseURL: srv.URL, TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccessToken})})
	auth, err := c.GitAuth(context.Background())
	if err != nil {
		t.Fatalf("GitAuth: %v", err)
	}
	remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.CloneURL("acme", "widgets")}})
	refs, err := remote.ListContext(context.Background(), &git.ListOptions{Auth: auth})
	if err != nil {
		t.Fatalf("ls-remote with GitAuth: %v", err)
	}
	names := map[string]bool{}
	for _, ref := range refs {
		names[ref.Name().String()] = true
	}
	if !names["refs/heads/main"] || !names["refs/tags/v1"] {
		t.Errorf("refs = %v", names)
	}

	// Without credentials the same server refuses, so the test above proves auth was sent.
	if _, err := remote.ListContext(context.Background(), &git.ListOptions{}); err == nil || unauthorized.Load() == 0 {
		t.Errorf("anonymous ls-remote err = %v (unauthorized answers %d), want refusal", err, unauthorized.Load())
	}
}
