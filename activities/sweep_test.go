package activities_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

func (e *backupEnv) ref() workflows.InstallationRef {
	return workflows.InstallationRef{TenantID: e.tenantID.String(), InstallationID: e.instID.String()}
}

// sweep runs one SweepInstallation workflow on the test's workers and returns its result.
func (e *backupEnv) sweep() workflows.SweepResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "sweep-test-" + uuid.NewString(), TaskQueue: e.settings.TaskQueue},
		workflows.SweepInstallationWorkflowName, workflows.SweepInput{InstallationRef: e.ref()})
	if err != nil {
		e.t.Fatal(err)
	}
	var res workflows.SweepResult
	if err := run.Get(ctx, &res); err != nil {
		e.t.Fatalf("sweep: %v", err)
	}
	return res
}

// waitBackups waits until the backup workflows of the given repositories went idle and ended.
func (e *backupEnv) waitBackups(slugs ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, slug := range slugs {
		id := workflows.BackupWorkflowID(backupqueue.Target(e.repos[slug]))
		if err := e.temporal.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
			e.t.Fatalf("backup workflow of %s: %v", slug, err)
		}
	}
}

// backupRunID is the latest run of a repository's backup workflow ("" when it never ran): a
// repository the sweep did not wake keeps its run.
func (e *backupEnv) backupRunID(slug string) string {
	e.t.Helper()
	d, err := e.temporal.DescribeWorkflowExecution(context.Background(), workflows.BackupWorkflowID(backupqueue.Target(e.repos[slug])), "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return d.WorkflowExecutionInfo.Execution.RunId
}

func (e *backupEnv) mirrorOf(slug string) string {
	return filepath.Join(e.mirrors, e.tenantID.String(), archive.NormalizeUUID(e.repos[slug].ProviderUUID))
}

func triggers(snaps []store.Snapshot) string {
	var t []string
	for _, s := range snaps {
		t = append(t, string(s.Trigger))
	}
	return strings.Join(t, ",")
}

// A sweep over three repositories: never-backed-up ones count as changed without a check; after
// that only the repository pushed to upstream is woken, and the others keep their single
// snapshot and their backup workflow run.
func TestSweepWakesOnlyChangedRepositories(t *testing.T) {
	e := newBackupEnvWith(t, "file://"+t.TempDir()+"?create_dir=true", func(a *worker.Activities) {
		a.Sweeps.Settings = activities.SweepSettings{Concurrency: 2}
	}, emulator.SeedRepository{Slug: "web", Generate: &emulator.Generate{Commits: 5, Branches: 1}})
	all := []string{"api", "empty", "web"}

	first := e.sweep()
	if first.Checked != 3 || first.Changed != 3 || first.Woken != 3 || first.Unchanged != 0 || first.Failed != 0 || first.Skipped != "" {
		t.Fatalf("first sweep = %+v, want all three never-backed-up repositories woken", first)
	}
	e.waitBackups(all...)
	for _, slug := range all {
		if s := e.snapshots(slug); len(s) != 1 || s[0].Trigger != domain.TriggerSchedule {
			t.Fatalf("%s after the first sweep: snapshots %s, want one scheduled", slug, triggers(s))
		}
	}
	runs := map[string]string{}
	for _, slug := range all {
		runs[slug] = e.backupRunID(slug)
	}

	if quiet := e.sweep(); quiet.Checked != 3 || quiet.Unchanged != 3 || quiet.Changed != 0 || quiet.Woken != 0 || quiet.Failed != 0 {
		t.Fatalf("sweep without upstream changes = %+v, want three unchanged", quiet)
	}
	for _, slug := range all {
		if got := e.backupRunID(slug); got != runs[slug] {
			t.Fatalf("an unchanged sweep woke %s (run %s -> %s)", slug, runs[slug], got)
		}
	}

	e.emuJSON("POST", "/_emulator/repositories/acme/web/push", `{"commits":1}`, nil)
	third := e.sweep()
	if third.Checked != 3 || third.Unchanged != 2 || third.Changed != 1 || third.Woken != 1 || third.Failed != 0 {
		t.Fatalf("sweep after a push to web = %+v, want web alone woken", third)
	}
	e.waitBackups("web")
	if s := e.snapshots("web"); len(s) != 2 || s[0].Trigger != domain.TriggerSchedule || s[0].ParentID == nil || *s[0].ParentID != s[1].ID {
		t.Fatalf("web snapshots = %+v, want an incremental scheduled one on top of the first", s)
	}
	for _, slug := range []string{"api", "empty"} {
		if n := len(e.snapshots(slug)); n != 1 {
			t.Fatalf("%s has %d snapshots after a sweep that only web changed for", slug, n)
		}
		if got := e.backupRunID(slug); got != runs[slug] {
			t.Fatalf("the sweep woke unchanged %s", slug)
		}
	}
	if got := e.backupRunID("web"); got == runs["web"] {
		t.Fatal("the sweep did not start a backup run of web")
	}

	// A repository deleted upstream is woken, so its backup workflow records the deletion.
	e.emuJSON("DELETE", "/_emulator/repositories/acme/empty", "", nil)
	if gone := e.sweep(); gone.Changed != 1 || gone.Woken != 1 || gone.Unchanged != 2 {
		t.Fatalf("sweep after deleting empty upstream = %+v", gone)
	}
	e.waitBackups("empty")
	if r := e.repo("empty"); r.Status != domain.RepositoryDeletedUpstream {
		t.Fatalf("empty status = %s, want deleted_upstream", r.Status)
	}

	// An installation waiting for a reconnect is skipped quietly, saying why.
	if err := e.store.SetInstallationStatus(context.Background(), e.tenantID, e.instID, domain.InstallationNeedsReauth, "token revoked"); err != nil {
		t.Fatal(err)
	}
	e.emuJSON("POST", "/_emulator/repositories/acme/web/push", `{"commits":1}`, nil)
	if skipped := e.sweep(); !strings.Contains(skipped.Skipped, "needs a reconnect") || skipped.Checked != 0 || skipped.Woken != 0 {
		t.Fatalf("sweep of a needs_reauth installation = %+v", skipped)
	}
}

// Onboarding's EnsureSweepSchedule creates the schedule once and updates it in place; the
// scheduled run sweeps with the installation's search attributes; uninstalling deletes the
// schedule. Mirror cleanup follows inclusion and installation removal.
func TestSweepScheduleAndMirrorCleanup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newBackupEnv(t, "file://"+t.TempDir()+"?create_dir=true")
	ref := e.ref()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, every := range []time.Duration{6 * time.Hour, 12 * time.Hour} {
		a := &activities.Sweeps{Temporal: e.temporal, Logger: log, Queue: e.settings, Settings: activities.SweepSettings{Interval: every}}
		if err := a.EnsureSweepSchedule(ctx, ref); err != nil {
			t.Fatalf("EnsureSweepSchedule every %s: %v", every, err)
		}
	}
	h := e.temporal.ScheduleClient().GetHandle(ctx, workflows.SweepScheduleID(ref.InstallationID))
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if iv := desc.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != 12*time.Hour {
		t.Fatalf("schedule intervals = %+v, want the updated 12h", iv)
	}
	action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	if !ok || action.Workflow != workflows.SweepInstallationWorkflowName || action.TaskQueue != e.settings.TaskQueue {
		t.Fatalf("schedule action = %+v", desc.Schedule.Action)
	}
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	var run *client.ScheduleWorkflowExecution
	for run == nil {
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			run = d.Info.RecentActions[n-1].StartWorkflowResult
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the triggered schedule never started a sweep")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var res workflows.SweepResult
	if err := e.temporal.GetWorkflow(ctx, run.WorkflowID, run.FirstExecutionRunID).Get(ctx, &res); err != nil {
		t.Fatalf("scheduled sweep: %v", err)
	}
	if res.Checked != 2 || res.Woken != 2 {
		t.Fatalf("scheduled sweep = %+v, want api and empty checked and woken", res)
	}
	wd, err := e.temporal.DescribeWorkflowExecution(ctx, run.WorkflowID, run.FirstExecutionRunID)
	if err != nil {
		t.Fatal(err)
	}
	fields := wd.WorkflowExecutionInfo.GetSearchAttributes().GetIndexedFields()
	for name, want := range map[string]string{"GitsecTenant": ref.TenantID, "GitsecInstallation": ref.InstallationID} {
		var got string
		if p, ok := fields[name]; !ok || converter.GetDefaultDataConverter().FromPayload(p, &got) != nil || got != want {
			t.Fatalf("scheduled sweep search attribute %s = %q, want %q", name, got, want)
		}
	}
	e.waitBackups("api", "empty")

	// Cleanup: the mirror of an excluded repository goes, the others stay.
	stray := filepath.Join(e.mirrors, "README.txt")
	if err := os.WriteFile(stray, []byte("not a mirror"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, slug := range []string{"api", "empty"} {
		if _, err := os.Stat(e.mirrorOf(slug)); err != nil {
			t.Fatalf("mirror of %s after its backup: %v", slug, err)
		}
	}
	if _, err := e.store.SetRepositoryIncluded(ctx, e.tenantID, e.repos["empty"].ID, false); err != nil {
		t.Fatal(err)
	}
	clean, err := activities.CleanMirrors(ctx, e.acts.Backups)
	if err != nil {
		t.Fatal(err)
	}
	emptyKey := e.tenantID.String() + "/" + archive.NormalizeUUID(e.repos["empty"].ProviderUUID)
	if len(clean.Removed) != 1 || clean.Removed[0] != emptyKey || clean.Kept != 1 {
		t.Fatalf("cleanup = %+v, want only %s removed", clean, emptyKey)
	}
	if _, err := os.Stat(e.mirrorOf("empty")); !os.IsNotExist(err) {
		t.Fatalf("mirror of excluded empty still there: %v", err)
	}
	if _, err := os.Stat(e.mirrorOf("api")); err != nil {
		t.Fatalf("mirror of included api: %v", err)
	}
	if again, err := activities.CleanMirrors(ctx, e.acts.Backups); err != nil || len(again.Removed) != 0 {
		t.Fatalf("second cleanup = %+v, %v; want nothing left to remove", again, err)
	}

	// Uninstalling deletes the schedule (twice is fine), and the installation's mirrors go.
	un, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.UninstallWorkflowID(ref.InstallationID), TaskQueue: e.settings.TaskQueue},
		workflows.UninstallInstallationWorkflowName, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := un.Get(ctx, nil); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	var notFound *serviceerror.NotFound
	if _, err := h.Describe(ctx); !errors.As(err, &notFound) {
		t.Fatalf("schedule after uninstall: %v, want NotFound", err)
	}
	if err := e.acts.Sweeps.DeleteSweepSchedule(ctx, ref); err != nil {
		t.Fatalf("deleting a deleted schedule: %v", err)
	}
	if skipped := e.sweep(); !strings.Contains(skipped.Skipped, "removed") || skipped.Checked != 0 {
		t.Fatalf("sweep of a removed installation = %+v", skipped)
	}
	clean, err = activities.CleanMirrors(ctx, e.acts.Backups)
	if err != nil {
		t.Fatal(err)
	}
	if len(clean.Removed) != 1 || clean.Kept != 0 {
		t.Fatalf("cleanup after uninstall = %+v, want api's mirror removed", clean)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatalf("cleanup touched a file that is not a mirror: %v", err)
	}
	left, _ := os.ReadDir(filepath.Join(e.mirrors, e.tenantID.String()))
	var names []string
	for _, l := range left {
		names = append(names, l.Name())
	}
	sort.Strings(names)
	if len(names) != 0 {
		t.Fatalf("mirror directory after cleanup holds %v", names)
	}
}

// A repository larger than GITSEC_MIRROR_MAX_BYTES fails its backup without cloning, and the
// failure is recorded.
func TestBackupRefusesMirrorOverDiskBudget(t *testing.T) {
	e := newBackupEnvWith(t, "file://"+t.TempDir()+"?create_dir=true", func(a *worker.Activities) {
		a.Backups.MirrorMaxBytes = 1024
	})
	// Onboarding records Bitbucket's size of each repository; the budget check relies on it.
	var upstream struct {
		Size int64 `json:"size"`
	}
	e.emuJSON("GET", "/2.0/repositories/acme/api", "", &upstream)
	if upstream.Size <= 1024 {
		t.Fatalf("emulator reports api at %d bytes; the test needs more than the 1024-byte budget", upstream.Size)
	}
	r := e.repos["api"]
	r.SizeBytes = upstream.Size
	if _, _, err := e.store.UpsertRepository(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	e.backup("api")
	if r := e.repo("api"); r.LastBackupStatus != domain.BackupFailed {
		t.Fatalf("api last backup status = %s, want failed", r.LastBackupStatus)
	}
	if n := len(e.snapshots("api")); n != 0 {
		t.Fatalf("%d snapshots despite the disk budget", n)
	}
	if _, err := os.Stat(filepath.Join(e.mirrorOf("api"), "objects")); !os.IsNotExist(err) {
		t.Fatalf("a mirror was cloned despite the disk budget: %v", err)
	}
}
