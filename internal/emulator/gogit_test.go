package emulator

import (
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// goGitClone checks that go-git (the engine GitSec uses) clones from the emulator.
func goGitClone(t *testing.T, url, token, wantHead string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gogit.git")
	repo, err := git.PlainClone(dir, true, &git.CloneOptions{
		URL:  url,
		Auth: &githttp.BasicAuth{Username: "x-token-auth", Password: token},
	})
	if err != nil {
		t.Fatalf("go-git clone: %v", err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatalf("go-git head: %v", err)
	}
	if head.Hash().String() != wantHead {
		t.Errorf("go-git HEAD = %s, want %s", head.Hash(), wantHead)
	}
}
