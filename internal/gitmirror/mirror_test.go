package gitmirror_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
)

func fetch(t *testing.T, m *gitmirror.Mirror, url string) gitmirror.FetchResult {
	t.Helper()
	res, err := m.Fetch(context.Background(), url, nil, nil)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return res
}

func openMirror(t *testing.T, engine gitmirror.CloneEngine) *gitmirror.Mirror {
	t.Helper()
	m, err := gitmirror.Open(filepath.Join(t.TempDir(), "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}
	m.SetCloneEngine(engine)
	t.Cleanup(func() { m.Close() })
	return m
}

// forEachEngine runs a test once with each initial-clone engine. The git CLI
// run counts the git processes it starts, so that it cannot quietly test
// go-git twice.
func forEachEngine(t *testing.T, test func(t *testing.T, engine gitmirror.CloneEngine)) {
	t.Run("go-git", func(t *testing.T) {
		var started int
		restore := gitmirror.OnGitCommand(func(*exec.Cmd) { started++ })
		defer restore()
		test(t, gitmirror.CloneGoGit)
		if started != 0 {
			t.Fatalf("go-git engine ran git %d times", started)
		}
	})
	t.Run("git-cli", func(t *testing.T) {
		var started int
		restore := gitmirror.OnGitCommand(func(*exec.Cmd) { started++ })
		defer restore()
		test(t, gitmirror.CloneGitCLI)
		if started == 0 {
			t.Fatal("git CLI engine never ran git")
		}
	})
}

func assertMirrors(t *testing.T, src *gitmirrortest.Source, m *gitmirror.Mirror, res gitmirror.FetchResult) {
	t.Helper()
	want := src.Refs()
	if !res.Refs.Equal(want) {
		t.Fatalf("fetch result refs differ from the source:\n got %v\nwant %v", res.Refs, want)
	}
	if got := gitmirrortest.ForEachRef(t, m.Dir()); !got.Equal(want) {
		t.Fatalf("git for-each-ref in the mirror differs from the source:\n got %v\nwant %v", got, want)
	}
	gitmirrortest.Git(t, m.Dir(), "fsck", "--strict", "--no-dangling")
}

// assertSelfContained feeds a pack to git index-pack in an empty repository
// without --fix-thin: a thin pack (deltas against objects outside it) fails.
func assertSelfContained(t *testing.T, p gitmirror.PackFiles) {
	t.Helper()
	dir := t.TempDir()
	gitmirrortest.Git(t, dir, "init", "--quiet", "--bare", dir)
	data, err := os.ReadFile(p.PackPath)
	if err != nil {
		t.Fatal(err)
	}
	gitmirrortest.GitEnv(t, dir, nil, string(data), "index-pack", "--stdin")
}

func TestFetchMirrorsRefsAndIncrements(t *testing.T) {
	forEachEngine(t, testFetchMirrorsRefsAndIncrements)
}

func testFetchMirrorsRefsAndIncrements(t *testing.T, engine gitmirror.CloneEngine) {
	src := gitmirrortest.NewSource(t)
	first := src.Commit("main", "README", "hello\n")
	src.Commit("main", "src/a.go", "package a\n")
	src.Commit("feature", "f.txt", "feature\n")
	src.Tag("v1.0", first)
	src.Git("update-ref", "refs/pull-requests/1/from", first)

	m := openMirror(t, engine)
	var progress []gitmirror.Progress
	res, err := m.Fetch(context.Background(), src.URL, nil, func(p gitmirror.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatal(err)
	}
	assertMirrors(t, src, m, res)
	if res.Head != "refs/heads/main" {
		t.Errorf("head = %q, want refs/heads/main", res.Head)
	}
	if len(res.NewPacks) != 1 {
		t.Fatalf("initial fetch wrote %d packs, want 1", len(res.NewPacks))
	}
	if res.RefsAdded != 4 || res.RefsUpdated != 0 || res.RefsDeleted != 0 {
		t.Errorf("counts = +%d ~%d -%d, want +4 ~0 -0", res.RefsAdded, res.RefsUpdated, res.RefsDeleted)
	}
	if len(progress) == 0 {
		t.Fatal("no progress reported")
	}
	if engine == gitmirror.CloneGitCLI && !slices.ContainsFunc(progress, func(p gitmirror.Progress) bool {
		return p.Phase == "Receiving objects" && p.TotalObjects > 0
	}) {
		t.Errorf("git's receiving progress never reached the callback: %+v", progress)
	}
	last := progress[len(progress)-1]
	if last.Phase != "Done" || last.Bytes != res.Bytes {
		t.Errorf("last progress = %+v, want phase Done and %d bytes", last, res.Bytes)
	}
	links, err := m.PackLinks(res.NewPacks[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(links.Prerequisites) != 0 {
		t.Errorf("initial pack has prerequisites %v", links.Prerequisites)
	}

	oldMain := src.Refs()["refs/heads/main"]
	newMain := src.Commit("main", "README", "hello again\n")
	res = fetch(t, m, src.URL)
	assertMirrors(t, src, m, res)
	if len(res.NewPacks) != 1 || res.Objects != 3 {
		t.Fatalf("incremental fetch wrote %d packs with %d objects, want 1 pack with commit+tree+blob", len(res.NewPacks), res.Objects)
	}
	if res.RefsUpdated != 1 || res.RefsAdded != 0 || res.RefsDeleted != 0 {
		t.Errorf("counts = +%d ~%d -%d, want +0 ~1 -0", res.RefsAdded, res.RefsUpdated, res.RefsDeleted)
	}
	assertSelfContained(t, res.NewPacks[0])
	links, err = m.PackLinks(res.NewPacks[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(links.Prerequisites, []string{oldMain}) || !slices.Equal(links.Tips, []string{newMain}) {
		t.Errorf("links = %+v, want prerequisites [%s] and tips [%s]", links, oldMain, newMain)
	}

	// Nothing changed: ls-remote agrees with the mirror and a fetch writes nothing.
	remote, head, err := gitmirror.LsRemote(context.Background(), src.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !remote.Equal(res.Refs) || head != "refs/heads/main" {
		t.Fatalf("ls-remote = %v %q, mirror has %v", remote, head, res.Refs)
	}
	res = fetch(t, m, src.URL)
	if res.Changed() || len(res.NewPacks) != 0 {
		t.Fatalf("fetch of an unchanged remote reported changes: %+v", res)
	}
	packs, err := m.Packs()
	if err != nil {
		t.Fatal(err)
	}
	if len(packs) != 2 {
		t.Fatalf("mirror has %d packs, want 2", len(packs))
	}
}

func TestFetchMirrorsForcePushAndDeletions(t *testing.T) {
	forEachEngine(t, testFetchMirrorsForcePushAndDeletions)
}

func testFetchMirrorsForcePushAndDeletions(t *testing.T, engine gitmirror.CloneEngine) {
	src := gitmirrortest.NewSource(t)
	base := src.Commit("main", "a.txt", "1\n")
	src.Commit("main", "a.txt", "2\n")
	src.Commit("feature", "b.txt", "feature\n")
	src.Tag("v1", base)
	src.Git("tag", "light", base)

	m := openMirror(t, engine)
	assertMirrors(t, src, m, fetch(t, m, src.URL))

	// Force-push main onto a new history, delete a branch and both tags.
	src.CommitOn(base, "refs/heads/main", "a.txt", "rewritten\n")
	src.Git("update-ref", "-d", "refs/heads/feature")
	src.Git("tag", "-d", "v1")
	src.Git("tag", "-d", "light")

	res := fetch(t, m, src.URL)
	assertMirrors(t, src, m, res)
	if res.RefsDeleted != 3 || res.RefsUpdated != 1 {
		t.Errorf("counts = +%d ~%d -%d, want ~1 -3", res.RefsAdded, res.RefsUpdated, res.RefsDeleted)
	}
	for _, name := range []string{"refs/heads/feature", "refs/tags/v1", "refs/tags/light"} {
		if _, ok := res.Refs[name]; ok {
			t.Errorf("%s survived its deletion on the remote", name)
		}
	}

	// Deleting the last branch leaves an empty remote; the mirror follows.
	src.Git("update-ref", "-d", "refs/heads/main")
	res = fetch(t, m, src.URL)
	if len(res.Refs) != 0 {
		t.Fatalf("refs after the remote became empty: %v", res.Refs)
	}
}

func TestFetchEmptyRepository(t *testing.T) { forEachEngine(t, testFetchEmptyRepository) }

func testFetchEmptyRepository(t *testing.T, engine gitmirror.CloneEngine) {
	src := gitmirrortest.NewSource(t)
	refs, _, err := gitmirror.LsRemote(context.Background(), src.URL, nil)
	if err != nil {
		t.Fatalf("ls-remote of an empty repository: %v", err)
	}
	if len(refs) != 0 {
		t.Fatalf("ls-remote of an empty repository = %v", refs)
	}
	m := openMirror(t, engine)
	res := fetch(t, m, src.URL)
	if len(res.Refs) != 0 || len(res.NewPacks) != 0 || res.Changed() {
		t.Fatalf("fetch of an empty repository = %+v", res)
	}
	// The first push after that is fetched like any initial clone.
	src.Commit("main", "a", "a\n")
	assertMirrors(t, src, m, fetch(t, m, src.URL))
}

func TestFetchManyRefs(t *testing.T) { forEachEngine(t, testFetchManyRefs) }

func testFetchManyRefs(t *testing.T, engine gitmirror.CloneEngine) {
	src := gitmirrortest.NewSource(t)
	commit := src.Commit("main", "a", "a\n")
	var stdin strings.Builder
	for i := range 1200 {
		fmt.Fprintf(&stdin, "create refs/heads/branch-%04d %s\n", i, commit)
	}
	for i := range 50 {
		fmt.Fprintf(&stdin, "create refs/pull-requests/%d/from %s\n", i, commit)
	}
	gitmirrortest.GitEnv(t, src.Dir, nil, stdin.String(), "update-ref", "--stdin")

	m := openMirror(t, engine)
	res := fetch(t, m, src.URL)
	assertMirrors(t, src, m, res)
	if len(res.Refs) != 1251 {
		t.Fatalf("mirror has %d refs, want 1251", len(res.Refs))
	}
	remote, _, err := gitmirror.LsRemote(context.Background(), src.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !remote.Equal(res.Refs) {
		t.Fatal("ls-remote differs from the mirror after a full fetch")
	}
}

func TestHydrateThenFetchIncrementally(t *testing.T) {
	forEachEngine(t, testHydrateThenFetchIncrementally)
}

func testHydrateThenFetchIncrementally(t *testing.T, engine gitmirror.CloneEngine) {
	src := gitmirrortest.NewSource(t)
	src.Commit("main", "a", "a\n")
	src.Commit("dev", "b", "b\n")
	src.Tag("v1", src.Refs()["refs/heads/main"])
	m := openMirror(t, engine)
	first := fetch(t, m, src.URL)

	// Copy the packs out, as a download from backup storage would.
	staging := t.TempDir()
	var packs []gitmirror.PackFiles
	for _, p := range first.NewPacks {
		c := gitmirror.PackFiles{Name: p.Name, PackPath: filepath.Join(staging, p.Name+".pack"), IdxPath: filepath.Join(staging, p.Name+".idx")}
		copyFile(t, p.PackPath, c.PackPath)
		copyFile(t, p.IdxPath, c.IdxPath)
		packs = append(packs, c)
	}
	dir := filepath.Join(t.TempDir(), "hydrated.git")
	h, err := gitmirror.Hydrate(dir, packs, first.Refs, first.Head)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	refs, head, err := h.Refs()
	if err != nil {
		t.Fatal(err)
	}
	if !refs.Equal(first.Refs) || head != first.Head {
		t.Fatalf("hydrated refs %v head %q, want %v %q", refs, head, first.Refs, first.Head)
	}
	gitmirrortest.Git(t, dir, "fsck", "--strict", "--no-dangling")
	if got := gitmirrortest.ForEachRef(t, dir); !got.Equal(first.Refs) {
		t.Fatalf("git for-each-ref of the hydrated mirror = %v", got)
	}

	src.Commit("main", "a", "a2\n")
	// Deletions must also reach references that hydrate wrote to packed-refs.
	src.Git("update-ref", "-d", "refs/heads/dev")
	src.Git("tag", "-d", "v1")
	res := fetch(t, h, src.URL)
	assertMirrors(t, src, h, res)
	if res.RefsDeleted != 2 {
		t.Fatalf("fetch after hydrate deleted %d refs, want 2", res.RefsDeleted)
	}
	if len(res.NewPacks) != 1 || res.Objects != 3 {
		t.Fatalf("fetch after hydrate wrote %d packs with %d objects, want one increment of 3", len(res.NewPacks), res.Objects)
	}

	if _, err := gitmirror.Hydrate(dir, nil, nil, ""); err == nil {
		t.Fatal("hydrate over an existing repository succeeded")
	}
	if _, err := gitmirror.Hydrate(filepath.Join(t.TempDir(), "bad.git"), nil, gitmirror.RefMap{"refs/heads/x": strings.Repeat("a", 40)}, ""); err == nil {
		t.Fatal("hydrate with a ref to a missing object succeeded")
	}
}

func TestFetchRefusesSecondConcurrentFetch(t *testing.T) {
	src := gitmirrortest.NewSource(t)
	src.Commit("main", "a", "a\n")
	m := openMirror(t, gitmirror.CloneAuto)
	// A second handle on the same directory stands in for a still-running
	// earlier attempt: it fetches from inside the first one's progress callback.
	other, err := gitmirror.Open(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var innerErr error
	_, err = m.Fetch(context.Background(), src.URL, nil, func(gitmirror.Progress) {
		if innerErr == nil {
			_, innerErr = other.Fetch(context.Background(), src.URL, nil, nil)
			if innerErr == nil {
				innerErr = errors.New("no error")
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(innerErr, gitmirror.ErrBusy) {
		t.Fatalf("concurrent fetch error = %v, want ErrBusy", innerErr)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
