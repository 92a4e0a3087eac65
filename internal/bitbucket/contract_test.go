package bitbucket_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
)

// The contract tests run the production client against the Bitbucket emulator: same code
// path, only the base URLs differ.

const (
	contractConsumerKey    = "contract-key"
	contractConsumerSecret = "contract-secret"
)

func contractSeed() *emulator.Seed {
	comments := 2
	return &emulator.Seed{
		Users: []emulator.SeedUser{{Username: "alice", DisplayName: "Alice Anders"}, {Username: "bob", DisplayName: "Bob Berg"}},
		Consumers: []emulator.Consumer{{Key: contractConsumerKey, Secret: contractConsumerSecret, Name: "contract",
			CallbackURL: "http://127.0.0.1:1/callback"}},
		Workspaces: []emulator.SeedWorkspace{{
			Slug: "acme", Name: "Acme", Admins: []string{"alice"}, Members: []string{"bob"},
			Repositories: []emulator.SeedRepository{
				{Slug: "api", Description: "API", Language: "go",
					Generate: &emulator.Generate{Commits: 12, Branches: 2, Tags: 2, PullRequests: 3, CommentsPerPR: &comments}},
				{Slug: "empty", Description: "Nothing pushed yet"},
			},
		}},
	}
}

type contractEnv struct {
	emu  *emulator.Server
	base string
}

func startEmulator(t *testing.T) *contractEnv {
	t.Helper()
	return startEmulatorSeed(t, contractSeed())
}

func startEmulatorSeed(t *testing.T, seed *emulator.Seed) *contractEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen:  "127.0.0.1:0",
		DataDir: t.TempDir(),
		Seed:    seed,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		cancel()
		t.Fatalf("start Bitbucket emulator: %v", err)
	}
	t.Cleanup(func() {
		// Close before cancelling: Close waits for the state save, which must finish before
		// the temporary directory is removed.
		if err := emu.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
		cancel()
	})
	return &contractEnv{emu: emu, base: emu.URL()}
}

func (e *contractEnv) admin(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		payload, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, e.base+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("emulator admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("emulator admin %s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("decode emulator admin answer: %v", err)
		}
	}
}

func (e *contractEnv) issueToken(t *testing.T, user string, scopes ...string) *oauth2.Token {
	t.Helper()
	var raw struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int    `json:"expires_in"`
	}
	request := map[string]any{"user": user, "consumer": contractConsumerKey}
	if len(scopes) > 0 {
		request["scopes"] = scopes
	}
	e.admin(t, http.MethodPost, "/_emulator/tokens", request, &raw)
	if raw.AccessToken == "" || raw.RefreshToken == "" {
		t.Fatalf("emulator issued no token: %+v", raw)
	}
	return &oauth2.Token{AccessToken: raw.AccessToken, RefreshToken: raw.RefreshToken, TokenType: "bearer",
		Expiry: time.Now().Add(time.Duration(raw.ExpiresIn) * time.Second)}
}

type tokenStore struct {
	mu     sync.Mutex
	tokens []*oauth2.Token
}

func (s *tokenStore) persist(_ context.Context, tok *oauth2.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, tok)
	return nil
}

func (s *tokenStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tokens)
}

func (e *contractEnv) client(t *testing.T, tok *oauth2.Token, store *tokenStore) (*bitbucket.Client, *bitbucket.PersistingTokenSource) {
	t.Helper()
	cfg := bitbucket.OAuthConfig(contractConsumerKey, contractConsumerSecret, e.base+"/site/oauth2", "http://127.0.0.1:1/callback")
	tokens := bitbucket.NewPersistingTokenSource(context.Background(), cfg, tok, store.persist)
	return bitbucket.New(bitbucket.Options{
		APIBaseURL:  e.base,
		GitBaseURL:  e.base,
		TokenSource: tokens,
		// The production budget (1,000/hour, burst 20) would pace this test at one call per
		// 3.6 s after the burst; the contract is about shapes, so give it room.
		Limiter:     bitbucket.NewLimiter(100000, 1000),
		GitLimiter:  bitbucket.NewLimiter(bitbucket.DefaultGitPerHour, bitbucket.DefaultGitBurst),
		Logger:      slog.New(slog.DiscardHandler),
		MaxAttempts: 4,
		BaseBackoff: time.Millisecond,
		MaxBackoff:  10 * time.Millisecond,
	}), tokens
}

func TestContractDiscoveryAndExport(t *testing.T) {
	env := startEmulator(t)
	store := &tokenStore{}
	c, _ := env.client(t, env.issueToken(t, "alice"), store)
	ctx := context.Background()

	me, err := c.CurrentUser(ctx)
	if err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if !strings.HasPrefix(me.UUID, "{") || me.DisplayName != "Alice Anders" {
		t.Errorf("current user = %+v", me)
	}

	workspaces, err := c.ListUserWorkspaces(ctx)
	if err != nil {
		t.Fatalf("ListUserWorkspaces: %v", err)
	}
	if len(workspaces) != 1 || workspaces[0].Workspace.Slug != "acme" || !workspaces[0].Administrator {
		t.Fatalf("workspaces = %+v", workspaces)
	}

	repos, err := c.ListRepositories(ctx, "acme")
	if err != nil {
		t.Fatalf("ListRepositories: %v", err)
	}
	slugs := []string{}
	for _, r := range repos {
		slugs = append(slugs, r.Slug)
		if !strings.HasPrefix(r.UUID, "{") || r.FullName != "acme/"+r.Slug || len(r.Raw) == 0 {
			t.Errorf("repository = %+v", r)
		}
	}
	sort.Strings(slugs)
	if strings.Join(slugs, ",") != "api,empty" {
		t.Fatalf("repositories = %v", slugs)
	}

	repo, err := c.GetRepository(ctx, "acme", "api")
	if err != nil {
		t.Fatalf("GetRepository: %v", err)
	}
	if repo.MainBranch == nil || repo.MainBranch.Name == "" || repo.CloneLink("https") == "" {
		t.Errorf("repository mainbranch/clone = %+v / %v", repo.MainBranch, repo.Links.Clone)
	}
	byUUID, err := c.GetRepository(ctx, workspaces[0].Workspace.UUID, repo.UUID)
	if err != nil || byUUID.UUID != repo.UUID {
		t.Errorf("GetRepository by brace UUIDs = %v, %v", byUUID, err)
	}
	if _, err := c.GetRepository(ctx, "acme", "does-not-exist"); !errors.Is(err, bitbucket.ErrNotFound) {
		t.Errorf("missing repository err = %v, want ErrNotFound", err)
	}

	branches, err := c.ListBranches(ctx, "acme", "api")
	if err != nil {
		t.Fatalf("ListBranches: %v", err)
	}
	tags, err := c.ListTags(ctx, "acme", "api")
	if err != nil {
		t.Fatalf("ListTags: %v", err)
	}
	if len(branches) < 3 || len(tags) != 2 {
		t.Errorf("branches/tags = %d/%d", len(branches), len(tags))
	}

	prs, err := c.ListPullRequests(ctx, "acme", "api", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates, Sort: "-updated_on"})
	if err != nil {
		t.Fatalf("ListPullRequests: %v", err)
	}
	if len(prs) != 3 {
		t.Fatalf("got %d pull requests, want 3", len(prs))
	}
	for _, listed := range prs {
		pr, err := c.GetPullRequest(ctx, "acme", "api", listed.ID)
		if err != nil {
			t.Fatalf("GetPullRequest %d: %v", listed.ID, err)
		}
		if pr.ID != listed.ID || pr.Source.Branch.Name == "" || pr.Destination.Commit == nil {
			t.Errorf("pull request %d = %+v", listed.ID, pr)
		}
		comments, err := c.ListPullRequestComments(ctx, "acme", "api", pr.ID)
		if err != nil {
			t.Fatalf("ListPullRequestComments %d: %v", pr.ID, err)
		}
		if len(comments) != 2 {
			t.Errorf("pull request %d has %d comments, want 2", pr.ID, len(comments))
		}
		activity, err := c.ListPullRequestActivity(ctx, "acme", "api", pr.ID)
		if err != nil {
			t.Fatalf("ListPullRequestActivity %d: %v", pr.ID, err)
		}
		if len(activity) == 0 {
			t.Errorf("pull request %d has no activity", pr.ID)
		}
		for _, a := range activity {
			if a.Kind() == "" {
				t.Errorf("activity entry of an unknown kind: %s", a.Raw)
			}
		}
		if _, err := c.ListPullRequestCommits(ctx, "acme", "api", pr.ID); err != nil {
			t.Errorf("ListPullRequestCommits %d: %v", pr.ID, err)
		}
		if _, err := c.PullRequestDiffstat(ctx, "acme", "api", pr.ID); err != nil {
			t.Errorf("PullRequestDiffstat %d: %v", pr.ID, err)
		}
	}

	// Git over HTTPS with the same credential: the refs match the REST view.
	auth, err := c.GitAuth(ctx)
	if err != nil {
		t.Fatalf("GitAuth: %v", err)
	}
	remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.CloneURL("acme", "api")}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		t.Fatalf("ls-remote %s: %v", c.CloneURL("acme", "api"), err)
	}
	gitRefs := map[string]string{}
	for _, ref := range refs {
		gitRefs[ref.Name().String()] = ref.Hash().String()
	}
	for _, b := range branches {
		if gitRefs["refs/heads/"+b.Name] != b.Target.Hash {
			t.Errorf("branch %s: git %s, REST %s", b.Name, gitRefs["refs/heads/"+b.Name], b.Target.Hash)
		}
	}
	if store.count() != 0 {
		t.Errorf("persisted %d tokens without any refresh", store.count())
	}
}

func TestContractTokenRefreshAndRevocation(t *testing.T) {
	env := startEmulator(t)
	store := &tokenStore{}
	tok := env.issueToken(t, "alice")
	tok.Expiry = time.Now().Add(-time.Minute) // locally expired: the client must refresh first
	c, tokens := env.client(t, tok, store)
	ctx := context.Background()

	if _, err := c.CurrentUser(ctx); err != nil {
		t.Fatalf("CurrentUser with an expired token: %v", err)
	}
	if store.count() != 1 {
		t.Fatalf("persisted %d tokens, want the refreshed one", store.count())
	}
	fresh, err := tokens.TokenContext(ctx)
	if err != nil || fresh.RefreshToken == tok.RefreshToken {
		t.Errorf("refresh token not rotated (err %v)", err)
	}

	env.admin(t, http.MethodPost, "/_emulator/users/alice/revoke-tokens", nil, nil)
	_, err = c.CurrentUser(ctx)
	if !errors.Is(err, bitbucket.ErrCredentialsRevoked) || bitbucket.IsRetryable(err) {
		t.Fatalf("after revocation err = %v, want ErrCredentialsRevoked", err)
	}
	if strings.Contains(err.Error(), fresh.AccessToken) || strings.Contains(err.Error(), fresh.RefreshToken) {
		t.Errorf("error leaks a token: %v", err)
	}
}

// Git answers decide like REST ones: a 401 gets one forced refresh and a retry, and only a
// second 401 means revoked; a 403 is the repository's and says forbidden, not revoked.
func TestContractGitAuthRefreshesOnceAndTellsForbiddenFromRevoked(t *testing.T) {
	env := startEmulator(t)
	store := &tokenStore{}
	c, _ := env.client(t, env.issueToken(t, "alice"), store)
	ctx := context.Background()
	lsRemote := func(slug string) error {
		return c.WithGitAuth(ctx, func(auth *githttp.BasicAuth) error {
			remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.CloneURL("acme", slug)}})
			_, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
			return err
		})
	}

	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "4xx", "status": 401, "path": "/acme/api.git/*", "count": 1}, nil)
	if err := lsRemote("api"); err != nil {
		t.Fatalf("ls-remote through one 401: %v", err)
	}
	if store.count() != 1 {
		t.Fatalf("persisted %d tokens, want the one the forced refresh issued", store.count())
	}

	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "4xx", "status": 403, "path": "/acme/api.git/*"}, nil)
	err := lsRemote("api")
	if !errors.Is(err, bitbucket.ErrForbidden) || errors.Is(err, bitbucket.ErrCredentialsRevoked) || !errors.Is(err, transport.ErrAuthorizationFailed) {
		t.Fatalf("ls-remote with a 403: %v, want ErrForbidden (and not revoked)", err)
	}
	if err := lsRemote("empty"); err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		t.Fatalf("ls-remote of another repository beside the 403: %v", err)
	}
	env.admin(t, http.MethodDelete, "/_emulator/faults", nil, nil)

	env.admin(t, http.MethodPost, "/_emulator/users/alice/revoke-tokens", nil, nil)
	if err := lsRemote("api"); !errors.Is(err, bitbucket.ErrCredentialsRevoked) || errors.Is(err, bitbucket.ErrForbidden) {
		t.Fatalf("ls-remote after revocation: %v, want ErrCredentialsRevoked", err)
	}
}

func TestContractRateLimitFaults(t *testing.T) {
	env := startEmulator(t)
	c, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "429", "method": "GET", "path": "/2.0/repositories/acme", "count": 2}, nil)
	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "5xx", "status": 502, "method": "GET", "path": "/2.0/user", "count": 1}, nil)

	if _, err := c.ListRepositories(context.Background(), "acme"); err != nil {
		t.Fatalf("ListRepositories through two 429s: %v", err)
	}
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser through a 502: %v", err)
	}
	var faults struct {
		Rules []struct {
			Kind  string `json:"kind"`
			Fired int    `json:"fired"`
		} `json:"rules"`
	}
	env.admin(t, http.MethodGet, "/_emulator/faults", nil, &faults)
	fired := 0
	for _, r := range faults.Rules {
		fired += r.Fired
	}
	if fired != 3 {
		t.Errorf("faults fired %d times, want 3 (the client retried through each)", fired)
	}

	// A storm longer than the retry budget surfaces as a retryable ErrRateLimited.
	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "429", "method": "GET", "path": "/2.0/user"}, nil)
	if _, err := c.CurrentUser(context.Background()); !errors.Is(err, bitbucket.ErrRateLimited) || !bitbucket.IsRetryable(err) {
		t.Errorf("permanent 429 err = %v, want retryable ErrRateLimited", err)
	}
}

func TestContractWebhooks(t *testing.T) {
	env := startEmulator(t)
	ctx := context.Background()
	alice, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	bob, _ := env.client(t, env.issueToken(t, "bob"), &tokenStore{})

	type delivery struct {
		key    string
		header string
		body   []byte
	}
	deliveries := make(chan delivery, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		deliveries <- delivery{key: r.Header.Get(bitbucket.HeaderEventKey), header: r.Header.Get(bitbucket.HeaderSignature), body: body}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	secret := "contract-hook-secret"
	req := bitbucket.HookRequest{Description: "GitSec", URL: receiver.URL + "/webhooks/bitbucket", Active: true,
		Events: []string{bitbucket.EventRepoPush, bitbucket.EventPullRequestCreated}, Secret: &secret}

	if _, err := bob.CreateWorkspaceHook(ctx, "acme", req); !errors.Is(err, bitbucket.ErrForbidden) {
		t.Fatalf("member creating a workspace hook: err = %v, want ErrForbidden", err)
	}
	hook, err := alice.CreateWorkspaceHook(ctx, "acme", req)
	if err != nil {
		t.Fatalf("CreateWorkspaceHook: %v", err)
	}
	if !hook.SecretSet || !strings.HasPrefix(hook.UUID, "{") {
		t.Errorf("hook = %+v", hook)
	}
	hooks, err := alice.ListWorkspaceHooks(ctx, "acme")
	if err != nil || len(hooks) != 1 || hooks[0].URL != req.URL {
		t.Fatalf("ListWorkspaceHooks = %+v, %v", hooks, err)
	}

	env.admin(t, http.MethodPost, "/_emulator/repositories/acme/api/push", map[string]any{"commits": 1, "author": "alice"}, nil)
	select {
	case d := <-deliveries:
		if d.key != bitbucket.EventRepoPush {
			t.Fatalf("delivery key = %q", d.key)
		}
		if err := bitbucket.VerifySignature([]byte(secret), d.body, d.header); err != nil {
			t.Fatalf("emulator delivery signature rejected: %v", err)
		}
		if err := bitbucket.VerifySignature([]byte("wrong-secret"), d.body, d.header); !errors.Is(err, bitbucket.ErrInvalidSignature) {
			t.Errorf("wrong secret accepted: %v", err)
		}
		ev, err := bitbucket.DecodeEvent(d.key, d.body)
		if err != nil {
			t.Fatalf("DecodeEvent: %v", err)
		}
		push := ev.(*bitbucket.PushEvent)
		if push.Repository.FullName != "acme/api" || len(push.Push.Changes) != 1 || push.Push.Changes[0].New == nil {
			t.Errorf("push event = %+v", push.Push)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook delivery within 30s of the push")
	}

	active := false
	req.Active = active
	req.Secret = nil
	updated, err := alice.UpdateWorkspaceHook(ctx, "acme", hook.UUID, req)
	if err != nil || updated.Active || !updated.SecretSet {
		t.Fatalf("UpdateWorkspaceHook = %+v, %v (secret must survive an update without one)", updated, err)
	}
	if err := alice.DeleteWorkspaceHook(ctx, "acme", hook.UUID); err != nil {
		t.Fatalf("DeleteWorkspaceHook: %v", err)
	}
	if err := alice.DeleteWorkspaceHook(ctx, "acme", hook.UUID); !errors.Is(err, bitbucket.ErrNotFound) {
		t.Errorf("second delete err = %v, want ErrNotFound", err)
	}
}

func TestContractCreateRepository(t *testing.T) {
	env := startEmulator(t)
	ctx := context.Background()
	alice, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	// The default consumer lacks repository:admin, as the backup app does; only a Writer can
	// even try, so this wraps the backup app's client on purpose.
	_, err := (&bitbucket.Writer{Client: alice}).CreateRepository(ctx, "acme", "restored", bitbucket.CreateRepositoryRequest{IsPrivate: true})
	if err == nil {
		t.Fatal("backup consumer created a repository; it must lack repository:admin")
	}
	var apiErr *bitbucket.APIError
	if !errors.As(err, &apiErr) || (apiErr.Status != http.StatusForbidden && apiErr.Status != http.StatusBadRequest) {
		t.Errorf("err = %v, want a 403/400 APIError", err)
	}

	// The restore app's token has repository:admin.
	restoreClient, _ := env.client(t, env.issueToken(t, "alice", "account", "repository", "repository:write", "repository:admin"), &tokenStore{})
	restorer := &bitbucket.Writer{Client: restoreClient}
	created, err := restorer.CreateRepository(ctx, "acme", "restored", bitbucket.CreateRepositoryRequest{Description: "restored by GitSec", IsPrivate: true, ForkPolicy: "no_public_forks"})
	if err != nil {
		t.Fatalf("CreateRepository: %v", err)
	}
	if created.Slug != "restored" || !created.IsPrivate || !strings.HasPrefix(created.UUID, "{") {
		t.Errorf("created = %+v", created)
	}
	fetched, err := restorer.GetRepository(ctx, "acme", "restored")
	if err != nil || fetched.UUID != created.UUID || fetched.Description != "restored by GitSec" {
		t.Errorf("GetRepository after create = %+v, %v", fetched, err)
	}
}
