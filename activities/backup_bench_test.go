package activities_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/workflows"
)

// benchCommits gives the generated repository well over 20,000 objects (the generator writes
// a commit, two trees and a blob per commit on main).
const benchCommits = 7000

// BenchmarkBackupVersusGit compares GitSec's backup run with stock git on one generated
// repository served by the emulator's git http-backend: the first RunBackup (ls-remote, go-git
// mirror clone, upload to file:// storage, manifest) against `git clone --mirror`, and after
// one pushed commit the incremental RunBackup against `git fetch` in that clone. RunBackup is
// called as an activity (Temporal's test activity environment) so that workflow scheduling and
// the coalescing quiet period are not in the numbers; the repository row and credentials come
// from a real Postgres. Each iteration starts from an empty mirror and empty storage.
func BenchmarkBackupVersusGit(b *testing.B) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	emuDir := b.TempDir()
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: emuDir, Logger: log,
		Seed: &emulator.Seed{
			Users:     []emulator.SeedUser{{Username: "alice"}},
			Consumers: []emulator.Consumer{{Key: "bench", Secret: "bench-secret", CallbackURL: "http://127.0.0.1:1/cb"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Repositories: []emulator.SeedRepository{
				{Slug: "big", Generate: &emulator.Generate{Commits: benchCommits, Branches: 20, Tags: 20}},
			}}},
		},
	})
	if err != nil {
		b.Fatalf("start emulator: %v", err)
	}
	b.Cleanup(func() { emu.Close() })
	objects := countObjects(b, filepath.Join(emuDir, "git", "acme", "big.git"))
	if objects < 20_000 {
		b.Fatalf("generated repository has %d objects, want at least 20,000", objects)
	}

	st, err := store.Open(ctx, testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	keyURL, err := secretbox.NewLocalKeyURL()
	if err != nil {
		b.Fatal(err)
	}
	box, err := secretbox.Open(ctx, keyURL)
	if err != nil {
		b.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	emulatorAdmin(b, emu.URL(), "POST", "/_emulator/tokens", `{"user":"alice","consumer":"bench"}`, &tok)
	token := tok.AccessToken
	ten, err := st.CreateTenant(ctx, "bench-corp")
	if err != nil {
		b.Fatal(err)
	}
	sealed, err := providerclient.SealToken(ctx, box, &oauth2.Token{AccessToken: token, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	instID, err := st.CreateInstallationWithCredentials(ctx, ten.ID, "bitbucket", sealed)
	if err != nil {
		b.Fatal(err)
	}
	wsID, err := st.UpsertWorkspace(ctx, store.Workspace{TenantID: ten.ID, InstallationID: instID, ProviderUUID: "{ws}", Slug: "acme", IsAdmin: true})
	if err != nil {
		b.Fatal(err)
	}
	repoUUID := "{" + uuid.NewString() + "}"
	repoID, _, err := st.UpsertRepository(ctx, store.Repository{TenantID: ten.ID, InstallationID: instID, WorkspaceID: &wsID, ProviderUUID: repoUUID, FullName: "acme/big"})
	if err != nil {
		b.Fatal(err)
	}
	clients := &providerclient.Factory{Store: st, Box: box,
		OAuth:  bitbucket.OAuthConfig("bench", "bench-secret", emu.URL()+"/site/oauth2", "http://127.0.0.1:1/cb"),
		APIURL: emu.URL(), GitURL: emu.URL(), Logger: log,
		RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000)}
	target := workflows.BackupTarget{TenantID: ten.ID.String(), InstallationID: instID.String(), RepositoryID: repoID.String(), ProviderUUID: repoUUID}
	remote := emu.URL() + "/acme/big.git"

	var fullS, cloneS, goGitCloneS, incrS, gitFetchS float64
	var fullBytes, incrBytes int64
	b.ResetTimer()
	for range b.N {
		iterDir := b.TempDir()
		storage, err := archive.Open(ctx, "file://"+filepath.Join(iterDir, "storage")+"?create_dir=true")
		if err != nil {
			b.Fatal(err)
		}
		acts := &activities.Backups{Store: st, Logger: log, Archive: storage, Clients: clients,
			MirrorDir: filepath.Join(iterDir, "mirrors"), HostQueue: "bench-host"}
		run := func(trigger domain.TriggerKind) (workflows.RunBackupResult, float64) {
			var suite testsuite.WorkflowTestSuite
			suite.SetLogger(tlog.NewStructuredLogger(log))
			env := suite.NewTestActivityEnvironment()
			env.RegisterActivity(acts)
			start := time.Now()
			val, err := env.ExecuteActivity(workflows.RunBackupActivity, workflows.RunBackupInput{Target: target, Trigger: trigger})
			elapsed := time.Since(start).Seconds()
			var res workflows.RunBackupResult
			if err == nil {
				err = val.Get(&res)
			}
			if err != nil {
				b.Fatalf("RunBackup (%s): %v", trigger, err)
			}
			if !res.Changed {
				b.Fatalf("RunBackup (%s) found nothing to back up: %+v", trigger, res)
			}
			return res, elapsed
		}
		timeGit := func(args ...string) float64 {
			start := time.Now()
			if _, err := gitWithToken(token, args...); err != nil {
				b.Fatal(err)
			}
			return time.Since(start).Seconds()
		}

		// (1) GitSec full backup, (2) git clone --mirror of the same repository.
		full, s := run(domain.TriggerInitial)
		fullS += s
		fullBytes += full.BytesUploaded
		clone := filepath.Join(iterDir, "clone.git")
		cloneS += timeGit("clone", "--quiet", "--mirror", remote, clone)
		// The go-git clone alone (no upload), to tell the transport from the storage cost.
		goGitCloneS += goGitMirrorClone(b, remote, token, filepath.Join(iterDir, "gogit.git"))

		// (3) one pushed commit, GitSec incremental backup, (4) git fetch in the clone.
		emulatorAdmin(b, emu.URL(), "POST", "/_emulator/repositories/acme/big/push", `{"commits":1}`, nil)
		incr, s := run(domain.TriggerWebhook)
		incrS += s
		incrBytes += incr.BytesUploaded
		if incr.PacksUploaded != 1 || incr.ParentID != full.SnapshotID {
			b.Fatalf("incremental run = %+v, want one new pack after %s", incr, full.SnapshotID)
		}
		gitFetchS += timeGit("-C", clone, "fetch", "--quiet", "--prune")
		if err := storage.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()

	n := float64(b.N)
	fullS, cloneS, goGitCloneS, incrS, gitFetchS = fullS/n, cloneS/n, goGitCloneS/n, incrS/n, gitFetchS/n
	b.ReportMetric(float64(objects), "objects")
	b.ReportMetric(fullS, "gitsec_full_s")
	b.ReportMetric(cloneS, "git_clone_s")
	b.ReportMetric(goGitCloneS, "gogit_clone_s")
	b.ReportMetric(fullS/cloneS, "gitsec_full/git_clone")
	b.ReportMetric(incrS, "gitsec_incr_s")
	b.ReportMetric(gitFetchS, "git_fetch_s")
	b.ReportMetric(incrS/gitFetchS, "gitsec_incr/git_fetch")
	b.ReportMetric(float64(fullBytes)/n, "full_upload_B")
	b.ReportMetric(float64(incrBytes)/n, "incr_upload_B")
	b.Logf("%d objects: gitsec full %.2fs vs git clone --mirror %.2fs (x%.2f; go-git clone alone %.2fs), gitsec incremental %.3fs vs git fetch %.3fs (x%.2f); uploaded %d B full, %d B incremental",
		objects, fullS, cloneS, fullS/cloneS, goGitCloneS, incrS, gitFetchS, incrS/gitFetchS, fullBytes/int64(b.N), incrBytes/int64(b.N))
}

// countObjects counts the objects reachable from every reference of a bare repository.
func countObjects(b *testing.B, dir string) int {
	b.Helper()
	out, err := exec.Command("git", "-C", dir, "rev-list", "--objects", "--all").Output()
	if err != nil {
		b.Fatalf("count objects of %s: %v", dir, err)
	}
	return strings.Count(string(out), "\n")
}

// emulatorAdmin calls the emulator's admin API (no authentication) and decodes the answer.
func emulatorAdmin(b *testing.B, base, method, path, body string, out any) {
	b.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b.Fatalf("%s %s = %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			b.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// goGitMirrorClone times gitmirror's fetch into an empty mirror: what RunBackup's clone costs
// without the upload.
func goGitMirrorClone(b *testing.B, remote, token, dir string) float64 {
	b.Helper()
	m, err := gitmirror.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	if _, err := m.Fetch(context.Background(), remote, tokenAuth(token), nil); err != nil {
		b.Fatalf("go-git mirror clone: %v", err)
	}
	return time.Since(start).Seconds()
}
