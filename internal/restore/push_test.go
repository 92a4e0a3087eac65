package restore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/restore"
)

type world struct {
	t     *testing.T
	emu   *emulator.Server
	store *archive.Store
}

func start(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Seed: &emulator.Seed{
			Users: []emulator.SeedUser{{Username: "alice"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Repositories: []emulator.SeedRepository{
				{Slug: "api", Generate: &emulator.Generate{Commits: 20, Branches: 2, Tags: 2, PullRequests: 2}},
				{Slug: "target"},
			}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	st, err := archive.Open(ctx, "file://"+filepath.ToSlash(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &world{t: t, emu: emu, store: st}
}

func (w *world) auth(scopes ...string) *githttp.BasicAuth {
	w.t.Helper()
	body, _ := json.Marshal(map[string]any{"user": "alice", "scopes": scopes})
	resp, err := http.Post(w.emu.URL()+"/_emulator/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	return &githttp.BasicAuth{Username: "x-token-auth", Password: tr.AccessToken}
}

// snapshot backs up acme/api and hydrates the snapshot into a fresh bare repository.
func (w *world) snapshot() (*archive.Manifest, *gitmirror.Mirror) {
	w.t.Helper()
	ctx := context.Background()
	src, err := gitmirror.Open(filepath.Join(w.t.TempDir(), "mirror.git"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Fetch(ctx, w.emu.URL()+"/acme/api.git", w.auth("repository"), nil); err != nil {
		w.t.Fatal(err)
	}
	res, err := w.store.SnapshotMirror(ctx, src, archive.SnapshotRequest{Tenant: "t1",
		Repository: archive.Repository{Provider: "bitbucket", UUID: "0000-api", FullName: "acme/api"},
		Trigger:    archive.Trigger{Kind: domain.TriggerManual}})
	if err != nil {
		w.t.Fatal(err)
	}
	hydrated, err := w.store.Hydrate(ctx, res.Manifest, filepath.Join(w.t.TempDir(), "restore.git"), nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { hydrated.Close() })
	return res.Manifest, hydrated
}

func TestPushRestoresBranchesAndTagsAndVerifies(t *testing.T) {
	w := start(t)
	m, mirror := w.snapshot()
	target := w.emu.URL() + "/acme/target.git"
	write := w.auth("repository:write")

	res, err := restore.Push(context.Background(), mirror, m, target, write, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 0 || len(res.Conflicts) != 0 || len(res.Pushed) != len(res.Wanted) {
		t.Fatalf("push into an empty repository: %+v", res)
	}
	if mm, err := restore.Verify(context.Background(), m, res.Wanted, target, write); err != nil || len(mm) != 0 {
		t.Fatalf("verify after the push: %v %v", mm, err)
	}
	got, _, err := gitmirror.LsRemote(context.Background(), target, write)
	if err != nil {
		t.Fatal(err)
	}
	for name, oid := range m.Refs {
		if (len(name) > 11 && name[:11] == "refs/heads/") || (len(name) > 10 && name[:10] == "refs/tags/") {
			if got[name] != oid {
				t.Fatalf("target %s = %s, snapshot %s", name, got[name], oid)
			}
		} else if _, pushed := got[name]; pushed {
			t.Fatalf("%s is not a branch or tag and must not be pushed", name)
		}
	}

	// Someone pushes to the target's main: a restore in fail mode refuses and lists the ref;
	// force rewinds it.
	if err := w.emuPush("target"); err != nil {
		t.Fatal(err)
	}
	_, err = restore.Push(context.Background(), mirror, m, target, write, restore.Options{Refs: []string{"main"}})
	if !errors.Is(err, restore.ErrConflict) {
		t.Fatalf("push over a newer main: %v, want ErrConflict", err)
	}
	res, err = restore.Push(context.Background(), mirror, m, target, write, restore.Options{Refs: []string{"main"}, OnConflict: restore.OnConflictForce})
	if err != nil || len(res.Pushed) != 1 || len(res.Conflicts) != 1 || res.Conflicts[0].Ref != "refs/heads/main" {
		t.Fatalf("forced push: %+v %v", res, err)
	}
	if mm, err := restore.Verify(context.Background(), m, res.Wanted, target, write); err != nil || len(mm) != 0 {
		t.Fatalf("verify after the forced push: %v %v", mm, err)
	}
	if _, err := restore.Push(context.Background(), mirror, m, target, write, restore.Options{Refs: []string{"no-such-branch"}}); err == nil {
		t.Fatal("an unknown branch must be refused")
	}
	// A read-only token cannot restore: the target refuses the push.
	if err := w.emuPush("target"); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Push(context.Background(), mirror, m, target, w.auth("repository"),
		restore.Options{Refs: []string{"main"}, OnConflict: restore.OnConflictForce}); err == nil {
		t.Fatal("a push with a read-only token succeeded")
	}
}

// A branch restriction refuses one ref: it is reported with the server's reason and every
// other ref still lands.
func TestPushReportsRefusedRefsAndPushesTheRest(t *testing.T) {
	w := start(t)
	m, mirror := w.snapshot()
	target := w.emu.URL() + "/acme/target.git"
	write := w.auth("repository:write")
	resp, err := http.DefaultClient.Do(mustRequest(t, http.MethodPut, w.emu.URL()+"/_emulator/repositories/acme/target/settings",
		`{"branch_restrictions":[{"kind":"push","pattern":"main"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set restriction: %s", resp.Status)
	}
	res, err := restore.Push(context.Background(), mirror, m, target, write, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if reason := res.Rejected["refs/heads/main"]; len(res.Rejected) != 1 || reason == "" {
		t.Fatalf("rejected = %v, want main refused with a reason", res.Rejected)
	}
	if len(res.Pushed) != len(res.Wanted)-1 {
		t.Fatalf("pushed %d of %d refs, want all but main", len(res.Pushed), len(res.Wanted))
	}
	mm, err := restore.Verify(context.Background(), m, res.Wanted, target, write)
	if err != nil || len(mm) != 1 || mm[0] != "refs/heads/main" {
		t.Fatalf("verify = %v %v, want only main to differ", mm, err)
	}
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

func (w *world) emuPush(slug string) error {
	resp, err := http.Post(w.emu.URL()+"/_emulator/repositories/acme/"+slug+"/push", "application/json", bytes.NewReader([]byte(`{"commits":1}`)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return errors.New(resp.Status)
	}
	return nil
}
