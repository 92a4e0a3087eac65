package gitmirror_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
)

const testToken = "s3cr3t-token-value"

// authProxy puts Bitbucket-style x-token-auth in front of a source and can
// refuse the upload-pack POSTs with a status, which only the fetch itself
// sends: ls-remote (a GET) still succeeds, so the refusal reaches the engine
// that performs the clone.
func authProxy(t *testing.T, src *gitmirrortest.Source, denyPost int, onPost func(*http.Request)) string {
	t.Helper()
	target, err := url.Parse(src.URL)
	if err != nil {
		t.Fatal(err)
	}
	repoPath := target.Path
	target.Path = ""
	proxy := httputil.NewSingleHostReverseProxy(target)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, repoPath+"/") {
			http.Error(w, "Repository not found", http.StatusNotFound)
			return
		}
		user, pass, ok := r.BasicAuth()
		if !ok || user != "x-token-auth" || pass != testToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "Invalid credentials", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if onPost != nil {
				onPost(r)
			}
			if denyPost != 0 {
				http.Error(w, "refused", denyPost)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(server.Close)
	return server.URL + repoPath
}

func tokenAuth(token string) *githttp.BasicAuth {
	return &githttp.BasicAuth{Username: "x-token-auth", Password: token}
}

func TestFetchWithTokenAuth(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine gitmirror.CloneEngine) {
		src := gitmirrortest.NewSource(t)
		src.Commit("main", "a", "a\n")
		src.Commit("dev", "b", "b\n")
		remote := authProxy(t, src, 0, nil)

		var commands []*exec.Cmd
		restore := gitmirror.OnGitCommand(func(c *exec.Cmd) { commands = append(commands, c) })
		defer restore()

		m := openMirror(t, engine)
		_, err := m.Fetch(context.Background(), remote, tokenAuth("wrong"), nil)
		if !errors.Is(err, transport.ErrAuthenticationRequired) {
			t.Fatalf("fetch with a wrong token: %v, want ErrAuthenticationRequired", err)
		}
		res, err := m.Fetch(context.Background(), remote, tokenAuth(testToken), nil)
		if err != nil {
			t.Fatal(err)
		}
		assertMirrors(t, src, m, res)
		if res.Head != "refs/heads/main" || len(res.NewPacks) != 1 {
			t.Fatalf("head %q packs %d, want refs/heads/main and 1 pack", res.Head, len(res.NewPacks))
		}

		encoded := base64.StdEncoding.EncodeToString([]byte("x-token-auth:" + testToken))
		for _, c := range commands {
			args := strings.Join(c.Args, " ")
			if strings.Contains(args, testToken) || strings.Contains(args, encoded) {
				t.Fatalf("the token is in git's arguments: %q", c.Args)
			}
			if !slicesContain(c.Env, "GIT_CONFIG_VALUE_0=Authorization: Basic "+encoded) {
				t.Errorf("git's environment lacks the authorization header")
			}
			for _, kv := range c.Env {
				if strings.HasPrefix(kv, "GIT_TRACE") {
					t.Errorf("git runs with %s, which could log the header", kv)
				}
			}
		}
	})
}

func slicesContain(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

func TestFetchMissingRepository(t *testing.T) {
	src := gitmirrortest.NewSource(t)
	src.Commit("main", "a", "a\n")
	remote := authProxy(t, src, 0, nil)
	for _, engine := range []gitmirror.CloneEngine{gitmirror.CloneGoGit, gitmirror.CloneGitCLI} {
		m := openMirror(t, engine)
		_, err := m.Fetch(context.Background(), strings.TrimSuffix(remote, "/source.git")+"/missing.git", tokenAuth(testToken), nil)
		if !errors.Is(err, transport.ErrRepositoryNotFound) {
			t.Fatalf("engine %d: fetch of a missing repository: %v, want ErrRepositoryNotFound", engine, err)
		}
	}
}

// The git CLI's failures map onto go-git's transport errors, which the backup
// activities classify, and never carry the token.
func TestGitCLIFetchErrors(t *testing.T) {
	src := gitmirrortest.NewSource(t)
	src.Commit("main", "a", "a\n")
	for _, tc := range []struct {
		status int
		want   error
	}{
		{http.StatusNotFound, transport.ErrRepositoryNotFound},
		{http.StatusUnauthorized, transport.ErrAuthenticationRequired},
		{http.StatusForbidden, transport.ErrAuthorizationFailed},
		{http.StatusInternalServerError, nil},
	} {
		remote := authProxy(t, src, tc.status, nil)
		m := openMirror(t, gitmirror.CloneGitCLI)
		_, err := m.Fetch(context.Background(), remote, tokenAuth(testToken), nil)
		if err == nil {
			t.Fatalf("status %d: fetch succeeded", tc.status)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("status %d: %v, want %v", tc.status, err, tc.want)
		}
		if tc.want == nil && !strings.Contains(err.Error(), "500") {
			t.Errorf("status %d: error %q lacks git's message", tc.status, err)
		}
		encoded := base64.StdEncoding.EncodeToString([]byte("x-token-auth:" + testToken))
		if strings.Contains(err.Error(), testToken) || strings.Contains(err.Error(), encoded) {
			t.Fatalf("status %d: error reveals the token: %v", tc.status, err)
		}
	}
}

// Cancelling the context kills git and its helpers: the server sees the
// connection close and Fetch returns.
func TestGitCLIFetchCancellation(t *testing.T) {
	src := gitmirrortest.NewSource(t)
	src.Commit("main", "a", "a\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remote := authProxy(t, src, 0, func(r *http.Request) {
		cancel()
		// The server notices a closed connection only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
			t.Error("git kept its connection open a minute after the cancellation")
		}
	})
	m := openMirror(t, gitmirror.CloneGitCLI)
	_, err := m.Fetch(ctx, remote, tokenAuth(testToken), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v, want context.Canceled", err)
	}
	if refs, _, err := m.Refs(); err != nil || len(refs) != 0 {
		t.Fatalf("refs after a cancelled clone: %v %v", refs, err)
	}
}
