package activities_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/workflows"
)

// drill runs one DrillRestore of the snapshot and returns its row.
func (e *backupEnv) drill(slug, snapshotID string) (workflows.DrillResult, store.Drill) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	target := backupqueue.Target(e.repos[slug])
	drillID := uuid.NewString()
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.DrillWorkflowID(target.RepositoryID, drillID), TaskQueue: e.settings.TaskQueue},
		workflows.DrillRestoreWorkflowName, workflows.DrillInput{Target: target, DrillID: drillID, SnapshotID: snapshotID, Trigger: domain.TriggerManual})
	if err != nil {
		e.t.Fatal(err)
	}
	var res workflows.DrillResult
	if err := run.Get(ctx, &res); err != nil {
		e.t.Fatalf("drill of %s: %v", slug, err)
	}
	d, err := e.store.GetDrill(ctx, e.tenantID, uuid.MustParse(drillID))
	if err != nil {
		e.t.Fatal(err)
	}
	return res, d
}

func stepStatuses(d store.Drill) string {
	var parts []string
	for _, s := range d.Steps {
		parts = append(parts, s.Name+"="+s.Status)
	}
	return strings.Join(parts, " ")
}

// corruptExportSnapshot commits a snapshot over the latest one whose pull request export is
// stored intact (its checksum matches) but does not decode, and records it.
func (e *backupEnv) corruptExportSnapshot(slug string) *archive.Manifest {
	e.t.Helper()
	ctx := context.Background()
	r := e.repos[slug]
	key, _ := archive.NewRepoKey(e.tenantID.String(), r.ProviderUUID)
	latest, err := e.archive.LoadManifest(ctx, key, "latest")
	if err != nil {
		e.t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("{\"id\": 1, \"title\": \"fine\"}\nthis line is not JSON\n"))
	zw.Close()
	exp, _, err := e.archive.PutExport(ctx, key, archive.ExportPullRequests, gz.Bytes())
	if err != nil {
		e.t.Fatal(err)
	}
	exp.Records, exp.Complete = 2, true
	draft, err := e.archive.StageExportsOnly(ctx, latest, archive.Trigger{Kind: domain.TriggerManual}, time.Time{}, []archive.Export{exp})
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.archive.CommitStaged(ctx, key, draft.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	m := res.Manifest
	if err := e.store.RecordSnapshot(ctx, store.Snapshot{ID: m.ID, TenantID: e.tenantID, RepositoryID: r.ID, ManifestKey: key.ManifestKey(m.ID),
		Trigger: m.Trigger.Kind, ParentID: &m.Parent, RefsCount: len(m.Refs), PacksCount: len(m.Packs), StartedAt: m.Created, FinishedAt: m.Created}); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// Drills on real servers (emulator, Postgres, Temporal, versitygw): a backed-up repository
// passes; a snapshot whose pull request export does not decode fails at that step; a tampered
// pack fails the restore step with a reason naming the checksum, and is an alert and an audit
// event.
func TestRestoreDrills(t *testing.T) {
	storageURL := testenv.S3(t)
	e := newBackupEnv(t, storageURL)
	ctx := context.Background()
	e.backup("api")
	good := e.snapshots("api")[0]

	start := time.Now()
	res, d := e.drill("api", good.ID)
	took := time.Since(start)
	if res.Status != domain.DrillPassed || d.Status != domain.DrillPassed || d.Reason != "" || d.FinishedAt == nil {
		t.Fatalf("drill of a good snapshot = %+v, row %+v", res, d)
	}
	if got := stepStatuses(d); got != "restore=passed refs=passed fsck=passed pull_requests=passed metadata=passed" {
		t.Fatalf("steps = %s (%+v)", got, d.Steps)
	}
	t.Logf("drill of acme/api (%d refs, %d bytes): %v end to end; steps %+v", good.RefsCount, good.TotalBytes, took.Round(time.Millisecond), d.Steps)

	corrupt := e.corruptExportSnapshot("api")
	_, d = e.drill("api", corrupt.ID)
	if d.Status != domain.DrillFailed || !strings.HasPrefix(d.Reason, "pull_requests: ") || !strings.Contains(d.Reason, "line 2") {
		t.Fatalf("drill of a snapshot with a corrupt PR export = %+v", d)
	}
	if got := stepStatuses(d); got != "restore=passed refs=passed fsck=passed pull_requests=failed metadata=skipped" {
		t.Fatalf("steps = %s", got)
	}

	key, _ := archive.NewRepoKey(e.tenantID.String(), e.repos["api"].ProviderUUID)
	m, err := e.archive.LoadManifest(ctx, key, good.ID)
	if err != nil {
		t.Fatal(err)
	}
	archivetest.FlipStoredByte(t, storageURL, key.PackKey(m.Packs[0].Name))
	_, d = e.drill("api", good.ID)
	if d.Status != domain.DrillFailed || !strings.HasPrefix(d.Reason, "restore: ") || !strings.Contains(d.Reason, "sha256") ||
		!strings.Contains(d.Reason, m.Packs[0].Name) {
		t.Fatalf("drill of a tampered pack = %+v", d)
	}
	if got := stepStatuses(d); got != "restore=failed refs=skipped fsck=skipped pull_requests=skipped metadata=skipped" {
		t.Fatalf("steps = %s", got)
	}

	// The failure is an alert (the latest drill of the repository failed) and in the audit trail.
	alerts, err := e.store.FailedDrills(ctx, e.tenantID)
	if err != nil || len(alerts) != 1 || alerts[0].ID != d.ID || alerts[0].FullName != "acme/api" {
		t.Fatalf("failed drills = %+v, %v", alerts, err)
	}
	events, err := e.store.ListAuditEvents(ctx, e.tenantID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	failedEvents := 0
	for _, ev := range events {
		if ev.Action == "repository.drill_failed" {
			failedEvents++
		}
	}
	if failedEvents != 2 {
		t.Errorf("%d drill_failed audit events, want 2: %+v", failedEvents, events)
	}
	latest, err := e.store.LatestDrills(ctx, e.tenantID, []uuid.UUID{e.repos["api"].ID})
	if err != nil || latest[e.repos["api"].ID].ID != d.ID {
		t.Errorf("latest drill = %+v, %v", latest, err)
	}
}

// The scheduled round drills the latest snapshot of every included repository that has one,
// and the schedule is created and deleted idempotently.
func TestScheduledDrills(t *testing.T) {
	e := newBackupEnv(t, "file://"+t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.backup("api")
	e.backup("empty")
	ref := workflows.InstallationRef{TenantID: e.tenantID.String(), InstallationID: e.instID.String()}
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.DrillScheduleID(ref.InstallationID), TaskQueue: e.settings.TaskQueue},
		workflows.DrillInstallationWorkflowName, workflows.DrillInstallationInput{InstallationRef: ref})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.DrillInstallationResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	if res.Drilled != 2 || res.Passed != 2 || res.Failed != 0 {
		t.Fatalf("scheduled drills = %+v", res)
	}
	for _, slug := range []string{"api", "empty"} {
		drills, err := e.store.ListDrills(ctx, e.tenantID, e.repos[slug].ID, 10)
		if err != nil || len(drills) != 1 || drills[0].Status != domain.DrillPassed || drills[0].Trigger != domain.TriggerSchedule ||
			drills[0].SnapshotID != *e.repo(slug).LastSnapshotID {
			t.Fatalf("drills of %s = %+v, %v", slug, drills, err)
		}
	}

	drills := e.acts.Drills
	for i := 0; i < 2; i++ { // the second call updates the schedule in place
		if err := drills.EnsureDrillSchedule(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := e.temporal.ScheduleClient().GetHandle(ctx, workflows.DrillScheduleID(ref.InstallationID)).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if every := desc.Schedule.Spec.Intervals[0].Every; every != 7*24*time.Hour {
		t.Errorf("drill schedule every %v, want a week", every)
	}
	for i := 0; i < 2; i++ { // deleting twice is fine
		if err := drills.DeleteDrillSchedule(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
}
