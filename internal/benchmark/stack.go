package benchmark

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/pgcluster"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/s3server"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/temporaldev"
	"github.com/gitsec/gitsec/workflows"
)

const (
	consumerKey    = "gitsec-bench"
	consumerSecret = "gitsec-bench-secret"
	benchWorkspace = "bench"
	benchBucket    = "gitsec-bench"
	// quietPeriod replaces the worker's 5 s coalescing wait: the benchmark times the backup,
	// not how long a workflow waits for more pushes.
	quietPeriod = 50 * time.Millisecond
)

// stack is the real set of servers the tests use, started for one benchmark run: a private
// Postgres, the Temporal dev server, versitygw (S3), the Bitbucket emulator with git
// http-backend, and `gitsec worker` as a separate process so that its memory can be measured.
type stack struct {
	dir      string
	log      *slog.Logger
	binary   string
	pg       *pgcluster.Cluster
	temporal *temporaldev.Server
	s3       *s3server.Server
	emu      *emulator.Server
	st       *store.Store
	tc       client.Client
	arc      *archive.Store
	env      []string
	token    string
	tenantID uuid.UUID
	instID   uuid.UUID
	wsID     uuid.UUID
	counts   *requestCounts
	worker   *exec.Cmd
	workerN  int
}

// requestCounts counts what reaches the emulator, by kind.
type requestCounts struct {
	gitList, gitFetch, rest atomic.Int64
}

type countsSnapshot struct {
	GitList  int64 `json:"git_info_refs"`
	GitFetch int64 `json:"git_upload_pack"`
	REST     int64 `json:"rest"`
}

func (c *requestCounts) snapshot() countsSnapshot {
	return countsSnapshot{GitList: c.gitList.Load(), GitFetch: c.gitFetch.Load(), REST: c.rest.Load()}
}

func (a countsSnapshot) minus(b countsSnapshot) countsSnapshot {
	return countsSnapshot{GitList: a.GitList - b.GitList, GitFetch: a.GitFetch - b.GitFetch, REST: a.REST - b.REST}
}

func (c *requestCounts) observe(r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/info/refs"):
		c.gitList.Add(1)
	case strings.HasSuffix(r.URL.Path, "/git-upload-pack"), strings.HasSuffix(r.URL.Path, "/git-receive-pack"):
		c.gitFetch.Add(1)
	case strings.HasPrefix(r.URL.Path, "/2.0/"):
		c.rest.Add(1)
	}
}

type stackOptions struct {
	Dir      string
	ToolsDir string
	Binary   string
	Seed     *emulator.Seed
	Log      *slog.Logger
}

func startStack(ctx context.Context, o stackOptions) (_ *stack, err error) {
	s := &stack{dir: o.Dir, log: o.Log, binary: o.Binary, counts: &requestCounts{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	// Postgres runs as the postgres OS user when started by root: it must reach its data dir.
	if err := os.Chmod(o.Dir, 0o755); err != nil {
		return nil, err
	}
	accessKey, secretKey := randomHex(10), randomHex(20)
	var wg sync.WaitGroup
	var pgErr, tErr, s3Err error
	wg.Go(func() {
		s.pg, pgErr = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(o.Dir, "postgres"), SkipFsync: true, Logger: quiet()})
	})
	wg.Go(func() {
		s.temporal, tErr = temporaldev.Start(ctx, temporaldev.Options{
			Binary: filepath.Join(o.ToolsDir, "temporal"), UIPort: -1, Namespace: "default",
			SearchAttributes: workflows.SearchAttributeTypes(), LogFile: filepath.Join(o.Dir, "temporal.log"), Logger: quiet(),
		})
	})
	wg.Go(func() {
		s.s3, s3Err = s3server.Start(ctx, s3server.Options{
			Binary: filepath.Join(o.ToolsDir, "versitygw"), Dir: filepath.Join(o.Dir, "s3"),
			AccessKey: accessKey, SecretKey: secretKey, LogFile: filepath.Join(o.Dir, "s3.log"), Logger: quiet(),
		})
	})
	wg.Wait()
	if err := errors.Join(pgErr, tErr, s3Err); err != nil {
		return nil, fmt.Errorf("start the benchmark's servers (run scripts/install-tools.sh first): %w", err)
	}
	if err := s.pg.CreateDatabase(ctx, "gitsec"); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	if err := s.s3.CreateBucket(ctx, benchBucket); err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	for _, kv := range s.s3.AWSEnv() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	os.Unsetenv("AWS_SESSION_TOKEN")
	os.Unsetenv("AWS_PROFILE")

	o.Log.Info("generating the benchmark's repositories in the emulator (deterministic; this takes a while for the large one)")
	started := time.Now()
	seed := *o.Seed
	seed.Users = []emulator.SeedUser{{Username: "bench"}}
	seed.Consumers = []emulator.Consumer{{Key: consumerKey, Secret: consumerSecret, CallbackURL: "http://127.0.0.1:1/callback"}}
	s.emu, err = emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: filepath.Join(o.Dir, "emulator"), Seed: &seed, Logger: quiet(),
		AccessTokenTTL: 24 * time.Hour, OnRequest: s.counts.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("start emulator: %w", err)
	}
	o.Log.Info("repositories generated", "duration", time.Since(started).Round(time.Millisecond))

	s.st, err = store.Open(ctx, s.pg.URL("gitsec"))
	if err != nil {
		return nil, err
	}
	if _, err := s.st.Migrate(ctx); err != nil {
		return nil, err
	}
	keyURL, err := secretbox.NewLocalKeyURL()
	if err != nil {
		return nil, err
	}
	box, err := secretbox.Open(ctx, keyURL)
	if err != nil {
		return nil, err
	}
	defer box.Close()
	if s.token, err = s.emulatorToken(); err != nil {
		return nil, err
	}
	ten, err := s.st.CreateTenant(ctx, "bench")
	if err != nil {
		return nil, err
	}
	s.tenantID = ten.ID
	sealed, err := providerclient.SealToken(ctx, box, &oauth2.Token{AccessToken: s.token, TokenType: "bearer", Expiry: time.Now().Add(23 * time.Hour)})
	if err != nil {
		return nil, err
	}
	if s.instID, err = s.st.CreateInstallationWithCredentials(ctx, ten.ID, "bitbucket", sealed); err != nil {
		return nil, err
	}
	if s.wsID, err = s.st.UpsertWorkspace(ctx, store.Workspace{TenantID: ten.ID, InstallationID: s.instID, ProviderUUID: "{bench}", Slug: benchWorkspace, IsAdmin: true}); err != nil {
		return nil, err
	}
	storageURL := s.s3.BucketURL(benchBucket)
	if s.arc, err = archive.Open(ctx, storageURL); err != nil {
		return nil, err
	}
	if s.tc, err = client.DialContext(ctx, client.Options{HostPort: s.temporal.HostPort(), Namespace: "default", Logger: tlog.NewStructuredLogger(quiet())}); err != nil {
		return nil, fmt.Errorf("connect to temporal: %w", err)
	}
	s.env = append(os.Environ(),
		"GITSEC_DATABASE_URL="+s.pg.URL("gitsec"),
		"GITSEC_TEMPORAL_ADDRESS="+s.temporal.HostPort(),
		"GITSEC_TEMPORAL_NAMESPACE=default",
		"GITSEC_STORAGE_URL="+storageURL,
		"GITSEC_SECRETS_KEY_URL="+keyURL,
		"GITSEC_MIRROR_DIR="+filepath.Join(o.Dir, "mirrors"),
		"GITSEC_RESTORE_DIR="+filepath.Join(o.Dir, "restores"),
		"GITSEC_BITBUCKET_API_URL="+s.emu.URL(),
		"GITSEC_BITBUCKET_GIT_URL="+s.emu.URL(),
		"GITSEC_BITBUCKET_OAUTH_URL="+s.emu.URL()+"/site/oauth2",
		"GITSEC_BITBUCKET_CLIENT_ID="+consumerKey,
		"GITSEC_BITBUCKET_CLIENT_SECRET="+consumerSecret,
		"GITSEC_BITBUCKET_REST_PER_HOUR=1000000",
		"GITSEC_BITBUCKET_GIT_PER_HOUR=1000000",
		"GITSEC_BACKUP_QUIET_PERIOD="+quietPeriod.String(),
		"GITSEC_WORKER_HOST_QUEUE=gitsec-host-bench",
		"GITSEC_LOG_LEVEL=warn",
	)
	return s, nil
}

func (s *stack) emulatorToken() (string, error) {
	resp, err := http.Post(s.emu.URL()+"/_emulator/tokens", "application/json", strings.NewReader(`{"user":"bench","consumer":"`+consumerKey+`"}`))
	if err != nil {
		return "", fmt.Errorf("emulator token: %w", err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("emulator token: status %d: %v", resp.StatusCode, err)
	}
	return tok.AccessToken, nil
}

// startWorker runs `gitsec worker` against the stack; profile names CPU and heap profiles the
// worker writes when it stops ("" for none).
func (s *stack) startWorker(ctx context.Context, profile string) error {
	s.workerN++
	logPath := filepath.Join(s.dir, fmt.Sprintf("worker-%d.log", s.workerN))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.binary, "worker")
	cmd.Env = s.env
	if profile != "" {
		cmd.Env = append(cmd.Env, "GITSEC_PROFILE="+profile)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s worker: %w", s.binary, err)
	}
	logFile.Close()
	s.worker = cmd
	// The worker is ready once it polls; a tiny backup proves that end to end.
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		desc, err := s.tc.DescribeTaskQueue(ctx, "gitsec-host-bench", enumspb.TASK_QUEUE_TYPE_ACTIVITY)
		if err == nil && len(desc.GetPollers()) > 0 {
			return nil
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("gitsec worker did not start polling within 90 s; see %s", logPath)
}

// stopWorker stops the worker gracefully, so that a profiling worker writes its profiles.
func (s *stack) stopWorker() {
	if s.worker == nil || s.worker.Process == nil {
		return
	}
	_ = s.worker.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.worker.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.worker.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.worker = nil
}

func (s *stack) stop() {
	s.stopWorker()
	if s.tc != nil {
		s.tc.Close()
	}
	if s.arc != nil {
		_ = s.arc.Close()
	}
	if s.st != nil {
		s.st.Close()
	}
	if s.emu != nil {
		_ = s.emu.Close()
	}
	if s.s3 != nil {
		_ = s.s3.Stop()
	}
	if s.temporal != nil {
		_ = s.temporal.Stop()
	}
	if s.pg != nil {
		_ = s.pg.Stop(context.Background())
	}
}

// addRepository creates a repository row for an emulator repository under a fresh provider
// UUID: a new UUID means an empty mirror and empty storage, a first backup from scratch.
func (s *stack) addRepository(ctx context.Context, slug string) (workflows.BackupTarget, error) {
	repoUUID := "{" + uuid.NewString() + "}"
	id, _, err := s.st.UpsertRepository(ctx, store.Repository{TenantID: s.tenantID, InstallationID: s.instID, WorkspaceID: &s.wsID,
		ProviderUUID: repoUUID, FullName: benchWorkspace + "/" + slug, Included: true})
	if err != nil {
		return workflows.BackupTarget{}, fmt.Errorf("add repository %s: %w", slug, err)
	}
	return workflows.BackupTarget{TenantID: s.tenantID.String(), InstallationID: s.instID.String(), RepositoryID: id.String(), ProviderUUID: repoUUID}, nil
}

func (s *stack) queue() backupqueue.Settings {
	return backupqueue.Settings{TaskQueue: "gitsec", QuietPeriod: quietPeriod, MaxWait: time.Minute}
}

// backupResult is one backup run as the benchmark sees it.
type backupResult struct {
	Wall     time.Duration
	Engine   time.Duration // the snapshot's own duration: staging, exports, commit
	Changed  bool
	Uploaded int64
	// Activities is the execution time of each activity of the run, from the workflow's history.
	Activities map[string]time.Duration
}

// activitiesTotal is the time the run spent inside activities.
func (r backupResult) activitiesTotal() time.Duration {
	var total time.Duration
	for _, d := range r.Activities {
		total += d
	}
	return total
}

// requestBackup asks for a backup the way a webhook or the API does and returns once its
// outcome is recorded in Postgres.
func (s *stack) requestBackup(ctx context.Context, t workflows.BackupTarget, trigger domain.TriggerKind) (backupResult, error) {
	repoID := uuid.MustParse(t.RepositoryID)
	before, err := s.st.GetRepository(ctx, s.tenantID, repoID)
	if err != nil {
		return backupResult{}, err
	}
	start := time.Now()
	if _, err := backupqueue.Request(ctx, s.tc, s.queue(), t, workflows.BackupRequest{Target: t, Trigger: trigger, RequestedAt: start.UTC()}); err != nil {
		return backupResult{}, fmt.Errorf("request backup: %w", err)
	}
	res, err := s.waitBackup(ctx, t, before, start)
	if err != nil {
		return res, err
	}
	res.Activities, err = s.activityTimes(ctx, t, start)
	return res, err
}

// activityTimes sums, per activity type, the execution time of the activities of the target's
// workflow scheduled after since (the run the benchmark just asked for).
func (s *stack) activityTimes(ctx context.Context, t workflows.BackupTarget, since time.Time) (map[string]time.Duration, error) {
	iter := s.tc.GetWorkflowHistory(ctx, workflows.BackupWorkflowID(t), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[int64]string{}
	started := map[int64]time.Time{}
	out := map[string]time.Duration{}
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return nil, fmt.Errorf("read workflow history: %w", err)
		}
		at := ev.GetEventTime().AsTime()
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if at.After(since) {
				scheduled[ev.GetEventId()] = ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			started[ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId()] = at
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			id := ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()
			if name, ok := scheduled[id]; ok && !started[id].IsZero() {
				out[name] += at.Sub(started[id])
			}
		}
	}
	return out, nil
}

func (s *stack) waitBackup(ctx context.Context, t workflows.BackupTarget, before store.Repository, start time.Time) (backupResult, error) {
	f := s.follow(ctx)
	f.add(pendingBackup{Target: t, Since: start})
	waits, err := f.wait()
	if err != nil {
		return backupResult{}, err
	}
	res := backupResult{Wall: waits[0]}
	r, err := s.st.GetRepository(ctx, s.tenantID, uuid.MustParse(t.RepositoryID))
	if err != nil {
		return backupResult{}, err
	}
	if r.LastSnapshotID != nil && (before.LastSnapshotID == nil || *before.LastSnapshotID != *r.LastSnapshotID) {
		snap, err := s.st.GetSnapshot(ctx, s.tenantID, *r.LastSnapshotID)
		if err != nil {
			return backupResult{}, err
		}
		res.Changed, res.Engine, res.Uploaded = true, snap.FinishedAt.Sub(snap.StartedAt), snap.BytesUploaded
	}
	return res, nil
}

// pendingBackup is a backup asked for at Since that a follower waits for.
type pendingBackup struct {
	Target workflows.BackupTarget
	Since  time.Time
}

// follower waits for many backups at once: one query every 20 ms follows all of them (a poller
// per backup would load the two cores with the measuring itself). Backups may be added while it
// runs; each one's wait ends when the outcome of a run that started after its Since is in
// Postgres.
type follower struct {
	s       *stack
	mu      sync.Mutex
	pending []pendingBackup
	waits   []time.Duration
	done    []bool
	closed  bool
	result  chan error
}

func (s *stack) follow(ctx context.Context) *follower {
	f := &follower{s: s, result: make(chan error, 1)}
	go func() { f.result <- f.run(ctx) }()
	return f
}

func (f *follower) add(p pendingBackup) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, p)
	f.waits = append(f.waits, 0)
	f.done = append(f.done, false)
}

// wait returns each added backup's wait, in the order added, once all are done.
func (f *follower) wait() ([]time.Duration, error) {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	if err := <-f.result; err != nil {
		return nil, err
	}
	return f.waits, nil
}

func (f *follower) run(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		f.mu.Lock()
		var ids []uuid.UUID
		left := 0
		for i, p := range f.pending {
			if !f.done[i] {
				left++
				ids = append(ids, uuid.MustParse(p.Target.RepositoryID))
			}
		}
		closed := f.closed
		f.mu.Unlock()
		if closed && left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d backups did not finish within 30 minutes", left)
		}
		if left > 0 {
			progress, err := f.s.st.BackupProgressOf(ctx, f.s.tenantID, ids)
			if err != nil {
				return err
			}
			now := time.Now()
			f.mu.Lock()
			for i, p := range f.pending {
				if f.done[i] {
					continue
				}
				pr := progress[uuid.MustParse(p.Target.RepositoryID)]
				switch {
				case pr.BackedUpThrough != nil && pr.BackedUpThrough.After(p.Since):
					f.waits[i], f.done[i] = now.Sub(p.Since), true
				case pr.LastStatus == domain.BackupFailed && pr.LastCheckedAt != nil && pr.LastCheckedAt.After(p.Since):
					f.mu.Unlock()
					return fmt.Errorf("backup of %s failed: %s", p.Target.RepositoryID, pr.LastError)
				}
			}
			f.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// request asks for a backup without waiting for it.
func (s *stack) request(ctx context.Context, t workflows.BackupTarget, trigger domain.TriggerKind, at time.Time) error {
	if _, err := backupqueue.Request(ctx, s.tc, s.queue(), t, workflows.BackupRequest{Target: t, Trigger: trigger, RequestedAt: at.UTC()}); err != nil {
		return fmt.Errorf("request backup: %w", err)
	}
	return nil
}

// storedBytes is what the bucket holds under a repository (packs, idx, manifests, exports).
func (s *stack) storedBytes(ctx context.Context, t workflows.BackupTarget) (int64, error) {
	return s.arc.RepositoryBytes(ctx, t.TenantID, t.ProviderUUID)
}

// emulatorAdmin calls the emulator's admin API.
func (s *stack) emulatorAdmin(method, path, body string) error {
	req, err := http.NewRequest(method, s.emu.URL()+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s = %d: %s", method, path, resp.StatusCode, msg)
	}
	return nil
}

func (s *stack) remote(slug string) string {
	return s.emu.URL() + "/" + benchWorkspace + "/" + slug + ".git"
}

// gitEnv authenticates stock git the way GitSec does (a header, never the URL) and keeps the
// user's configuration out.
func (s *stack) gitEnv() []string {
	basic := base64.StdEncoding.EncodeToString([]byte("x-token-auth:" + s.token))
	return append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+basic)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// quiet is the servers' logger: warnings and errors only, so that the driver's progress stays
// readable.
func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
