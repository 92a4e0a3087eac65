// Package gitmirrortest provides real git repositories served over the smart
// HTTP protocol by git http-backend, for tests of code that fetches with
// go-git. It needs the git CLI and fails the test, with the reason, when git
// is missing.
package gitmirrortest

import (
	"bytes"
	"fmt"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gitsec/gitsec/internal/gitmirror"
)

// Source is a bare repository served over HTTP.
type Source struct {
	t testing.TB
	// Dir is the bare repository on disk; URL is its clone URL.
	Dir string
	URL string
}

var commitCounter atomic.Int64

// NewSource creates an empty bare repository (default branch main) in a
// temporary directory and serves it with git http-backend until the test
// ends.
func NewSource(t testing.TB) *Source {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "source.git")
	Git(t, root, "init", "--quiet", "--bare", "--initial-branch=main", dir)
	return &Source{t: t, Dir: dir, URL: Serve(t, root) + "/source.git"}
}

// Serve serves every repository under root with git http-backend through
// net/http/cgi and returns the base URL.
func Serve(t testing.TB, root string) string {
	t.Helper()
	execPath := strings.TrimSpace(Git(t, root, "--exec-path"))
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is required to serve test repositories: %v", err)
	}
	handler := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"PATH=" + os.Getenv("PATH"),
		},
	}
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return server.URL
}

// Git runs the git CLI in dir and returns its standard output; any failure
// fails the test with git's standard error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	return GitEnv(t, dir, nil, "", args...)
}

// GitEnv is Git with extra environment variables and standard input.
func GitEnv(t testing.TB, dir string, env []string, stdin string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("the git CLI is required: %v", err)
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Committer", "GIT_COMMITTER_EMAIL=committer@example.com",
		"GIT_TERMINAL_PROMPT=0",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return stdout.String()
}

// Git runs git inside the source repository.
func (s *Source) Git(args ...string) string {
	s.t.Helper()
	return Git(s.t, s.Dir, args...)
}

// Commit adds or replaces one file on branch (creating the branch when it
// does not exist) with a new commit, and returns the commit id.
func (s *Source) Commit(branch, path, content string) string {
	s.t.Helper()
	ref := "refs/heads/" + branch
	parent := strings.TrimSpace(s.gitOK("rev-parse", "--verify", "--quiet", ref+"^{commit}"))
	return s.CommitOn(parent, ref, path, content)
}

// CommitOn writes a commit whose parent is parent ("" for a root commit), with
// the parent's tree plus one file, and points ref at it even when that is not
// a fast-forward: a force-push as the server sees it.
func (s *Source) CommitOn(parent, ref, path, content string) string {
	s.t.Helper()
	index := filepath.Join(s.t.TempDir(), "index")
	env := []string{"GIT_INDEX_FILE=" + index}
	if parent != "" {
		GitEnv(s.t, s.Dir, env, "", "read-tree", parent)
	} else {
		GitEnv(s.t, s.Dir, env, "", "read-tree", "--empty")
	}
	blob := strings.TrimSpace(GitEnv(s.t, s.Dir, nil, content, "hash-object", "-w", "--stdin"))
	GitEnv(s.t, s.Dir, env, "", "update-index", "--add", "--cacheinfo", "100644,"+blob+","+path)
	tree := strings.TrimSpace(GitEnv(s.t, s.Dir, env, "", "write-tree"))
	args := []string{"commit-tree", tree, "-m", fmt.Sprintf("change %d to %s", commitCounter.Add(1), path)}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	commit := strings.TrimSpace(s.Git(args...))
	s.Git("update-ref", ref, commit)
	return commit
}

// Tag creates an annotated tag on target and returns the tag object's id.
func (s *Source) Tag(name, target string) string {
	s.t.Helper()
	s.Git("tag", "-a", "-m", "release "+name, name, target)
	return strings.TrimSpace(s.Git("rev-parse", "refs/tags/"+name))
}

// Refs lists the source's references the way git for-each-ref sees them.
func (s *Source) Refs() gitmirror.RefMap {
	s.t.Helper()
	return ForEachRef(s.t, s.Dir)
}

// ForEachRef returns git for-each-ref of the repository at dir as a RefMap.
func ForEachRef(t testing.TB, dir string) gitmirror.RefMap {
	t.Helper()
	refs := gitmirror.RefMap{}
	for _, line := range strings.Split(Git(t, dir, "for-each-ref", "--format=%(objectname) %(refname)"), "\n") {
		if oid, name, ok := strings.Cut(line, " "); ok {
			refs[name] = oid
		}
	}
	return refs
}

func (s *Source) gitOK(args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = s.Dir
	out, _ := cmd.Output()
	return string(out)
}
