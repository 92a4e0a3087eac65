package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadSeedMinimalShapeWithImport(t *testing.T) {
	// A bare repository to import, with two branches and a tag.
	work := t.TempDir()
	runGit(t, work, "init", "-q", "-b", "trunk")
	if err := os.WriteFile(filepath.Join(work, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, work, "add", "a.txt")
	runGit(t, work, "commit", "-q", "-m", "first")
	runGit(t, work, "tag", "v0.1")
	runGit(t, work, "branch", "feature/x")
	bare := filepath.Join(t.TempDir(), "existing.git")
	runGit(t, work, "clone", "-q", "--bare", work, bare)

	seedYAML := `users: [{username: alice}, {username: bob}, {username: carol}]
consumers:
  - {key: demo-key, secret: demo-secret, callback_url: "http://127.0.0.1:8080/oauth/bitbucket/callback"}
workspaces:
  - slug: acme
    admins: [alice]
    members: [bob]
    repositories:
      - slug: api
        import: ` + bare + `
      - slug: web
        generate: {commits: 50, branches: 5, tags: 3, pull_requests: 20}
`
	seedPath := filepath.Join(t.TempDir(), "seed.yaml")
	if err := os.WriteFile(seedPath, []byte(seedYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	seed, err := LoadSeed(seedPath)
	if err != nil {
		t.Fatalf("load seed: %v", err)
	}
	s := startTest(t, Options{Seed: seed})
	tok := adminToken(t, s, "alice")
	api := s.URL() + "/2.0/repositories/acme"

	imported := getJSON(t, api+"/api", tok)
	if mb := imported["mainbranch"].(map[string]any)["name"]; mb != "trunk" {
		t.Errorf("imported mainbranch = %v, want trunk (HEAD of the source)", mb)
	}
	branches := getJSON(t, api+"/api/refs/branches", tok)
	if branches["size"].(float64) != 2 {
		t.Errorf("imported branches = %v, want 2", branches["size"])
	}
	tags := getJSON(t, api+"/api/refs/tags", tok)
	if tags["size"].(float64) != 1 {
		t.Errorf("imported tags = %v, want 1", tags["size"])
	}

	// generate: main + 5 branches + 20 PR branches; 3 tags; 20 PRs in all states.
	gb := getJSON(t, api+"/web/refs/branches", tok)
	if gb["size"].(float64) != 26 {
		t.Errorf("generated branches = %v, want 26", gb["size"])
	}
	gt := getJSON(t, api+"/web/refs/tags", tok)
	if gt["size"].(float64) != 3 {
		t.Errorf("generated tags = %v, want 3", gt["size"])
	}
	all := getJSON(t, api+"/web/pullrequests?state=OPEN&state=MERGED&state=DECLINED&pagelen=50", tok)
	if all["size"].(float64) != 20 {
		t.Errorf("generated PRs = %v, want 20", all["size"])
	}
	states := map[string]int{}
	for _, v := range all["values"].([]any) {
		states[v.(map[string]any)["state"].(string)]++
	}
	if states["OPEN"] == 0 || states["MERGED"] == 0 || states["DECLINED"] == 0 {
		t.Errorf("generated PR states = %v, want all three", states)
	}
	open := getJSON(t, api+"/web/pullrequests?pagelen=50", tok)
	if int(open["size"].(float64)) != states["OPEN"] {
		t.Errorf("default PR list must show only OPEN: %v vs %d", open["size"], states["OPEN"])
	}

	// Generation is deterministic: a second world from the same seed has the same main tip.
	s2 := startTest(t, Options{Seed: seed})
	tok2 := adminToken(t, s2, "alice")
	h1 := getJSON(t, api+"/web/refs/branches/main", tok)["target"].(map[string]any)["hash"]
	h2 := getJSON(t, s2.URL()+"/2.0/repositories/acme/web/refs/branches/main", tok2)["target"].(map[string]any)["hash"]
	if h1 != h2 {
		t.Errorf("generation is not deterministic: %v vs %v", h1, h2)
	}
}

func TestRemovedEndpointsAnswer410(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice")
	for _, p := range []string{"/2.0/repositories", "/2.0/workspaces", "/2.0/user/permissions/workspaces", "/2.0/user/permissions/repositories"} {
		status, body := do(t, http.MethodGet, s.URL()+p, tok, nil)
		if status != http.StatusGone || !strings.Contains(string(body), "CHANGE-2770") {
			t.Errorf("GET %s = %d %s, want 410 CHANGE-2770", p, status, body)
		}
	}
}

func TestScopesAndPermissions(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	api := s.URL() + "/2.0"
	read := adminToken(t, s, "alice", "account", "repository", "pullrequest")
	hookBody := []byte(`{"url":"http://127.0.0.1:9/h","events":["repo:push"],"active":true}`)

	status, body := do(t, http.MethodPost, api+"/repositories/acme/api/hooks", read, hookBody)
	if status != http.StatusForbidden || !strings.Contains(string(body), "privilege scopes") {
		t.Errorf("read-only token creating a hook: %d %s", status, body)
	}
	status, body = do(t, http.MethodPost, api+"/repositories/acme/new-repo", read, []byte(`{"scm":"git"}`))
	if status != http.StatusForbidden {
		t.Errorf("read-only token creating a repository: %d %s", status, body)
	}
	// webhook scope without pullrequest cannot subscribe to PR events.
	hookOnly := adminToken(t, s, "alice", "webhook", "repository")
	status, body = do(t, http.MethodPost, api+"/workspaces/acme/hooks", hookOnly, []byte(`{"url":"http://127.0.0.1:9/h","events":["pullrequest:created"]}`))
	if status != http.StatusForbidden || !strings.Contains(string(body), "pullrequest") {
		t.Errorf("hook for PR events without pullrequest scope: %d %s", status, body)
	}
	// bob is a plain member: no workspace hooks, even with the scope.
	bob := adminToken(t, s, "bob", "account", "repository", "pullrequest", "webhook")
	status, _ = do(t, http.MethodPost, api+"/workspaces/acme/hooks", bob, hookBody)
	if status != http.StatusForbidden {
		t.Errorf("member creating a workspace hook: %d, want 403", status)
	}
	// carol has no workspace: nothing listed, private repositories forbidden.
	carol := adminToken(t, s, "carol")
	if ws := getJSON(t, api+"/user/workspaces", carol); ws["size"].(float64) != 0 {
		t.Errorf("carol's workspaces = %v, want 0", ws["size"])
	}
	if status, _ := do(t, http.MethodGet, api+"/repositories/acme/api", carol, nil); status != http.StatusForbidden {
		t.Errorf("carol reading a private repository: %d, want 403", status)
	}
	// bob sees acme without the administrator flag.
	bws := getJSON(t, api+"/user/workspaces", bob)["values"].([]any)
	if len(bws) != 1 || bws[0].(map[string]any)["administrator"] != false {
		t.Errorf("bob's workspaces = %v", bws)
	}
	// alice with the restore scopes creates, renames and deletes a repository.
	admin := adminToken(t, s, "alice", "account", "repository:admin", "repository:delete", "webhook", "repository")
	status, body = do(t, http.MethodPost, api+"/repositories/acme/restored", admin, []byte(`{"scm":"git","is_private":true,"description":"x"}`))
	if status != http.StatusOK {
		t.Fatalf("create repository: %d %s", status, body)
	}
	status, _ = do(t, http.MethodPost, api+"/workspaces/acme/hooks", admin, hookBody)
	if status != http.StatusCreated {
		t.Errorf("admin creating a workspace hook: %d", status)
	}
	status, _ = do(t, http.MethodDelete, api+"/repositories/acme/restored", admin, nil)
	if status != http.StatusNoContent {
		t.Errorf("delete repository: %d", status)
	}
	if status, _ := do(t, http.MethodGet, api+"/repositories/acme/restored", admin, nil); status != http.StatusNotFound {
		t.Errorf("deleted repository still answers %d", status)
	}
	if status, _ := do(t, http.MethodGet, api+"/user", "not-a-token", nil); status != http.StatusUnauthorized {
		t.Errorf("invalid token: %d, want 401", status)
	}
}

func TestPaging(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice")
	next := s.URL() + "/2.0/repositories/acme/many-refs/refs/branches?pagelen=500"
	seen := map[string]bool{}
	pages := 0
	for next != "" {
		page := getJSON(t, next, tok)
		if page["pagelen"].(float64) != 100 {
			t.Fatalf("pagelen not clamped to 100: %v", page["pagelen"])
		}
		for _, v := range page["values"].([]any) {
			seen[v.(map[string]any)["name"].(string)] = true
		}
		next, _ = page["next"].(string)
		pages++
	}
	if len(seen) != 121 || pages != 2 {
		t.Errorf("walked %d branches over %d pages, want 121 over 2", len(seen), pages)
	}
	prs := getJSON(t, s.URL()+"/2.0/repositories/acme/api/pullrequests?pagelen=100&state=OPEN&state=MERGED&state=DECLINED", tok)
	if prs["pagelen"].(float64) != maxPRPagelen {
		t.Errorf("PR pagelen = %v, want %d", prs["pagelen"], maxPRPagelen)
	}

	// BBQL and sort on pull requests.
	all := getJSON(t, s.URL()+"/2.0/repositories/acme/api/pullrequests?state=OPEN&state=MERGED&state=DECLINED&sort=updated_on", tok)["values"].([]any)
	if len(all) < 3 {
		t.Fatalf("need PRs, got %d", len(all))
	}
	mid := all[len(all)/2].(map[string]any)["updated_on"].(string)
	q := url.QueryEscape(`updated_on > "` + mid + `"`)
	newer := getJSON(t, s.URL()+"/2.0/repositories/acme/api/pullrequests?state=OPEN&state=MERGED&state=DECLINED&q="+q+"&sort=-updated_on", tok)["values"].([]any)
	want := 0
	for _, v := range all {
		if v.(map[string]any)["updated_on"].(string) > mid {
			want++
		}
	}
	if len(newer) != want || want == 0 {
		t.Errorf("q=updated_on > %s returned %d, want %d (> 0)", mid, len(newer), want)
	}
	for i := 1; i < len(newer); i++ {
		if newer[i-1].(map[string]any)["updated_on"].(string) < newer[i].(map[string]any)["updated_on"].(string) {
			t.Errorf("sort=-updated_on not descending")
		}
	}
	merged := getJSON(t, s.URL()+"/2.0/repositories/acme/api/pullrequests?q="+url.QueryEscape(`state = "MERGED"`), tok)["values"].([]any)
	for _, v := range merged {
		if v.(map[string]any)["state"] != "MERGED" {
			t.Errorf("q=state=MERGED returned %v", v.(map[string]any)["state"])
		}
	}
	if len(merged) == 0 {
		t.Errorf("q=state=MERGED returned nothing")
	}
}

type delivery struct {
	header http.Header
	body   []byte
}

type receiver struct {
	mu   sync.Mutex
	got  []delivery
	srv  *httptest.Server
	fail int // answer 500 to this many requests first
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.got = append(rc.got, delivery{r.Header.Clone(), b})
		if rc.fail > 0 {
			rc.fail--
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) byEvent(event string) []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []delivery
	for _, d := range rc.got {
		if d.header.Get("X-Event-Key") == event {
			out = append(out, d)
		}
	}
	return out
}

func TestGitCloneAndPushWithSignedWebhook(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	rc := newReceiver(t)
	const secret = "Gkvl$k$wyNpQAF42"
	admin := adminToken(t, s, "alice", "account", "repository", "pullrequest", "webhook")
	status, body := do(t, http.MethodPost, s.URL()+"/2.0/workspaces/acme/hooks", admin,
		[]byte(`{"description":"GitSec","url":"`+rc.srv.URL+`/hook","active":true,"secret":"`+secret+`","events":["repo:push","pullrequest:updated"]}`))
	if status != http.StatusCreated {
		t.Fatalf("create workspace hook: %d %s", status, body)
	}
	var hook map[string]any
	_ = json.Unmarshal(body, &hook)

	readTok := adminToken(t, s, "alice", "repository")
	writeTok := adminToken(t, s, "alice", "repository:write")
	host := strings.TrimPrefix(s.URL(), "http://")
	dir := filepath.Join(t.TempDir(), "api")
	runGit(t, "", "clone", "-q", "http://x-token-auth:"+readTok+"@"+host+"/acme/api.git", dir)
	if out := runGit(t, dir, "rev-parse", "HEAD"); len(strings.TrimSpace(out)) != 40 {
		t.Fatalf("clone has no HEAD: %q", out)
	}
	if err := os.WriteFile(filepath.Join(dir, "new.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, dir, "add", "new.txt")
	runGit(t, dir, "commit", "-q", "-m", "add new.txt")

	// The read-only token cannot push.
	cmd := runGitExpectFail(t, dir, "push", "-q", "http://x-token-auth:"+readTok+"@"+host+"/acme/api.git", "HEAD:refs/heads/main")
	if strings.Contains(cmd, readTok) {
		t.Errorf("git output leaked the token")
	}
	runGit(t, dir, "push", "-q", "http://x-token-auth:"+writeTok+"@"+host+"/acme/api.git", "HEAD:refs/heads/main")

	waitFor(t, "repo:push delivery", func() bool { return len(rc.byEvent("repo:push")) > 0 })
	d := rc.byEvent("repo:push")[0]
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(d.body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(d.header.Get("X-Hub-Signature")), []byte(want)) {
		t.Errorf("X-Hub-Signature = %q, want %q", d.header.Get("X-Hub-Signature"), want)
	}
	for _, h := range []string{"X-Request-UUID", "X-Hook-UUID", "X-Attempt-Number"} {
		if d.header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	if d.header.Get("User-Agent") != "Bitbucket-Webhooks/2.0" || d.header.Get("X-Attempt-Number") != "1" {
		t.Errorf("headers: %v", d.header)
	}
	if !strings.Contains(hook["uuid"].(string), d.header.Get("X-Hook-UUID")) {
		t.Errorf("X-Hook-UUID %s does not name hook %s", d.header.Get("X-Hook-UUID"), hook["uuid"])
	}
	var payload map[string]any
	if err := json.Unmarshal(d.body, &payload); err != nil {
		t.Fatalf("decode push payload: %v", err)
	}
	for _, diff := range structDiff("$", loadFixture(t, "webhooks/repo_push.json"), any(payload)) {
		t.Errorf("repo:push vs fixture: %s", diff)
	}
	change := payload["push"].(map[string]any)["changes"].([]any)[0].(map[string]any)
	newHead := strings.TrimSpace(runGit(t, dir, "rev-parse", "HEAD"))
	if change["new"].(map[string]any)["target"].(map[string]any)["hash"] != newHead || change["forced"] != false {
		t.Errorf("push change = %v", change)
	}
	// What the production receiver does with it: verify, then decode with the client's types.
	push := decodeSignedPush(t, d, secret)
	if len(push.Push.Changes) != 1 {
		t.Fatalf("decoded push %+v", push)
	}
	pc := push.Push.Changes[0]
	if pc.New == nil || pc.New.Target.Hash != newHead || pc.New.FullName() != "refs/heads/main" || pc.Old == nil || pc.Forced || pc.Created || pc.Closed {
		t.Errorf("decoded change = %+v", pc)
	}
	if len(pc.Commits) == 0 || pc.Commits[0].Hash != newHead {
		t.Errorf("decoded commits = %+v, want the pushed commit first", pc.Commits)
	}
	if repo := push.Repository; repo.FullName != "acme/api" || repo.Workspace == nil || repo.Workspace.Slug != "acme" || repo.Project == nil || repo.Parent != nil {
		t.Errorf("decoded repository = %+v", repo)
	}

	// go-git clones too (filesystem storage, like the real engine).
	goGitClone(t, "http://"+host+"/acme/api.git", readTok, newHead)
}

func runGitExpectFail(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := gitCmd(dir, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("git %s succeeded, want failure", args[0])
	}
	return string(out)
}

func TestWebhookRetriesOnlyOn5xx(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	rc := newReceiver(t)
	rc.fail = 5
	admin := adminToken(t, s, "alice", "account", "repository", "pullrequest", "webhook")
	status, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/api/hooks", admin,
		[]byte(`{"url":"`+rc.srv.URL+`","active":true,"events":["repo:push"]}`))
	if status != http.StatusCreated {
		t.Fatalf("create hook: %d %s", status, body)
	}
	status, body = do(t, http.MethodPost, s.URL()+"/_emulator/repositories/acme/api/push", "", []byte(`{"branch":"main","commits":2}`))
	if status != http.StatusOK {
		t.Fatalf("admin push: %d %s", status, body)
	}
	waitFor(t, "3 attempts", func() bool { return len(rc.byEvent("repo:push")) == 3 })
	got := rc.byEvent("repo:push")
	for i, d := range got {
		if d.header.Get("X-Attempt-Number") != itoa(i+1) {
			t.Errorf("attempt %d has X-Attempt-Number %s", i+1, d.header.Get("X-Attempt-Number"))
		}
		if d.header.Get("X-Hub-Signature") != "" {
			t.Errorf("a hook without secret must not sign")
		}
	}
	waitFor(t, "delivery log", func() bool {
		n := 0
		for _, dl := range s.hooks.deliveries() {
			if dl.Event == "repo:push" {
				n++
			}
		}
		return n == 3
	})
}

func TestFaultInjection(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice")
	status, body := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "",
		[]byte(`{"path":"/2.0/repositories/acme*","kind":"429","count":2}`))
	if status != http.StatusCreated {
		t.Fatalf("add fault: %d %s", status, body)
	}
	for i := 0; i < 2; i++ {
		status, hdr, body := doFull(t, http.MethodGet, s.URL()+"/2.0/repositories/acme", tok, nil)
		if status != http.StatusTooManyRequests || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") ||
			hdr.Get("Retry-After") != "" || string(body) != rateLimitBody {
			t.Errorf("burst request %d: %d %v %q", i, status, hdr, body)
		}
	}
	if status, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme", tok, nil); status != http.StatusOK {
		t.Errorf("after the burst: %d, want 200", status)
	}

	// drop: the clone is cut mid-response.
	do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(`{"path_regex":"git-upload-pack$","method":"POST","kind":"drop","drop_after_bytes":2048}`))
	host := strings.TrimPrefix(s.URL(), "http://")
	dir := filepath.Join(t.TempDir(), "c1")
	runGitExpectFail(t, "", "clone", "-q", "http://x-token-auth:"+tok+"@"+host+"/acme/api.git", dir)
	do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(`{"path":"/2.0/user","kind":"drop"}`))
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/2.0/user", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("dropped REST response was read completely")
		}
	}
	if status, _ := do(t, http.MethodDelete, s.URL()+"/_emulator/faults", "", nil); status != http.StatusNoContent {
		t.Fatalf("clear faults: %d", status)
	}
	runGit(t, "", "clone", "-q", "http://x-token-auth:"+tok+"@"+host+"/acme/api.git", filepath.Join(t.TempDir(), "c2"))

	// Per-user hourly budget.
	do(t, http.MethodPost, s.URL()+"/_emulator/ratelimits", "", []byte(`{"rest":3}`))
	codes := []int{}
	for i := 0; i < 4; i++ {
		st, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/api", tok, nil)
		codes = append(codes, st)
	}
	if codes[2] != http.StatusOK || codes[3] != http.StatusTooManyRequests {
		t.Errorf("rate limit codes = %v", codes)
	}
}

func TestRestartKeepsState(t *testing.T) {
	dataDir := t.TempDir()
	s, err := startNoCleanup(Options{DataDir: dataDir, Seed: testSeed(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	tok := adminToken(t, s, "alice", "account", "repository:admin", "repository", "webhook", "pullrequest")
	if st, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/kept", tok, []byte(`{"scm":"git"}`)); st != http.StatusOK {
		t.Fatalf("create: %d %s", st, body)
	}
	if st, _ := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/api/hooks", tok, []byte(`{"url":"http://127.0.0.1:9/h","events":["repo:push"]}`)); st != http.StatusCreated {
		t.Fatalf("create hook: %d", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The seed is not applied again: the world keeps the created repository.
	s2 := startTest(t, Options{DataDir: dataDir, Seed: DefaultDemoSeed()})
	if st, _ := do(t, http.MethodGet, s2.URL()+"/2.0/repositories/acme/kept", tok, nil); st != http.StatusOK {
		t.Errorf("repository lost over restart (token still valid?): %d", st)
	}
	hooks := getJSON(t, s2.URL()+"/2.0/repositories/acme/api/hooks", tok)
	if hooks["size"].(float64) != 1 {
		t.Errorf("hooks after restart = %v", hooks["size"])
	}
	if st, _ := do(t, http.MethodGet, s2.URL()+"/2.0/repositories/acme/web", tok, nil); st != http.StatusNotFound {
		t.Errorf("demo seed applied over existing state: %d", st)
	}
}
