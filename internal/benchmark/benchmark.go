// Package benchmark is the driver behind `make bench`: it starts the same real stack as the
// tests (Postgres, the Temporal dev server, versitygw, the Bitbucket emulator with git
// http-backend) plus `gitsec worker` as its own process, runs each workload side by side with a
// stock-git baseline (alternating the two, at least three times in a full run), samples the peak
// RSS of each side's process tree, counts git and REST requests and bytes written, and writes
// docs/benchmarks.md and bench-results.json. Numbers are ratios measured in one run on one
// machine; nothing here asserts a time.
package benchmark

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gitsec/gitsec/internal/emulator"
)

// Options configure one benchmark run.
type Options struct {
	// Scale is "full" (the two repository shapes of the issue, about an hour), "quick" (scaled
	// down, a few minutes) or "tiny" (the smoke test in `make test`).
	Scale string
	// Runs is how many times each side of a timed workload runs (default 3).
	Runs int
	// Workloads limits the run to these (W1..W7); empty runs all.
	Workloads []string
	// Repo is a bare repository to import as the medium repository (GITSEC_BENCH_REPO).
	Repo string
	// ProfileDir, when set, receives CPU and heap profiles of the GitSec side of each workload.
	ProfileDir string
	// Markdown and JSON are the report paths ("" writes none).
	Markdown, JSON string
	// Binary is the gitsec executable run as the worker, the offline restore and the go-git
	// baseline; ToolsDir holds the temporal and versitygw binaries.
	Binary, ToolsDir string
	// WorkDir holds the run's servers and repositories (a temporary directory when empty).
	WorkDir string
	Log     *slog.Logger
}

// shape is one generated repository.
type shape struct {
	Slug string
	Gen  *emulator.Generate
	// Import is a bare repository to serve instead of a generated one.
	Import string
}

type scale struct {
	medium, large, chain, daily shape
	smallRepos                  int
	chainLength, days           int
	pushes, pushRepos           int
}

func scaleFor(name, importRepo string) (scale, error) {
	var sc scale
	switch name {
	case "full":
		sc = scale{
			// About a 16 MiB pack, 25k objects and 2,790 refs, like the public Go project of the issue.
			medium: shape{Slug: "medium", Gen: &emulator.Generate{Commits: 6000, Branches: 1400, Tags: 1390, BinaryBytes: 12 << 20}},
			// About 320 MiB, 490k objects and 1,015 refs, like git.git's heads and tags.
			large:      shape{Slug: "large", Gen: &emulator.Generate{Commits: 122000, Branches: 500, Tags: 515, BinaryBytes: 280 << 20}},
			chain:      shape{Slug: "chain", Gen: &emulator.Generate{Commits: 3000, Branches: 100, Tags: 100}},
			daily:      shape{Slug: "daily", Gen: &emulator.Generate{Commits: 3000, Branches: 40, Tags: 40}},
			smallRepos: 500, chainLength: 20, days: 30, pushes: 200, pushRepos: 50,
		}
	case "quick":
		sc = scale{
			medium:     shape{Slug: "medium", Gen: &emulator.Generate{Commits: 1500, Branches: 700, Tags: 690, BinaryBytes: 2 << 20}},
			large:      shape{Slug: "large", Gen: &emulator.Generate{Commits: 12000, Branches: 100, Tags: 100, BinaryBytes: 24 << 20}},
			chain:      shape{Slug: "chain", Gen: &emulator.Generate{Commits: 500, Branches: 20, Tags: 20}},
			daily:      shape{Slug: "daily", Gen: &emulator.Generate{Commits: 500, Branches: 20, Tags: 20}},
			smallRepos: 40, chainLength: 20, days: 30, pushes: 40, pushRepos: 10,
		}
	case "tiny":
		sc = scale{
			medium:     shape{Slug: "medium", Gen: &emulator.Generate{Commits: 120, Branches: 20, Tags: 20}},
			large:      shape{Slug: "large", Gen: &emulator.Generate{Commits: 200, Branches: 5, Tags: 5, BinaryBytes: 1 << 20}},
			chain:      shape{Slug: "chain", Gen: &emulator.Generate{Commits: 60, Branches: 5, Tags: 5}},
			daily:      shape{Slug: "daily", Gen: &emulator.Generate{Commits: 60, Branches: 5, Tags: 5}},
			smallRepos: 4, chainLength: 4, days: 4, pushes: 6, pushRepos: 3,
		}
	default:
		return sc, fmt.Errorf("unknown scale %q (want full, quick or tiny)", name)
	}
	if importRepo != "" {
		abs, err := filepath.Abs(importRepo)
		if err != nil {
			return sc, err
		}
		if _, err := os.Stat(filepath.Join(abs, "objects")); err != nil {
			if _, err2 := os.Stat(filepath.Join(abs, ".git", "objects")); err2 != nil {
				return sc, fmt.Errorf("GITSEC_BENCH_REPO=%s is not a git repository: %w", importRepo, err)
			}
		}
		sc.medium = shape{Slug: "imported", Import: abs}
	}
	return sc, nil
}

func (sc scale) seed() *emulator.Seed {
	repos := []emulator.SeedRepository{}
	for _, sh := range []shape{sc.medium, sc.large, sc.chain, sc.daily} {
		repos = append(repos, emulator.SeedRepository{Slug: sh.Slug, Generate: sh.Gen, Import: sh.Import})
	}
	for i := range max(sc.smallRepos, sc.pushRepos) {
		repos = append(repos, emulator.SeedRepository{Slug: smallSlug(i), Generate: &emulator.Generate{Commits: 25, Branches: 2, Tags: 2}})
	}
	return &emulator.Seed{Workspaces: []emulator.SeedWorkspace{{Slug: benchWorkspace, Admins: []string{"bench"}, Repositories: repos}}}
}

func smallSlug(i int) string { return fmt.Sprintf("small-%03d", i) }

// AllWorkloads are the workloads in the order they run.
var AllWorkloads = []string{"W1", "W2", "W3", "W4", "W5", "W6", "W7"}

// Run runs the benchmark and writes its reports.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Scale == "" {
		o.Scale = "full"
	}
	if len(o.Workloads) == 0 {
		o.Workloads = AllWorkloads
	}
	for _, w := range o.Workloads {
		if !slices.Contains(AllWorkloads, w) {
			return nil, fmt.Errorf("unknown workload %q (want one of %s)", w, strings.Join(AllWorkloads, ", "))
		}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("the baselines need the git CLI: %w", err)
	}
	sc, err := scaleFor(o.Scale, o.Repo)
	if err != nil {
		return nil, err
	}
	if o.WorkDir == "" {
		// Under the system temp dir: Postgres runs as the postgres user when started by root and
		// cannot enter a 0700 home.
		if o.WorkDir, err = os.MkdirTemp("", "gitsec-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(o.WorkDir)
	}
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return nil, err
		}
		if o.ProfileDir, err = filepath.Abs(o.ProfileDir); err != nil {
			return nil, err
		}
	}
	started := time.Now()
	s, err := startStack(ctx, stackOptions{Dir: o.WorkDir, ToolsDir: o.ToolsDir, Binary: o.Binary, Seed: sc.seed(), Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer s.stop()
	rep := newReport(o)
	rep.Machine = machine(ctx)
	rep.Settings = []string{
		fmt.Sprintf("Worker settings: GITSEC_MAX_CONCURRENT_BACKUPS at its default (4), GITSEC_BACKUP_QUIET_PERIOD=%s (the default 5 s would only add a constant wait), storage on versitygw (S3).", quietPeriod),
		"GitSec engine time is the snapshot's own duration (staging with change detection, fetch and upload, the export step, the commit), as the snapshots table records it; \"through the workflow\" runs from the backup request to the outcome in Postgres.",
	}
	r := &runner{s: s, o: o, sc: sc, rep: rep, scratch: filepath.Join(o.WorkDir, "scratch")}
	if err := os.MkdirAll(r.scratch, 0o755); err != nil {
		return nil, err
	}
	if err := s.startWorker(ctx, ""); err != nil {
		return nil, err
	}
	for _, w := range o.Workloads {
		if o.ProfileDir != "" {
			s.stopWorker()
			if err := s.startWorker(ctx, filepath.Join(o.ProfileDir, w+"-worker")); err != nil {
				return nil, err
			}
		}
		o.Log.Info("workload", "name", w, "title", workloadTitles[w])
		wStart := time.Now()
		var err error
		switch w {
		case "W1":
			err = r.fullBackup(ctx, "W1", sc.medium, true)
		case "W2":
			err = r.fullBackup(ctx, "W2", sc.large, false)
		case "W3":
			err = r.manySmall(ctx)
		case "W4":
			err = r.incrementals(ctx)
		case "W5":
			err = r.restoreChain(ctx)
		case "W6":
			err = r.temporalShare(ctx)
		case "W7":
			err = r.dailyBytes(ctx)
		}
		if err != nil {
			return rep, fmt.Errorf("%s: %w", w, err)
		}
		o.Log.Info("workload done", "name", w, "duration", time.Since(wStart).Round(time.Second))
	}
	if o.ProfileDir != "" {
		s.stopWorker()
	}
	rep.DurationSeconds = time.Since(started).Seconds()
	if err := rep.write(o.Markdown, o.JSON); err != nil {
		return rep, err
	}
	return rep, nil
}

var workloadTitles = map[string]string{
	"W1": "full backup of the medium repository",
	"W2": "full backup of the large repository",
	"W3": "many small repositories from scratch",
	"W4": "incremental backups",
	"W5": "offline restore of a snapshot chain",
	"W6": "Temporal's share and push-to-snapshot latency",
	"W7": "bytes stored after daily incremental snapshots",
}

// machine describes where the numbers were taken.
func machine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if out, err := exec.CommandContext(ctx, "git", "version").Output(); err == nil {
		m.GitVersion = strings.TrimSpace(strings.TrimPrefix(string(out), "git version "))
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(data), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryBytes = kb << 10
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return m
}
