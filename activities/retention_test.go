package activities_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"gocloud.dev/blob"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/retention"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// consolidateEvery3 bounds restore chains at three packs, so that a handful of backups
// consolidate and retention has packs to free.
func consolidateEvery3(a *worker.Activities) {
	a.Backups.Consolidate = archive.ConsolidatePolicy{MaxPacks: 3}
}

// pushAndBackup pushes one commit to acme/api and backs it up, n times.
func (e *backupEnv) pushAndBackup(n int) {
	e.t.Helper()
	for range n {
		e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
		e.backup("api")
	}
}

func (e *backupEnv) setPolicy(slug string, p retention.Policy) {
	e.t.Helper()
	doc, err := json.Marshal(p)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.SetRepositoryRetentionPolicy(context.Background(), e.tenantID, e.repos[slug].ID, doc); err != nil {
		e.t.Fatal(err)
	}
}

func (e *backupEnv) runRetention(dryRun bool) workflows.RetentionResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "retention-test-" + uuid.NewString(), TaskQueue: e.settings.TaskQueue},
		workflows.RetentionWorkflowName, workflows.RetentionInput{InstallationRef: workflows.InstallationRef{TenantID: e.tenantID.String(), InstallationID: e.instID.String()}, DryRun: dryRun})
	if err != nil {
		e.t.Fatal(err)
	}
	var res workflows.RetentionResult
	if err := run.Get(ctx, &res); err != nil {
		e.t.Fatalf("retention workflow: %v", err)
	}
	return res
}

func (e *backupEnv) storedBytes(slug string) int64 {
	e.t.Helper()
	n, err := e.archive.RepositoryBytes(context.Background(), e.tenantID.String(), e.repos[slug].ProviderUUID)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *backupEnv) auditActions() map[string]int {
	e.t.Helper()
	events, err := e.store.ListAuditEvents(context.Background(), e.tenantID, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int{}
	for _, ev := range events {
		out[ev.Action]++
	}
	return out
}

func ids(e *backupEnv, slug string) []string {
	var out []string
	for _, s := range e.snapshots(slug) {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

func TestRetentionForgetsSweepsAuditsAndKeepsLegalHolds(t *testing.T) {
	e := newBackupEnvWith(t, testenv.S3(t), consolidateEvery3)
	e.backup("api")
	e.pushAndBackup(5)
	before := ids(e, "api")
	if len(before) != 6 {
		t.Fatalf("%d snapshots, want 6", len(before))
	}
	// Snapshots 0-2 list 1-3 packs; 3 consolidates (one full pack); 4 and 5 add one each.
	// Keep-last 2 keeps 4 and 5, and 3 which introduced their first pack; the oldest is under
	// legal hold. So 1 and 2 are forgotten, and the packs they introduced are freed.
	if _, err := e.store.SetLegalHold(context.Background(), e.tenantID, before[0], "litigation 2026-17", "alice"); err != nil {
		t.Fatal(err)
	}
	e.setPolicy("api", retention.Policy{KeepLast: 2})
	bytesBefore := e.storedBytes("api")

	dry := e.runRetention(true)
	if dry.WouldForget != 2 || dry.WouldFreeBytes <= 0 || dry.Forgotten != 0 || dry.ObjectsDeleted != 0 {
		t.Fatalf("dry run = %+v, want 2 snapshots that would be forgotten and nothing done", dry)
	}
	if got := ids(e, "api"); !slices.Equal(got, before) || e.storedBytes("api") != bytesBefore {
		t.Fatalf("the dry run changed something: %v, %d bytes", got, e.storedBytes("api"))
	}

	res := e.runRetention(false)
	t.Logf("retention: %+v", res)
	if res.Forgotten != 2 || res.ObjectsDeleted < 4 || res.Refused != 0 {
		t.Fatalf("retention = %+v, want 2 snapshots forgotten and their 2 packs + idx deleted", res)
	}
	want := []string{before[0], before[3], before[4], before[5]}
	if got := ids(e, "api"); !slices.Equal(got, want) {
		t.Fatalf("snapshot rows after retention %v, want %v", got, want)
	}
	key := e.repoKey("api")
	stored, err := e.archive.ListSnapshots(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(stored)
	if !slices.Equal(stored, want) {
		t.Fatalf("manifests after retention %v, want %v", stored, want)
	}
	if freed := bytesBefore - e.storedBytes("api"); freed != dry.WouldFreeBytes {
		t.Fatalf("freed %d bytes, the dry run said %d", freed, dry.WouldFreeBytes)
	}
	audit := e.auditActions()
	if audit[domain.AuditSnapshotForgotten] != 2 || audit[domain.AuditBackupObjectDeleted] != res.ObjectsDeleted {
		t.Fatalf("audit %v, want 2 forgotten snapshots and %d deleted objects", audit, res.ObjectsDeleted)
	}
	for _, id := range want {
		e.restoreAndVerify("api", id)
	}
	run, err := e.store.LastRetentionRun(context.Background(), e.tenantID, e.repos["api"].ID)
	var recorded workflows.RetentionRepositoryResult
	if err != nil || run == nil || json.Unmarshal(run.Result, &recorded) != nil || recorded.Forgotten != 2 || recorded.Status != domain.RetentionApplied {
		t.Fatalf("recorded run = %+v (%v), want the 2 forgotten snapshots", recorded, err)
	}

	// A second run finds nothing to do: a run cut short is finished by the next one.
	again := e.runRetention(false)
	if again.Forgotten != 0 || again.ObjectsDeleted != 0 {
		t.Fatalf("second run = %+v", again)
	}
	// Releasing the hold lets the policy forget the oldest snapshot.
	if _, err := e.store.ReleaseLegalHold(context.Background(), e.tenantID, before[0]); err != nil {
		t.Fatal(err)
	}
	if third := e.runRetention(false); third.Forgotten != 1 {
		t.Fatalf("after the hold was released: %+v, want the oldest forgotten", third)
	}
}

func TestBackupsCommittedDuringRetentionWithoutGraceStayRestorable(t *testing.T) {
	e := newBackupEnvWith(t, testenv.S3(t), consolidateEvery3)
	e.backup("api")
	e.setPolicy("api", retention.Policy{KeepLast: 1})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var deleted, runs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res := e.runRetention(false)
			deleted.Add(int64(res.ObjectsDeleted))
			runs.Add(1)
		}
	}()
	e.pushAndBackup(8)
	close(stop)
	wg.Wait()
	t.Logf("%d retention runs deleted %d objects during 8 backups", runs.Load(), deleted.Load())
	if runs.Load() < 2 {
		t.Fatalf("only %d retention runs overlapped the backups", runs.Load())
	}
	for _, id := range ids(e, "api") {
		e.restoreAndVerify("api", id)
	}
	// And once the backups stopped, retention catches up: only the newest snapshot is left,
	// with the snapshots that introduced the packs it lists (bundle exports name them).
	e.runRetention(false)
	latest, err := e.archive.LoadManifest(context.Background(), e.repoKey("api"), "latest")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range latest.Packs {
		if !slices.Contains(want, p.Snapshot) {
			want = append(want, p.Snapshot)
		}
	}
	slices.Sort(want)
	if got := ids(e, "api"); !slices.Equal(got, want) {
		t.Fatalf("snapshots left %v, want the newest and its packs' introducers %v", got, want)
	}
	e.restoreAndVerify("api", latest.ID)
}

// refusingDeletes answers 403 AccessDenied, as a bucket under S3 Object Lock or with a policy
// denying s3:DeleteObject does, to every DELETE of a pack or idx while refuse is set.
func refusingDeletes(t *testing.T, storageURL string, refuse *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(storageURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	endpoint, err := url.Parse(q.Get("endpoint"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(endpoint)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/packs/") && refuse.Load() {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied because object protected by object lock.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	q.Set("endpoint", srv.URL)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestRetentionRecordsALockedObjectAndRetriesOnTheNextRun(t *testing.T) {
	var refuse atomic.Bool
	e := newBackupEnvWith(t, refusingDeletes(t, testenv.S3(t), &refuse), consolidateEvery3)
	e.backup("api")
	e.pushAndBackup(4)
	e.setPolicy("api", retention.Policy{KeepLast: 1})
	refuse.Store(true)
	start := time.Now()
	res := e.runRetention(false)
	t.Logf("with deletes refused: %+v in %s", res, time.Since(start))
	if res.Forgotten == 0 || res.ObjectsLocked == 0 || res.Refused != 0 {
		t.Fatalf("retention over locked packs = %+v, want snapshots forgotten and packs recorded as locked", res)
	}
	if n := e.auditActions()[domain.AuditBackupObjectLocked]; n != res.ObjectsLocked {
		t.Fatalf("%d delete_refused audit events, want %d", n, res.ObjectsLocked)
	}
	marks, err := e.store.RetentionMarks(context.Background(), e.tenantID, e.repos["api"].ID)
	if err != nil {
		t.Fatal(err)
	}
	lockedMarks := 0
	for _, m := range marks {
		if strings.Contains(m.LastError, "object lock") {
			lockedMarks++
		}
	}
	if lockedMarks != res.ObjectsLocked {
		t.Fatalf("%d marks record the refusal, want %d: %+v", lockedMarks, res.ObjectsLocked, marks)
	}
	// Once the lock's retention date passed, the next run deletes them.
	refuse.Store(false)
	next := e.runRetention(false)
	if next.ObjectsDeleted != res.ObjectsLocked || next.ObjectsLocked != 0 {
		t.Fatalf("next run = %+v, want the %d locked objects deleted", next, res.ObjectsLocked)
	}
	e.restoreAndVerify("api", ids(e, "api")[0])
}

func TestRetentionRefusesARepositoryWhoseManifestDoesNotVerify(t *testing.T) {
	storageURL := testenv.S3(t)
	e := newBackupEnvWith(t, storageURL, consolidateEvery3)
	e.backup("api")
	e.pushAndBackup(4)
	e.setPolicy("api", retention.Policy{KeepLast: 1})
	key := e.repoKey("api")
	stored, err := e.archive.ListSnapshots(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	// Someone edits an old manifest: it drops a pack it lists, which would make that pack look
	// unreferenced to a careless sweep.
	bucket, err := blob.OpenBucket(context.Background(), storageURL)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	victim := stored[len(stored)-2] // the second snapshot: two packs
	mkey := key.ManifestKey(victim)
	data, err := bucket.ReadAll(context.Background(), mkey)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	packs := m["packs"].([]any)
	m["packs"] = packs[1:]
	tampered, _ := json.Marshal(m)
	if err := bucket.WriteAll(context.Background(), mkey, tampered, nil); err != nil {
		t.Fatal(err)
	}
	bytesBefore := e.storedBytes("api")
	res := e.runRetention(false)
	if res.Refused != 1 || res.Forgotten != 0 || res.ObjectsDeleted != 0 || len(res.Problems) != 1 || !strings.Contains(res.Problems[0], victim) {
		t.Fatalf("retention over a tampered manifest = %+v, want the repository refused, naming %s", res, victim)
	}
	if e.storedBytes("api") != bytesBefore {
		t.Fatal("a refused repository lost bytes")
	}
}
