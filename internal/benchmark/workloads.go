package benchmark

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/workflows"
)

type runner struct {
	s       *stack
	o       Options
	sc      scale
	rep     *Report
	scratch string
	n       int
	// After W1 and W2: one backed-up repository and one baseline mirror per shape, for W4.
	kept map[string]keptPair
	// Incremental runs seen by W4, for W6's share of Temporal.
	incrementalRuns []backupResult
}

// stageSide is the part of a backup run that competes with git: the StageBackup activity (change
// check, fetch, upload of the packs, the manifest draft); the export step and the commit follow.
const stageSide = "GitSec git step (StageBackup: check, fetch, upload)"

type keptPair struct {
	target workflows.BackupTarget
	mirror string
}

// alternate runs GitSec and its baseline in turn, GitSec first on even runs, so that neither
// side always finds the caches warm.
func alternate(run int, gitsec, baseline func() error) error {
	first, second := gitsec, baseline
	if run%2 == 1 {
		first, second = baseline, gitsec
	}
	if err := first(); err != nil {
		return err
	}
	return second()
}

func (r *runner) tempDir(name string) string {
	r.n++
	return filepath.Join(r.scratch, fmt.Sprintf("%s-%d", name, r.n))
}

// gitsecBackup runs one GitSec backup through Temporal and measures it from the outside.
func (r *runner) gitsecBackup(ctx context.Context, t workflows.BackupTarget, trigger domain.TriggerKind) (backupResult, int64, int64, countsSnapshot, error) {
	storedBefore, err := r.s.storedBytes(ctx, t)
	if err != nil {
		return backupResult{}, 0, 0, countsSnapshot{}, err
	}
	reqBefore := r.s.counts.snapshot()
	sampler := samplePeak(r.s.worker.Process.Pid)
	res, err := r.s.requestBackup(ctx, t, trigger)
	peak := sampler.stop()
	if err != nil {
		return res, 0, 0, countsSnapshot{}, err
	}
	storedAfter, err := r.s.storedBytes(ctx, t)
	if err != nil {
		return res, 0, 0, countsSnapshot{}, err
	}
	return res, peak, storedAfter - storedBefore, r.s.counts.snapshot().minus(reqBefore), nil
}

// baseline runs a stock-git command against the emulator; dir is what it writes to.
func (r *runner) baseline(ctx context.Context, dir string, args ...string) (measured, int64, countsSnapshot, error) {
	before, err := gitmirror.DiskUsage(dir)
	if err != nil {
		return measured{}, 0, countsSnapshot{}, err
	}
	reqBefore := r.s.counts.snapshot()
	m, err := runCommand(ctx, r.s.gitEnv(), "git", args...)
	if err != nil {
		return m, 0, countsSnapshot{}, err
	}
	after, err := gitmirror.DiskUsage(dir)
	if err != nil {
		return m, 0, countsSnapshot{}, err
	}
	return m, after - before, r.s.counts.snapshot().minus(reqBefore), nil
}

func (r *runner) describe(ctx context.Context, sh shape) error {
	dir := filepath.Join(r.o.WorkDir, "emulator", "git", benchWorkspace, sh.Slug+".git")
	info := Repository{Slug: sh.Slug, Source: "generated"}
	if sh.Import != "" {
		info.Source = "imported (GITSEC_BENCH_REPO)"
	}
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "count-objects", "-v").Output()
	if err != nil {
		return fmt.Errorf("count objects of %s: %w", sh.Slug, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "count", "in-pack":
			info.Objects += n
		case "size-pack":
			info.PackBytes = n << 10
		}
	}
	refs, err := exec.CommandContext(ctx, "git", "-C", dir, "for-each-ref", "--format=%(refname)").Output()
	if err != nil {
		return fmt.Errorf("list refs of %s: %w", sh.Slug, err)
	}
	info.Refs = strings.Count(string(refs), "\n")
	r.rep.Repositories = append(r.rep.Repositories, info)
	return nil
}

// fullBackup is W1 and W2: a first backup into an empty mirror and empty storage against `git
// clone --mirror` (and, for W1, a plain go-git mirror clone, which is what other Go backup
// tools do).
func (r *runner) fullBackup(ctx context.Context, workload string, sh shape, withGoGit bool) error {
	if err := r.describe(ctx, sh); err != nil {
		return err
	}
	c := r.rep.addCase(workload, fmt.Sprintf("Full backup of %s", sh.Slug))
	engine, stage, wall, clone, gogit := c.side("GitSec engine (snapshot duration)"), c.side(stageSide), c.side("GitSec through the workflow"), c.side("git clone --mirror"), (*Side)(nil)
	if withGoGit {
		gogit = c.side("go-git mirror clone (PlainClone, filesystem storage)")
	}
	remote := r.s.remote(sh.Slug)
	var lastTarget workflows.BackupTarget
	var lastMirror string
	for i := range r.o.Runs {
		runGitsec := func() error {
			t, err := r.s.addRepository(ctx, sh.Slug)
			if err != nil {
				return err
			}
			res, peak, written, req, err := r.gitsecBackup(ctx, t, domain.TriggerInitial)
			if err != nil {
				return err
			}
			if !res.Changed {
				return fmt.Errorf("first backup of %s wrote no snapshot", sh.Slug)
			}
			engine.add(res.Engine.Seconds(), peak, written, &req)
			stage.add(res.Activities[workflows.StageBackupActivity].Seconds(), peak, written, &req)
			wall.add(res.Wall.Seconds(), peak, written, &req)
			lastTarget = t
			return nil
		}
		runGit := func() error {
			dir := r.tempDir("clone")
			m, written, req, err := r.baseline(ctx, dir, "clone", "--quiet", "--mirror", remote, dir)
			if err != nil {
				return err
			}
			clone.add(m.Seconds, m.PeakRSS, written, &req)
			if lastMirror != "" {
				os.RemoveAll(lastMirror)
			}
			lastMirror = dir
			if gogit != nil {
				dir := r.tempDir("gogit")
				reqBefore := r.s.counts.snapshot()
				m, err := r.goGitClone(ctx, remote, dir)
				if err != nil {
					return err
				}
				written, _ := gitmirror.DiskUsage(dir)
				req := r.s.counts.snapshot().minus(reqBefore)
				gogit.add(m.Seconds, m.PeakRSS, written, &req)
				os.RemoveAll(dir)
			}
			return nil
		}
		if err := alternate(i, runGitsec, runGit); err != nil {
			return err
		}
		r.o.Log.Info("run", "workload", workload, "run", i+1, "gitsec_engine_s", engine.Seconds[i], "git_clone_s", clone.Seconds[i])
	}
	c.ratio("GitSec engine / git clone --mirror", engine, clone, 1.1)
	c.ratio("GitSec git step / git clone --mirror", stage, clone, 0)
	c.ratio("GitSec through the workflow / git clone --mirror", wall, clone, 0)
	if gogit != nil {
		c.ratio("GitSec engine / go-git mirror clone", engine, gogit, 0)
	}
	var pack int64
	for _, info := range r.rep.Repositories {
		if info.Slug == sh.Slug {
			pack = info.PackBytes
		}
	}
	if pack > 0 {
		c.Values = append(c.Values, Value{Name: "peak RSS of the worker / pack size", Value: float64(engine.PeakRSS) / float64(pack), Unit: "x (target <= 1.5x)"})
	}
	if r.kept == nil {
		r.kept = map[string]keptPair{}
	}
	r.kept[sh.Slug] = keptPair{target: lastTarget, mirror: lastMirror}
	return nil
}

// goGitClone runs `gitsec bench gogit-clone` (a subprocess, so its memory is its own), the
// token on stdin.
func (r *runner) goGitClone(ctx context.Context, remote, dir string) (measured, error) {
	cmd := exec.CommandContext(ctx, r.o.Binary, "bench", "gogit-clone", remote, dir)
	cmd.Stdin = strings.NewReader(r.s.token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measured{}, err
	}
	sampler := samplePeak(cmd.Process.Pid)
	err := cmd.Wait()
	m := measured{Seconds: time.Since(start).Seconds(), PeakRSS: sampler.stop()}
	if err != nil {
		return m, fmt.Errorf("go-git clone: %w: %s", err, stderr.String())
	}
	return m, nil
}

// incrementals is W4: after the full backups, the same upstream change is fetched by GitSec
// and by `git fetch --prune` in the baseline's mirror, for three kinds of change.
func (r *runner) incrementals(ctx context.Context) error {
	for _, sh := range []shape{r.sc.medium, r.sc.large} {
		pair, ok := r.kept[sh.Slug]
		if !ok {
			// W1/W2 did not run: set the pair up without measuring it.
			t, err := r.s.addRepository(ctx, sh.Slug)
			if err != nil {
				return err
			}
			if _, err := r.s.requestBackup(ctx, t, domain.TriggerInitial); err != nil {
				return err
			}
			dir := r.tempDir("clone")
			if _, _, _, err := r.baseline(ctx, dir, "clone", "--quiet", "--mirror", r.s.remote(sh.Slug), dir); err != nil {
				return err
			}
			pair = keptPair{target: t, mirror: dir}
			if err := r.describe(ctx, sh); err != nil {
				return err
			}
		}
		upstream := filepath.Join(r.o.WorkDir, "emulator", "git", benchWorkspace, sh.Slug+".git")
		changes := []struct {
			title string
			apply func(i int) error
		}{
			{"one pushed commit", func(int) error {
				return r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/push", `{"commits":1}`)
			}},
			{"50 commits, a force-push and a deleted branch", func(int) error {
				if err := r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/push", `{"commits":50}`); err != nil {
					return err
				}
				branches, err := r.branches(ctx, upstream)
				if err != nil {
					return err
				}
				if len(branches) < 2 {
					return fmt.Errorf("%s has too few branches left for a force-push and a deletion", sh.Slug)
				}
				forced, deleted := branches[0], branches[len(branches)-1]
				if err := r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/force-push", fmt.Sprintf(`{"branch":%q,"back":1}`, forced)); err != nil {
					return err
				}
				return r.s.emulatorAdmin("DELETE", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/refs/branches/"+deleted, "")
			}},
			{"no change", func(int) error { return nil }},
		}
		for _, ch := range changes {
			c := r.rep.addCase("W4", fmt.Sprintf("Incremental of %s: %s", sh.Slug, ch.title))
			engine, stage, wall, fetch := c.side("GitSec engine (snapshot duration)"), c.side(stageSide), c.side("GitSec through the workflow"), c.side("git fetch --prune")
			for i := range r.o.Runs {
				if err := ch.apply(i); err != nil {
					return err
				}
				runGitsec := func() error {
					res, peak, written, req, err := r.gitsecBackup(ctx, pair.target, domain.TriggerWebhook)
					if err != nil {
						return err
					}
					if ch.title == "no change" {
						if res.Changed {
							return fmt.Errorf("a backup without an upstream change wrote snapshot (%s)", sh.Slug)
						}
						// Nothing is staged or committed: the workflow's wall time is all there is.
						engine.add(res.Wall.Seconds(), peak, written, &req)
					} else {
						if !res.Changed {
							return fmt.Errorf("the backup after %q wrote no snapshot (%s)", ch.title, sh.Slug)
						}
						engine.add(res.Engine.Seconds(), peak, written, &req)
						r.incrementalRuns = append(r.incrementalRuns, res)
					}
					stage.add(res.Activities[workflows.StageBackupActivity].Seconds(), peak, written, &req)
					wall.add(res.Wall.Seconds(), peak, written, &req)
					return nil
				}
				runGit := func() error {
					m, written, req, err := r.baseline(ctx, pair.mirror, "-C", pair.mirror, "fetch", "--quiet", "--prune")
					if err != nil {
						return err
					}
					fetch.add(m.Seconds, m.PeakRSS, written, &req)
					return nil
				}
				if err := alternate(i, runGitsec, runGit); err != nil {
					return err
				}
			}
			if ch.title == "no change" {
				c.Notes = append(c.Notes, "Without a change GitSec neither stages nor commits a snapshot, so its row is the workflow's whole run; "+
					"the target is one ls-remote (one info/refs request, no upload-pack) and 0 bytes written.")
				c.ratio("GitSec git step / git fetch --prune", stage, fetch, 1.0)
				c.ratio("GitSec through the workflow / git fetch --prune", wall, fetch, 0)
			} else {
				c.ratio("GitSec engine / git fetch --prune", engine, fetch, 1.0)
				c.ratio("GitSec git step / git fetch --prune", stage, fetch, 0)
				c.ratio("GitSec through the workflow / git fetch --prune", wall, fetch, 0)
			}
		}
	}
	return nil
}

func (r *runner) branches(ctx context.Context, repo string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "for-each-ref", "--format=%(refname:strip=2)", "refs/heads/feature/").Output()
	if err != nil {
		return nil, fmt.Errorf("list branches: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// manySmall is W3: many small repositories backed up from scratch at the worker's default
// concurrency, against a sequential and a parallel `git clone --mirror` loop.
func (r *runner) manySmall(ctx context.Context) error {
	n := r.sc.smallRepos
	c := r.rep.addCase("W3", fmt.Sprintf("%d small repositories from scratch", n))
	gitsec, seq, par := c.side("GitSec (all requested at once; 4 backups at a time per worker)"), c.side("git clone --mirror, sequential loop"), c.side("git clone --mirror, 4 in parallel")
	for i := range r.o.Runs {
		runGitsec := func() error {
			targets := make([]workflows.BackupTarget, n)
			for k := range n {
				t, err := r.s.addRepository(ctx, smallSlug(k))
				if err != nil {
					return err
				}
				targets[k] = t
			}
			reqBefore := r.s.counts.snapshot()
			sampler := samplePeak(r.s.worker.Process.Pid)
			start := time.Now()
			f := r.s.follow(ctx)
			for _, t := range targets {
				if err := r.s.request(ctx, t, domain.TriggerInitial, start); err != nil {
					sampler.stop()
					return err
				}
				f.add(pendingBackup{Target: t, Since: start})
			}
			_, err := f.wait()
			elapsed := time.Since(start)
			peak := sampler.stop()
			if err != nil {
				return err
			}
			var written int64
			for _, t := range targets {
				b, err := r.s.storedBytes(ctx, t)
				if err != nil {
					return err
				}
				written += b
			}
			req := r.s.counts.snapshot().minus(reqBefore)
			gitsec.add(elapsed.Seconds(), peak, written, &req)
			return nil
		}
		runLoops := func() error {
			for _, loop := range []struct {
				side     *Side
				parallel int
			}{{seq, 1}, {par, 4}} {
				dir := r.tempDir("small")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				var urls strings.Builder
				for k := range n {
					fmt.Fprintf(&urls, "%s\n", r.s.remote(smallSlug(k)))
				}
				list := filepath.Join(dir, "urls")
				if err := os.WriteFile(list, []byte(urls.String()), 0o644); err != nil {
					return err
				}
				reqBefore := r.s.counts.snapshot()
				script := fmt.Sprintf(`xargs -P %d -I{} sh -c 'git clone --quiet --mirror "$1" "%s/$(basename "$1")"' _ {} < %s`, loop.parallel, dir, list)
				m, err := runCommand(ctx, r.s.gitEnv(), "sh", "-c", script)
				if err != nil {
					return err
				}
				written, _ := gitmirror.DiskUsage(dir)
				req := r.s.counts.snapshot().minus(reqBefore)
				loop.side.add(m.Seconds, m.PeakRSS, written, &req)
				os.RemoveAll(dir)
			}
			return nil
		}
		if err := alternate(i, runGitsec, runLoops); err != nil {
			return err
		}
		r.o.Log.Info("run", "workload", "W3", "run", i+1, "gitsec_s", gitsec.Seconds[i])
	}
	c.ratio("GitSec / sequential git loop", gitsec, seq, 0)
	c.ratio("GitSec / parallel git loop", gitsec, par, 0)
	c.Notes = append(c.Notes, "GitSec's time runs from the first request to the last recorded outcome and includes the export step of "+
		"each repository (metadata and pull requests over REST) and the upload to S3; the loops only clone.")
	return nil
}

// restoreChain is W5: `gitsec restore` of a snapshot at the end of a chain of incremental
// snapshots, offline from storage, against `git clone --mirror` of one bundle of the same state.
func (r *runner) restoreChain(ctx context.Context) error {
	sh := r.sc.chain
	if err := r.describe(ctx, sh); err != nil {
		return err
	}
	t, err := r.s.addRepository(ctx, sh.Slug)
	if err != nil {
		return err
	}
	if _, err := r.s.requestBackup(ctx, t, domain.TriggerInitial); err != nil {
		return err
	}
	for i := 1; i < r.sc.chainLength; i++ {
		if err := r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/push", `{"commits":5}`); err != nil {
			return err
		}
		if _, err := r.s.requestBackup(ctx, t, domain.TriggerWebhook); err != nil {
			return err
		}
	}
	upstream := filepath.Join(r.o.WorkDir, "emulator", "git", benchWorkspace, sh.Slug+".git")
	bundle := filepath.Join(r.scratch, "chain.bundle")
	if out, err := exec.CommandContext(ctx, "git", "-C", upstream, "bundle", "create", bundle, "--all").CombinedOutput(); err != nil {
		return fmt.Errorf("git bundle create: %w: %s", err, out)
	}
	c := r.rep.addCase("W5", fmt.Sprintf("Offline restore of the last of %d snapshots of %s", r.sc.chainLength, sh.Slug))
	restore, clone := c.side("gitsec restore (downloads and verifies every pack of the chain)"), c.side("git clone --mirror of one bundle")
	storageURL := r.s.s3.BucketURL(benchBucket)
	for i := range r.o.Runs {
		runGitsec := func() error {
			dir := r.tempDir("restore")
			env := os.Environ()
			if r.o.ProfileDir != "" {
				env = append(env, "GITSEC_PROFILE="+filepath.Join(r.o.ProfileDir, fmt.Sprintf("W5-restore-%d", i+1)))
			}
			m, err := runCommand(ctx, env, r.o.Binary, "restore", "--storage", storageURL, "--repository", strings.Trim(t.ProviderUUID, "{}"), "--to", dir)
			if err != nil {
				return err
			}
			written, _ := gitmirror.DiskUsage(dir)
			restore.add(m.Seconds, m.PeakRSS, written, nil)
			if err := sameRefs(ctx, dir, upstream); err != nil {
				return err
			}
			return os.RemoveAll(dir)
		}
		runGit := func() error {
			dir := r.tempDir("bundle-clone")
			m, err := runCommand(ctx, r.s.gitEnv(), "git", "clone", "--quiet", "--mirror", bundle, dir)
			if err != nil {
				return err
			}
			written, _ := gitmirror.DiskUsage(dir)
			clone.add(m.Seconds, m.PeakRSS, written, nil)
			return os.RemoveAll(dir)
		}
		if err := alternate(i, runGitsec, runGit); err != nil {
			return err
		}
	}
	c.ratio("gitsec restore / git clone of a bundle", restore, clone, 0)
	c.Notes = append(c.Notes, "Every restored repository is compared with the upstream one (`git for-each-ref`). The Restore workflow's push "+
		"into Bitbucket is not measured here yet: the emulator's receive-pack is the bottleneck of that path, not GitSec.")
	return nil
}

// sameRefs fails unless two repositories have the same references.
func sameRefs(ctx context.Context, a, b string) error {
	list := func(dir string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", "-C", dir, "for-each-ref", "--format=%(objectname) %(refname)").Output()
		return string(out), err
	}
	ra, err := list(a)
	if err != nil {
		return err
	}
	rb, err := list(b)
	if err != nil {
		return err
	}
	if ra != rb {
		return fmt.Errorf("restored repository %s differs from upstream %s", a, b)
	}
	return nil
}

// temporalShare is W6: how much of an incremental backup's wall time is Temporal (the workflow's
// scheduling and activity round trips, outside the snapshot's own duration), and push-to-snapshot
// latency when many pushes arrive across many repositories.
func (r *runner) temporalShare(ctx context.Context) error {
	if len(r.incrementalRuns) > 0 {
		c := r.rep.addCase("W6", "Temporal's share of an incremental backup (W4's runs)")
		var shares, overhead []float64
		steps := map[string][]float64{}
		for _, run := range r.incrementalRuns {
			if run.Wall > 0 {
				outside := run.Wall - run.activitiesTotal()
				shares = append(shares, 100*outside.Seconds()/run.Wall.Seconds())
				overhead = append(overhead, outside.Seconds()*1000)
			}
			for name, d := range run.Activities {
				steps[name] = append(steps[name], d.Seconds()*1000)
			}
		}
		slices.Sort(shares)
		slices.Sort(overhead)
		c.Values = append(c.Values,
			Value{Name: "median share of the wall time outside activities (Temporal)", Value: median(shares), Unit: "%"},
			Value{Name: "median time outside activities", Value: median(overhead), Unit: "ms"})
		for _, name := range slices.Sorted(maps.Keys(steps)) {
			v := steps[name]
			slices.Sort(v)
			c.Values = append(c.Values, Value{Name: "median time in " + name, Value: median(v), Unit: "ms"})
		}
		c.Notes = append(c.Notes, fmt.Sprintf("Wall time runs from the backup request (Signal-With-Start) to the outcome recorded in Postgres; "+
			"activity times come from the workflow's history (started to completed). What lies outside the activities is Temporal: the "+
			"quiet-period timer (%s in the benchmark, yet the dev server fires timers on a tick of about one second), workflow tasks and "+
			"activity dispatch.", quietPeriod))
	}
	n, repos := r.sc.pushes, r.sc.pushRepos
	targets := make([]workflows.BackupTarget, repos)
	for k := range repos {
		t, err := r.s.addRepository(ctx, smallSlug(k))
		if err != nil {
			return err
		}
		if _, err := r.s.requestBackup(ctx, t, domain.TriggerInitial); err != nil {
			return err
		}
		targets[k] = t
	}
	c := r.rep.addCase("W6", fmt.Sprintf("Push to snapshot: %d pushes across %d repositories", n, repos))
	f := r.s.follow(ctx)
	start := time.Now()
	for i := range n {
		// Ten pushes a second, round robin over the repositories.
		time.Sleep(time.Until(start.Add(time.Duration(i) * 100 * time.Millisecond)))
		k := i % repos
		if err := r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+smallSlug(k)+"/push", `{"commits":1}`); err != nil {
			return err
		}
		pushed := time.Now()
		// What the webhook receiver does once a delivery is verified.
		if err := r.s.request(ctx, targets[k], domain.TriggerWebhook, pushed); err != nil {
			return err
		}
		f.add(pendingBackup{Target: targets[k], Since: pushed})
	}
	waits, err := f.wait()
	if err != nil {
		return err
	}
	latencies := make([]float64, len(waits))
	for i, d := range waits {
		latencies[i] = d.Seconds()
	}
	slices.Sort(latencies)
	c.Values = append(c.Values,
		Value{Name: "p50 push to snapshot", Value: latencies[len(latencies)/2] * 1000, Unit: "ms"},
		Value{Name: "p95 push to snapshot", Value: latencies[min(len(latencies)-1, len(latencies)*95/100)] * 1000, Unit: "ms"},
		Value{Name: "max push to snapshot", Value: latencies[len(latencies)-1] * 1000, Unit: "ms"})
	c.Notes = append(c.Notes, fmt.Sprintf("Each push is followed by the backup request the webhook receiver makes for a verified delivery "+
		"(Signal-With-Start with the push time); latency runs until the repository's outcome covering the push is in Postgres. Quiet "+
		"period %s; production's default of 5 s adds to every latency by design (a push burst becomes one backup).", quietPeriod))
	return nil
}

// dailyBytes is W7: storage after a month of daily incremental snapshots of an active
// repository, against one final mirror and against a full copy every day.
func (r *runner) dailyBytes(ctx context.Context) error {
	sh := r.sc.daily
	if err := r.describe(ctx, sh); err != nil {
		return err
	}
	t, err := r.s.addRepository(ctx, sh.Slug)
	if err != nil {
		return err
	}
	mirror := r.tempDir("daily")
	if _, _, _, err := r.baseline(ctx, mirror, "clone", "--quiet", "--mirror", r.s.remote(sh.Slug), mirror); err != nil {
		return err
	}
	if _, err := r.s.requestBackup(ctx, t, domain.TriggerInitial); err != nil {
		return err
	}
	fullCopies, err := gitmirror.DiskUsage(filepath.Join(mirror, "objects"))
	if err != nil {
		return err
	}
	for day := 1; day < r.sc.days; day++ {
		if err := r.s.emulatorAdmin("POST", "/_emulator/repositories/"+benchWorkspace+"/"+sh.Slug+"/push", `{"commits":20}`); err != nil {
			return err
		}
		if _, err := r.s.requestBackup(ctx, t, domain.TriggerSchedule); err != nil {
			return err
		}
		if _, _, _, err := r.baseline(ctx, mirror, "-C", mirror, "fetch", "--quiet", "--prune"); err != nil {
			return err
		}
		// A full copy of this day's state is what a fresh clone of it stores.
		day := r.tempDir("day")
		if _, _, _, err := r.baseline(ctx, day, "clone", "--quiet", "--mirror", r.s.remote(sh.Slug), day); err != nil {
			return err
		}
		b, err := gitmirror.DiskUsage(filepath.Join(day, "objects"))
		if err != nil {
			return err
		}
		fullCopies += b
		os.RemoveAll(day)
	}
	final := r.tempDir("final")
	if _, _, _, err := r.baseline(ctx, final, "clone", "--quiet", "--mirror", r.s.remote(sh.Slug), final); err != nil {
		return err
	}
	finalBytes, err := gitmirror.DiskUsage(filepath.Join(final, "objects"))
	if err != nil {
		return err
	}
	stored, err := r.s.storedBytes(ctx, t)
	if err != nil {
		return err
	}
	c := r.rep.addCase("W7", fmt.Sprintf("%d daily snapshots of %s (20 commits a day)", r.sc.days, sh.Slug))
	c.Values = append(c.Values,
		Value{Name: "GitSec storage (packs, idx, manifests, exports)", Value: float64(stored), Unit: "bytes"},
		Value{Name: "one final mirror (git clone --mirror, objects/)", Value: float64(finalBytes), Unit: "bytes"},
		Value{Name: fmt.Sprintf("%d full copies (one mirror clone per day)", r.sc.days), Value: float64(fullCopies), Unit: "bytes"},
		Value{Name: "GitSec / one final mirror", Value: float64(stored) / float64(finalBytes), Unit: "x"},
		Value{Name: "GitSec / full copies", Value: float64(stored) / float64(fullCopies), Unit: "x"})
	return nil
}
