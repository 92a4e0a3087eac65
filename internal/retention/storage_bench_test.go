package retention_test

import (
	"context"

	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
	"github.com/gitsec/gitsec/internal/retention"
)

// BenchmarkThirtyDailySnapshotsStorage replays the last 600 first-parent commits of the main
// branch of GITSEC_BENCH_REPO (a real bare repository) as 30 days of an active repository, 20
// commits a day, backs up each day through the real fetch and staging code, and reports the
// bytes stored without consolidation, with consolidation every 8 packs, and with consolidation
// after a keep-daily 7 retention run, against one final mirror (make bench-go).
func BenchmarkThirtyDailySnapshotsStorage(b *testing.B) {
	src := os.Getenv("GITSEC_BENCH_REPO")
	if src == "" {
		b.Skip("set GITSEC_BENCH_REPO to a bare repository with a main (or master) branch")
	}
	branch := "main"
	if strings.TrimSpace(gitmirrortest.Git(b, src, "branch", "--list", "main")) == "" {
		branch = "master"
	}
	commits := strings.Fields(gitmirrortest.Git(b, src, "rev-list", "--first-parent", "--reverse", branch))
	const days, perDay = 30, 20
	if len(commits) < days*perDay+1 {
		b.Skipf("%s has %d first-parent commits on %s, want at least %d", src, len(commits), branch, days*perDay+1)
	}
	start := len(commits) - days*perDay
	for range b.N {
		for _, mode := range []struct {
			name        string
			consolidate archive.ConsolidatePolicy
			policy      *retention.Policy
		}{
			{"no-consolidation", archive.ConsolidatePolicy{}, nil},
			{"consolidate-8", archive.ConsolidatePolicy{MaxPacks: 8}, nil},
			{"consolidate-8+keep-daily-7", archive.ConsolidatePolicy{MaxPacks: 8}, &retention.Policy{KeepDaily: 7}},
		} {
			ctx := context.Background()
			root := b.TempDir()
			upstream := filepath.Join(root, "upstream.git")
			gitmirrortest.Git(b, root, "init", "--quiet", "--bare", "--initial-branch=main", upstream)
			url := gitmirrortest.Serve(b, root) + "/upstream.git"
			st, err := archive.Open(ctx, "file://"+filepath.Join(root, "storage")+"?create_dir=1")
			if err != nil {
				b.Fatal(err)
			}
			repo, _ := archive.NewRepoKey("tenant-1", "6a1b2c3d-0000-4000-8000-000000000002")
			m, err := gitmirror.Open(filepath.Join(root, "mirror.git"))
			if err != nil {
				b.Fatal(err)
			}
			for d := range days {
				tip := commits[start+(d+1)*perDay-1]
				gitmirrortest.Git(b, src, "push", "--quiet", "--force", upstream, tip+":refs/heads/main")
				if _, err := m.Fetch(ctx, url, nil, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := st.SnapshotMirror(ctx, m, archive.SnapshotRequest{
					Tenant: repo.Tenant, Repository: archive.Repository{Provider: "bitbucket", UUID: repo.UUID, FullName: "acme/bench"},
					Trigger: archive.Trigger{Kind: domain.TriggerSchedule}, Now: day0.AddDate(0, 0, d), Consolidate: mode.consolidate,
				}); err != nil {
					b.Fatal(err)
				}
			}
			if mode.policy != nil {
				plan, err := retention.PlanRepository(ctx, st, repo, *mode.policy, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := retention.Forget(ctx, st, repo, plan, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := retention.Sweep(ctx, st, repo, retention.SweepOptions{Now: day0.AddDate(0, 0, days)}); err != nil {
					b.Fatal(err)
				}
			}
			stored, err := st.RepositoryBytes(ctx, repo.Tenant, repo.UUID)
			if err != nil {
				b.Fatal(err)
			}
			final := filepath.Join(root, "final.git")
			gitmirrortest.Git(b, root, "clone", "--quiet", "--mirror", "--no-local", upstream, final)
			mirrorBytes, err := gitmirror.DiskUsage(filepath.Join(final, "objects"))
			if err != nil {
				b.Fatal(err)
			}
			latest, err := st.LoadManifest(ctx, repo, "latest")
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%s: stored %.2f MiB, final mirror %.2f MiB (%.2fx); latest snapshot lists %d packs", mode.name,
				float64(stored)/(1<<20), float64(mirrorBytes)/(1<<20), float64(stored)/float64(mirrorBytes), len(latest.Packs))
			b.ReportMetric(float64(stored)/float64(mirrorBytes), mode.name+"-x-mirror")
			m.Close()
			st.Close()
		}
	}
}
