package gitmirror_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
)

// fetchedHistory is a mirror that fetched a source n times, one commit per fetch (n packs),
// with a branch that was deleted upstream after one fetch and whose tip stays a pin root.
func fetchedHistory(t testing.TB, n int, engine gitmirror.CloneEngine) (*gitmirror.Mirror, *gitmirrortest.Source, string) {
	t.Helper()
	src := gitmirrortest.NewSource(t)
	m, err := gitmirror.Open(filepath.Join(t.TempDir(), "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.SetCloneEngine(engine)
	var gone string
	for i := range n {
		src.Commit("main", fmt.Sprintf("f%03d.txt", i), strings.Repeat(fmt.Sprintf("line %d\n", i), 50+i))
		if i == 1 {
			gone = src.Commit("topic", "topic.txt", "topic\n")
		}
		if i == 2 {
			src.Git("update-ref", "-d", "refs/heads/topic")
		}
		if _, err := m.Fetch(context.Background(), src.URL, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return m, src, gone
}

func TestConsolidateWritesOneSelfContainedPackOfTheRoots(t *testing.T) {
	for name, engine := range map[string]gitmirror.CloneEngine{"git": gitmirror.CloneGitCLI, "go-git": gitmirror.CloneGoGit} {
		t.Run(name, func(t *testing.T) {
			m, src, pinned := fetchedHistory(t, 6, engine)
			before, _ := m.Packs()
			if len(before) != 6 {
				t.Fatalf("%d packs before, want 6", len(before))
			}
			refs, _, err := m.Refs()
			if err != nil {
				t.Fatal(err)
			}
			roots := []string{pinned}
			for _, oid := range refs {
				roots = append(roots, oid)
			}
			p, err := m.Consolidate(context.Background(), roots)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := m.Packs()
			if len(after) != 1 || after[0].Name != p.Name {
				t.Fatalf("packs after consolidation %v, want just %s", after, p.Name)
			}
			if !m.HasObject(pinned) {
				t.Fatal("the pinned commit of the deleted branch was dropped")
			}
			// The pack alone, copied into an empty repository with the refs, is complete.
			dir := filepath.Join(t.TempDir(), "alone.git")
			gitmirrortest.Git(t, t.TempDir(), "init", "--quiet", "--bare", dir)
			for _, f := range []string{p.PackPath, p.IdxPath} {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "objects", "pack", filepath.Base(f)), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for name, oid := range refs {
				gitmirrortest.Git(t, dir, "update-ref", name, oid)
			}
			gitmirrortest.Git(t, dir, "update-ref", "refs/gitsec/pull/1/head", pinned)
			gitmirrortest.Git(t, dir, "fsck", "--strict", "--no-dangling")
			if got := gitmirrortest.ForEachRef(t, src.Dir); !got.Equal(refs) {
				t.Fatalf("mirror refs changed by consolidation: %v vs %v", refs, got)
			}
		})
	}
}

// BenchmarkConsolidate compares the two engines on a mirror of 40 fetches (make bench-go).
func BenchmarkConsolidate(b *testing.B) {
	for name, engine := range map[string]gitmirror.CloneEngine{"git-pack-objects": gitmirror.CloneGitCLI, "go-git-encoder": gitmirror.CloneGoGit} {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				m, _, pinned := fetchedHistory(b, 40, engine)
				refs, _, _ := m.Refs()
				roots := []string{pinned}
				for _, oid := range refs {
					roots = append(roots, oid)
				}
				b.StartTimer()
				if _, err := m.Consolidate(context.Background(), roots); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConsolidateRepository consolidates a copy of the bare repository named by
// GITSEC_BENCH_REPO (a real history) with each engine; it is skipped, saying so, without one.
func BenchmarkConsolidateRepository(b *testing.B) {
	src := os.Getenv("GITSEC_BENCH_REPO")
	if src == "" {
		b.Skip("set GITSEC_BENCH_REPO to a bare repository to consolidate")
	}
	for name, engine := range map[string]gitmirror.CloneEngine{"git-pack-objects": gitmirror.CloneGitCLI, "go-git-encoder": gitmirror.CloneGoGit} {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "mirror.git")
				gitmirrortest.Git(b, b.TempDir(), "clone", "--quiet", "--mirror", "--no-local", src, dir)
				m, err := gitmirror.Open(dir)
				if err != nil {
					b.Fatal(err)
				}
				m.SetCloneEngine(engine)
				refs, _, _ := m.Refs()
				var roots []string
				for _, oid := range refs {
					roots = append(roots, oid)
				}
				b.StartTimer()
				p, err := m.Consolidate(context.Background(), roots)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if fi, err := os.Stat(p.PackPath); err == nil {
					b.ReportMetric(float64(fi.Size())/(1<<20), "MiB/pack")
				}
				m.Close()
				b.StartTimer()
			}
		})
	}
}
