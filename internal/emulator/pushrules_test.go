package emulator

import (
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// git sends a pack over 1 MiB with chunked transfer encoding; the emulator must take it as
// bitbucket.org does (Go's CGI handler alone answers 400).
func TestPushOfALargePackIsAccepted(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice", "repository", "repository:write")
	dir := t.TempDir()
	url := strings.Replace(s.URL(), "http://", "http://x-token-auth:"+tok+"@", 1) + "/acme/empty.git"
	runGit(t, dir, "init", "-q", "-b", "main", ".")
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, dir, "add", "big.bin")
	runGit(t, dir, "commit", "-qm", "big")
	runGit(t, dir, "push", "-q", url, "main")
	if got := runGit(t, dir, "ls-remote", url, "refs/heads/main"); !strings.Contains(got, strings.TrimSpace(runGit(t, dir, "rev-parse", "HEAD"))) {
		t.Fatalf("ls-remote after the push: %q", got)
	}
}

// A push restriction refuses the ref for everyone it does not list, per ref: the rest lands.
func TestPushRestrictionRefusesOneRef(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice", "repository", "repository:write", "repository:admin")
	status, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/empty/branch-restrictions", tok,
		[]byte(`{"kind":"push","branch_match_kind":"glob","pattern":"locked/*","users":[{"username":"bob"}]}`))
	if status != http.StatusCreated {
		t.Fatalf("create restriction = %d %s", status, body)
	}
	if status, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/empty/branch-restrictions", tok,
		[]byte(`{"kind":"push","branch_match_kind":"glob","pattern":"locked/*"}`)); status != http.StatusConflict {
		t.Fatalf("duplicate restriction = %d %s, want 409", status, body)
	}
	dir := t.TempDir()
	url := strings.Replace(s.URL(), "http://", "http://x-token-auth:"+tok+"@", 1) + "/acme/empty.git"
	runGit(t, dir, "init", "-q", "-b", "main", ".")
	runGit(t, dir, "commit", "-q", "--allow-empty", "-m", "one")
	runGit(t, dir, "branch", "locked/a")
	out, err := gitCmd(dir, "push", "--porcelain", url, "main", "locked/a").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "!\trefs/heads/locked/a:refs/heads/locked/a") || !strings.Contains(string(out), "*\trefs/heads/main:refs/heads/main") {
		t.Fatalf("push = %v\n%s", err, out)
	}
}
