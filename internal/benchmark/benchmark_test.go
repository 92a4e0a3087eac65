package benchmark_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/benchmark"
	"github.com/gitsec/gitsec/internal/testenv"
)

// TestDriverRunsEveryWorkloadOnTinyRepositories is the smoke test that keeps `make bench` from
// rotting: the real driver, the real stack and a real `gitsec worker`, on tiny repositories,
// once per side. It checks what the reports claim, not how fast anything was.
func TestDriverRunsEveryWorkloadOnTinyRepositories(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	binary := filepath.Join(dir, "gitsec")
	build := exec.Command("go", "build", "-o", binary, "./cmd/gitsec")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build gitsec: %v\n%s", err, out)
	}
	md, js := filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, "bench-results.json")
	rep, err := benchmark.Run(context.Background(), benchmark.Options{
		Scale: "tiny", Runs: 1, Markdown: md, JSON: js, Binary: binary, ToolsDir: filepath.Join(root, "bin"),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}

	seen := map[string]bool{}
	for _, c := range rep.Cases {
		seen[c.Workload] = true
		for _, s := range c.Sides {
			if len(s.Seconds) != 1 || s.Median <= 0 {
				t.Errorf("%s / %s: seconds %v, want one positive run", c.Title, s.Name, s.Seconds)
			}
		}
		if strings.HasSuffix(c.Title, "no change") {
			gitsec := c.Sides[0]
			if gitsec.Bytes != 0 || gitsec.Requests == nil || gitsec.Requests.GitList != 1 || gitsec.Requests.GitFetch != 0 {
				t.Errorf("%s: GitSec wrote %d bytes with requests %+v, want 0 bytes and one info/refs only", c.Title, gitsec.Bytes, gitsec.Requests)
			}
		}
		if strings.Contains(c.Title, "one pushed commit") {
			gitsec := c.Sides[0]
			if gitsec.Bytes <= 0 || gitsec.Requests.GitList != 1 || gitsec.Requests.GitFetch != 1 {
				t.Errorf("%s: GitSec wrote %d bytes with requests %+v, want a new pack from one info/refs and one upload-pack", c.Title, gitsec.Bytes, gitsec.Requests)
			}
		}
		for _, v := range c.Values {
			if v.Value <= 0 {
				t.Errorf("%s: %s = %v, want a measurement", c.Title, v.Name, v.Value)
			}
		}
	}
	for _, w := range benchmark.AllWorkloads {
		if !seen[w] {
			t.Errorf("no case for workload %s", w)
		}
	}
	if len(rep.Repositories) < 4 || rep.Machine.Cores == 0 || rep.Machine.GitVersion == "" {
		t.Errorf("report lacks the repositories or the machine: %+v %+v", rep.Repositories, rep.Machine)
	}

	var decoded benchmark.Report
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &decoded); err != nil || len(decoded.Cases) != len(rep.Cases) {
		t.Fatalf("bench-results.json does not hold the cases: %v", err)
	}
	text, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	rerendered := filepath.Join(dir, "rerendered.md")
	if err := benchmark.Render(js, rerendered); err != nil {
		t.Fatal(err)
	}
	if again, err := os.ReadFile(rerendered); err != nil || string(again) != string(text) {
		t.Errorf("the report rendered from bench-results.json differs from the one the run wrote (%v)", err)
	}
	for _, want := range []string{"# Benchmarks", "## W1", "## W4", "## W7", "git clone --mirror", "git fetch --prune", "peak RSS"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
}
