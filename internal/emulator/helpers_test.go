package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/bitbucket"
)

// testSeed is a small world that seeds in well under a second.
func testSeed() *Seed {
	return &Seed{
		Users: []SeedUser{{Username: "alice"}, {Username: "bob"}, {Username: "carol"}},
		Consumers: []Consumer{
			{Key: "demo-key", Secret: "demo-secret", CallbackURL: "http://127.0.0.1:8080/oauth/bitbucket/callback"},
			{Key: "restore-key", Secret: "restore-secret", CallbackURL: "http://127.0.0.1:8080/restore/callback",
				Scopes: []string{"account", "repository:write", "repository:admin", "repository:delete", "pullrequest:write", "webhook"}},
		},
		Workspaces: []SeedWorkspace{
			{Slug: "acme", Admins: []string{"alice"}, Members: []string{"bob"}, Repositories: []SeedRepository{
				{Slug: "api", Description: "API", Generate: &Generate{Commits: 40, Branches: 3, Tags: 2, PullRequests: 6}},
				{Slug: "many-refs", Generate: &Generate{Commits: 20, Branches: 120, Tags: 5}},
				{Slug: "empty"},
			}},
			{Slug: "acme-labs", Admins: []string{"alice"}, Repositories: []SeedRepository{
				{Slug: "sandbox", Generate: &Generate{Commits: 3}},
			}},
		},
	}
}

func startTest(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	return s
}

type tokenResp struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Scopes       string `json:"scopes"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	State        string `json:"state"`
}

func adminToken(t *testing.T, s *Server, user string, scopes ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"user": user, "scopes": scopes})
	status, out := do(t, http.MethodPost, s.URL()+"/_emulator/tokens", "", body)
	if status != http.StatusOK {
		t.Fatalf("issue token: %d %s", status, out)
	}
	var tr tokenResp
	if err := json.Unmarshal(out, &tr); err != nil {
		t.Fatalf("decode token: %v", err)
	}
	return tr.AccessToken
}

func do(t *testing.T, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	status, _, out := doFull(t, method, url, token, body)
	return status, out
}

func doFull(t *testing.T, method, url, token string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, out
}

func getJSON(t *testing.T, url, token string) map[string]any {
	t.Helper()
	status, out := do(t, http.MethodGet, url, token, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return m
}

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := gitCmd(dir, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func gitCmd(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(gitEnv(), "GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com",
		"GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
	return cmd
}

func startNoCleanup(opts Options) (*Server, error) {
	return Start(context.Background(), opts)
}

// referenceDir finds shared/reference by walking up from the package directory.
func referenceDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		cand := filepath.Join(dir, "shared", "reference")
		if st, err := os.Stat(filepath.Join(cand, "fixtures")); err == nil && st.IsDir() {
			return cand
		}
		// A clone without shared/ beside it uses the copy the client package keeps in testdata.
		if st, err := os.Stat(filepath.Join(dir, "internal", "bitbucket", "testdata", "reference", "fixtures")); err == nil && st.IsDir() {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "shared", "reference", "fixtures")); err != nil {
					return filepath.Join(dir, "internal", "bitbucket", "testdata", "reference")
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("shared/reference not found above the package directory and no internal/bitbucket/testdata copy: the structural fixture tests need the recorded payloads")
		}
		dir = parent
	}
}

func loadFixture(t *testing.T, rel string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(referenceDir(t), "fixtures", rel))
	if err != nil {
		t.Fatalf("read fixture %s: %v", rel, err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode fixture %s: %v", rel, err)
	}
	return v
}

// structDiff compares got with a recorded payload structurally: every fixture key must be
// present with the same JSON type, recursively; a null in the fixture matches anything;
// each element of a got array must match at least one element of the fixture array.
func structDiff(path string, fixture, got any) []string {
	if fixture == nil {
		return nil
	}
	switch f := fixture.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want object, got %s", path, jsonType(got))}
		}
		var diffs []string
		keys := make([]string, 0, len(f))
		for k := range f {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			gv, ok := g[k]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s.%s: missing", path, k))
				continue
			}
			diffs = append(diffs, structDiff(path+"."+k, f[k], gv)...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want array, got %s", path, jsonType(got))}
		}
		if len(f) == 0 {
			return nil
		}
		var diffs []string
		for i, elem := range g {
			var best []string
			for j, fe := range f {
				d := structDiff(fmt.Sprintf("%s[%d]", path, i), fe, elem)
				if len(d) == 0 {
					best = nil
					break
				}
				if j == 0 || len(d) < len(best) {
					best = d
				}
			}
			diffs = append(diffs, best...)
		}
		return diffs
	default:
		if jsonType(fixture) != jsonType(got) {
			return []string{fmt.Sprintf("%s: want %s, got %s", path, jsonType(fixture), jsonType(got))}
		}
	}
	return nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

// waitFor polls cond until it holds or a generous deadline passes (no timing assertions).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// decodeSignedPush checks a delivery's signature and decodes it as a repo:push with the
// production client's decoder, as GitSec's receiver does.
func decodeSignedPush(t *testing.T, d delivery, secret string) *bitbucket.PushEvent {
	t.Helper()
	if err := bitbucket.VerifySignature([]byte(secret), d.body, d.header.Get(bitbucket.HeaderSignature)); err != nil {
		t.Fatalf("signature: %v", err)
	}
	ev, err := bitbucket.DecodeEvent(d.header.Get(bitbucket.HeaderEventKey), d.body)
	if err != nil {
		t.Fatalf("DecodeEvent: %v\n%s", err, d.body)
	}
	push, ok := ev.(*bitbucket.PushEvent)
	if !ok {
		t.Fatalf("decoded as %T", ev)
	}
	return push
}

// countDeliveries counts the logged delivery attempts that match.
func countDeliveries(s *Server, match func(Delivery) bool) int {
	n := 0
	for _, d := range s.hooks.deliveries() {
		if match(d) {
			n++
		}
	}
	return n
}
