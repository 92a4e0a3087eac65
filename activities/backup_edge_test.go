package activities_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Edge cases of a backup run, end to end through the BackupRepository workflow on the
// emulator's git server (git http-backend), like testBackupLifecycle.

// gitWithToken runs stock git with an x-token-auth Basic header passed through the environment,
// so the token is neither in the remote URL nor in the arguments that error messages show.
func gitWithToken(token string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	basic := base64.StdEncoding.EncodeToString([]byte("x-token-auth:" + token))
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+basic)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// tokenAuth is how GitSec authenticates git over HTTP to Bitbucket with an OAuth access token.
func tokenAuth(token string) *githttp.BasicAuth {
	return &githttp.BasicAuth{Username: "x-token-auth", Password: token}
}

// upstreamRefs lists the emulator repository's references with stock git ls-remote: the truth
// a snapshot must equal (HEAD and peeled tag lines left out, as in a manifest).
func (e *backupEnv) upstreamRefs(fullName string) gitmirror.RefMap {
	e.t.Helper()
	out, err := gitWithToken(e.token, "ls-remote", e.emu.URL()+"/"+fullName+".git")
	if err != nil {
		e.t.Fatal(err)
	}
	refs := gitmirror.RefMap{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		oid, name, ok := strings.Cut(line, "\t")
		if !ok || name == "HEAD" || strings.HasSuffix(name, "^{}") {
			continue
		}
		refs[name] = oid
	}
	return refs
}

func (e *backupEnv) repoKey(slug string) archive.RepoKey {
	e.t.Helper()
	key, err := archive.NewRepoKey(e.tenantID.String(), e.repos[slug].ProviderUUID)
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

// mirrorDir is where the host worker keeps the repository's mirror (see StageBackup).
func (e *backupEnv) mirrorDir(slug string) string {
	return filepath.Join(e.mirrors, e.tenantID.String(), archive.NormalizeUUID(e.repos[slug].ProviderUUID))
}

func (e *backupEnv) addFault(rule emulator.FaultRule) string {
	e.t.Helper()
	body, err := json.Marshal(rule)
	if err != nil {
		e.t.Fatal(err)
	}
	var added struct {
		Rules []emulator.FaultRule `json:"rules"`
	}
	e.emuJSON("POST", "/_emulator/faults", string(body), &added)
	if len(added.Rules) != 1 {
		e.t.Fatalf("adding a fault returned %+v", added)
	}
	return added.Rules[0].ID
}

// faultFired says how often the emulator injected the fault so far.
func (e *backupEnv) faultFired(id string) int {
	e.t.Helper()
	var list struct {
		Rules []emulator.FaultRule `json:"rules"`
	}
	e.emuJSON("GET", "/_emulator/faults", "", &list)
	for _, r := range list.Rules {
		if r.ID == id {
			return r.Fired
		}
	}
	e.t.Fatalf("fault %s is gone", id)
	return 0
}

// activityRun is one StageBackup activity of a workflow run, by history event ids.
type activityRun struct {
	scheduled, started, closed int64
	attempt                    int32
	outcome                    enumspb.EventType
}

// stageActivities reads the StageBackup activities from the history of the repository's
// latest BackupRepository workflow run, in the order they were scheduled.
func (e *backupEnv) stageActivities(slug string) []activityRun {
	e.t.Helper()
	ctx := context.Background()
	iter := e.temporal.GetWorkflowHistory(ctx, workflows.BackupWorkflowID(backupqueue.Target(e.repos[slug])), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var runs []*activityRun
	bySchedule := map[int64]*activityRun{}
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			e.t.Fatalf("read workflow history: %v", err)
		}
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == workflows.StageBackupActivity {
				r := &activityRun{scheduled: ev.GetEventId()}
				runs = append(runs, r)
				bySchedule[r.scheduled] = r
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			a := ev.GetActivityTaskStartedEventAttributes()
			if r := bySchedule[a.GetScheduledEventId()]; r != nil {
				r.started, r.attempt = ev.GetEventId(), a.GetAttempt()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			if r := bySchedule[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]; r != nil {
				r.closed, r.outcome = ev.GetEventId(), ev.GetEventType()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			if r := bySchedule[ev.GetActivityTaskFailedEventAttributes().GetScheduledEventId()]; r != nil {
				r.closed, r.outcome = ev.GetEventId(), ev.GetEventType()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			if r := bySchedule[ev.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId()]; r != nil {
				r.closed, r.outcome = ev.GetEventId(), ev.GetEventType()
			}
		}
	}
	out := make([]activityRun, len(runs))
	for i, r := range runs {
		out[i] = *r
	}
	return out
}

// A repository with more than a thousand references (branches and annotated tags) is mirrored
// exactly, and a later run records deleted and moved references among them.
func TestBackupManyRefs(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true",
		emulator.SeedRepository{Slug: "many-refs", Generate: &emulator.Generate{Commits: 60, Branches: 700, Tags: 400}})

	upstream := e.upstreamRefs("acme/many-refs")
	if len(upstream) != 1101 {
		t.Fatalf("emulator seeded %d refs, want 1101 (main, 700 branches, 400 tags)", len(upstream))
	}
	e.backup("many-refs", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	snaps := e.snapshots("many-refs")
	if len(snaps) != 1 || snaps[0].RefsCount != len(upstream) || snaps[0].PacksCount != 1 {
		t.Fatalf("snapshots = %+v, want one with %d refs and one pack", snaps, len(upstream))
	}
	if m := e.restoreAndVerify("many-refs", snaps[0].ID); !m.Refs.Equal(upstream) {
		t.Fatalf("snapshot refs differ from ls-remote: %d vs %d refs", len(m.Refs), len(upstream))
	}

	// A deleted branch, a deleted tag and a moved branch among the thousand.
	e.emuJSON("DELETE", "/_emulator/repositories/acme/many-refs/refs/branches/feature/branch-350", "", nil)
	e.emuJSON("DELETE", "/_emulator/repositories/acme/many-refs/refs/tags/v1.200.0", "", nil)
	e.emuJSON("POST", "/_emulator/repositories/acme/many-refs/push", `{"branch":"feature/branch-700","commits":1}`, nil)
	upstream = e.upstreamRefs("acme/many-refs")
	e.backup("many-refs")
	snaps = e.snapshots("many-refs")
	if len(snaps) != 2 || snaps[0].RefsCount != 1099 || snaps[0].PacksCount != 2 || snaps[0].ParentID == nil || *snaps[0].ParentID != snaps[1].ID {
		t.Fatalf("snapshots after ref changes = %+v", snaps)
	}
	m := e.restoreAndVerify("many-refs", snaps[0].ID)
	if !m.Refs.Equal(upstream) {
		t.Fatalf("second snapshot refs differ from ls-remote: %d vs %d refs", len(m.Refs), len(upstream))
	}
	for _, gone := range []string{"refs/heads/feature/branch-350", "refs/tags/v1.200.0"} {
		if _, ok := m.Refs[gone]; ok {
			t.Fatalf("deleted %s is still in the snapshot", gone)
		}
	}
}

// A 50 MB binary file (incompressible) is backed up and restored byte-exact: fsck --strict
// re-hashes every object, and the blob has its full size.
func TestBackupLargeBinaryFile(t *testing.T) {
	const size = 50 << 20
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true",
		emulator.SeedRepository{Slug: "assets", Generate: &emulator.Generate{Commits: 3, BinaryBytes: size}})

	e.backup("assets", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	snaps := e.snapshots("assets")
	if len(snaps) != 1 || snaps[0].TotalBytes < size || snaps[0].BytesUploaded < size {
		t.Fatalf("snapshots = %+v, want one holding the %d-byte blob", snaps, size)
	}
	m := e.restoreAndVerify("assets", snaps[0].ID)
	if !m.Refs.Equal(e.upstreamRefs("acme/assets")) {
		t.Fatalf("snapshot refs %v differ from upstream", m.Refs)
	}
	dir := filepath.Join(t.TempDir(), "assets.git")
	if _, err := e.archive.Restore(context.Background(), e.repoKey("assets"), snaps[0].ID, dir, nil); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", dir, "cat-file", "-s", "refs/heads/main:assets/blob.bin").Output()
	if err != nil {
		t.Fatalf("restored repository lacks assets/blob.bin: %v", err)
	}
	if got, _ := strconv.Atoi(strings.TrimSpace(string(out))); got != size {
		t.Fatalf("restored blob has %d bytes, want %d", got, size)
	}
}

// A repository renamed upstream keeps its UUID: once the store has its new full name (as the
// next repository sync records it), the backup fetches from the new slug into the same mirror
// and storage prefix, and the snapshot chain goes on.
func TestBackupAfterUpstreamRename(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	ctx := context.Background()
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	first := e.snapshots("api")[0]

	e.emuJSON("POST", "/_emulator/repositories/acme/api/rename", `{"slug":"api-v2"}`, nil)
	e.emuJSON("POST", "/_emulator/repositories/acme/api-v2/push", `{"commits":1}`, nil)
	var renamed struct {
		UUID     string `json:"uuid"`
		FullName string `json:"full_name"`
	}
	e.emuJSON("GET", "/2.0/repositories/acme/api-v2", "", &renamed)
	r := e.repo("api")
	if renamed.UUID != r.ProviderUUID || renamed.FullName != "acme/api-v2" {
		t.Fatalf("renamed repository = %+v, want UUID %s", renamed, r.ProviderUUID)
	}
	id, created, err := e.store.UpsertRepository(ctx, store.Repository{TenantID: r.TenantID, InstallationID: r.InstallationID,
		WorkspaceID: r.WorkspaceID, ProviderUUID: renamed.UUID, FullName: renamed.FullName})
	if err != nil || created || id != r.ID {
		t.Fatalf("upsert of the renamed repository = %s, created=%t, %v; want the existing row %s", id, created, err, r.ID)
	}

	e.backup("api")
	snaps := e.snapshots("api")
	if len(snaps) != 2 || snaps[0].ParentID == nil || *snaps[0].ParentID != first.ID || snaps[0].PacksCount != 2 {
		t.Fatalf("snapshots after the rename = %+v, want a second one after %s", snaps, first.ID)
	}
	// Incremental: the mirror was kept, only one small pack and the manifest went up.
	if snaps[0].BytesUploaded > 20_000 {
		t.Fatalf("backup after the rename uploaded %d bytes: a re-clone instead of a fetch?", snaps[0].BytesUploaded)
	}
	m := e.restoreAndVerify("api", snaps[0].ID)
	if m.Repository.FullName != "acme/api-v2" || !m.Refs.Equal(e.upstreamRefs("acme/api-v2")) {
		t.Fatalf("manifest after the rename: full name %q, refs %v", m.Repository.FullName, m.Refs)
	}
	ids, err := e.archive.ListSnapshots(ctx, e.repoKey("api"))
	if err != nil || len(ids) != 2 || ids[0] != m.ID || ids[1] != first.ID {
		t.Fatalf("snapshots under the repository's storage prefix = %v, %v; want [%s %s]", ids, err, m.ID, first.ID)
	}
	mirrors, err := os.ReadDir(filepath.Join(e.mirrors, e.tenantID.String()))
	if err != nil || len(mirrors) != 1 {
		t.Fatalf("worker mirrors = %v, %v; want the one mirror of the repository", mirrors, err)
	}
	if r := e.repo("api"); r.Status != domain.RepositoryActive || r.LastSnapshotID == nil || *r.LastSnapshotID != m.ID {
		t.Fatalf("repository after the rename = %+v", r)
	}
}

// A fetch whose connection is cut mid-pack fails the first StageBackup attempt; Temporal retries
// it and the backup completes, with no trace of the broken transfer in the snapshot.
func TestBackupRetriesFetchCutMidPack(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	drop := e.addFault(emulator.FaultRule{Method: "POST", PathRegex: `^/acme/api\.git/git-upload-pack$`, Kind: "drop", Count: 1, DropAfterBytes: 4096})

	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	if n := e.faultFired(drop); n != 1 {
		t.Fatalf("the drop fault fired %d times, want 1", n)
	}
	runs := e.stageActivities("api")
	if len(runs) != 1 || runs[0].attempt != 2 || runs[0].outcome != enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
		t.Fatalf("StageBackup activities = %+v, want one that completed on its second attempt", runs)
	}
	snaps := e.snapshots("api")
	if len(snaps) != 1 || snaps[0].PacksCount != 1 {
		t.Fatalf("snapshots = %+v, want one with one pack", snaps)
	}
	if m := e.restoreAndVerify("api", snaps[0].ID); !m.Refs.Equal(e.upstreamRefs("acme/api")) {
		t.Fatalf("snapshot refs %v differ from upstream", m.Refs)
	}
	// The cut transfer left nothing behind in the mirror: one pack and its idx.
	files, err := os.ReadDir(filepath.Join(e.mirrorDir("api"), "objects", "pack"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	if len(names) != 2 {
		t.Fatalf("mirror pack directory holds %v, want one pack and its idx", names)
	}
	if r := e.repo("api"); r.LastBackupStatus != "succeeded" {
		t.Fatalf("repository after the retried backup = %+v", r)
	}
}

// A worker died after uploading the pack of its fetch and before writing the manifest. The next
// run finds the pack in the mirror, sees it already stored (no second upload) and commits a
// complete, restorable snapshot.
func TestBackupAfterCrashBetweenPackUploadAndManifest(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	ctx := context.Background()
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	first := e.snapshots("api")[0]

	// The crashed run: fetch into the worker's mirror and store the new pack, no manifest. The
	// pushed file is incompressible, so a second upload of the pack would show in the bytes.
	const fileSize = 300_000
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", fmt.Sprintf(`{"commits":1,"file_size":%d}`, fileSize), nil)
	mirror, err := gitmirror.Open(e.mirrorDir("api"))
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := mirror.Fetch(ctx, e.emu.URL()+"/acme/api.git", tokenAuth(e.token), nil)
	if err != nil {
		t.Fatalf("fetch of the crashed run: %v", err)
	}
	if len(fetched.NewPacks) != 1 {
		t.Fatalf("fetch wrote %d packs, want 1", len(fetched.NewPacks))
	}
	orphan := fetched.NewPacks[0]
	if _, uploaded, err := e.archive.PutPack(ctx, e.repoKey("api"), orphan, nil); err != nil || uploaded < fileSize {
		t.Fatalf("upload of the crashed run's pack: %d bytes, %v", uploaded, err)
	}
	if err := mirror.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, err := e.archive.ListSnapshots(ctx, e.repoKey("api")); err != nil || len(ids) != 1 {
		t.Fatalf("snapshots after the crash = %v, %v; want only the first", ids, err)
	}

	e.backup("api")
	snaps := e.snapshots("api")
	if len(snaps) != 2 || snaps[0].ParentID == nil || *snaps[0].ParentID != first.ID || snaps[0].PacksCount != 2 {
		t.Fatalf("snapshots after the recovery run = %+v", snaps)
	}
	if snaps[0].BytesUploaded <= 0 || snaps[0].BytesUploaded >= fileSize {
		t.Fatalf("recovery run uploaded %d bytes: want the manifest only, the pack was already stored", snaps[0].BytesUploaded)
	}
	m := e.restoreAndVerify("api", snaps[0].ID)
	if last := m.Packs[len(m.Packs)-1]; last.Name != orphan.Name || last.Snapshot != m.ID {
		t.Fatalf("manifest packs = %+v, want the crashed run's %s introduced by %s", m.Packs, orphan.Name, m.ID)
	}
	if !m.Refs.Equal(e.upstreamRefs("acme/api")) {
		t.Fatalf("snapshot refs %v differ from upstream", m.Refs)
	}
}

// A request that arrives while a run is busy is not run beside it: it waits, and one more run
// follows the first, which sees the commit pushed meanwhile.
func TestBackupRequestDuringRunFollowsIt(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Holding the first run's pack request lets the test act while the run is inside its fetch.
	hold := e.addFault(emulator.FaultRule{Method: "POST", PathRegex: `^/acme/api\.git/git-upload-pack$`, Kind: "latency", Latency: emulator.Duration(3 * time.Second), Count: 1})

	r := e.repos["api"]
	target := backupqueue.Target(r)
	id, err := backupqueue.Request(ctx, e.temporal, e.settings, target, workflows.BackupRequest{Trigger: domain.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	for e.faultFired(hold) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the first run never reached its fetch")
		case <-time.After(50 * time.Millisecond):
		}
	}
	var status workflows.BackupStatus
	v, err := e.temporal.QueryWorkflow(ctx, id, "", workflows.BackupStatusQuery)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Get(&status); err != nil || status.State != "running" || status.RunsCompleted != 0 {
		t.Fatalf("status while the first run fetches = %+v, %v", status, err)
	}

	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	pushed := e.upstreamRefs("acme/api")
	if _, err := backupqueue.Request(ctx, e.temporal, e.settings, target, workflows.BackupRequest{Trigger: domain.TriggerWebhook, DeliveryID: "d-during"}); err != nil {
		t.Fatal(err)
	}
	if err := e.temporal.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatalf("backup workflow: %v", err)
	}

	runs := e.stageActivities("api")
	if len(runs) != 2 {
		t.Fatalf("StageBackup activities = %+v, want two", runs)
	}
	if runs[0].closed == 0 || runs[1].scheduled < runs[0].closed {
		t.Fatalf("StageBackup activities overlap: %+v", runs)
	}
	snaps := e.snapshots("api")
	if len(snaps) != 2 {
		t.Fatalf("snapshots = %+v, want two", snaps)
	}
	older, newer := snaps[1], snaps[0]
	if older.Trigger != "manual" || newer.Trigger != "webhook" || newer.ParentID == nil || *newer.ParentID != older.ID {
		t.Fatalf("snapshots = %+v, want the manual run followed by the webhook run", snaps)
	}
	if m := e.restoreAndVerify("api", older.ID); m.Refs.Equal(pushed) {
		t.Fatal("the first run already saw the commit pushed during its fetch")
	}
	m := e.restoreAndVerify("api", newer.ID)
	if !m.Refs.Equal(pushed) || m.Trigger.DeliveryID != "d-during" {
		t.Fatalf("second snapshot: refs %v (want %v), trigger %+v", m.Refs, pushed, m.Trigger)
	}
}
