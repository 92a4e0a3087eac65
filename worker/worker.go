// Package worker runs GitSec's Temporal worker: it registers every workflow and activity and
// makes sure the schedules GitSec relies on exist.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/schedules"
	"github.com/gitsec/gitsec/workflows"
)

// HousekeepingScheduleID is the fixed ID of the housekeeping schedule, so creating it is idempotent.
const HousekeepingScheduleID = "gitsec-housekeeping"

// Options configure a worker process.
type Options struct {
	Client             client.Client
	TaskQueue          string
	Activities         Activities
	HousekeepingEvery  time.Duration
	WebhookDedupWindow time.Duration
	Logger             *slog.Logger
	// HostQueue is this worker's own queue (mirror affinity); backups run there, at most
	// MaxConcurrentBackups at once.
	HostQueue            string
	MaxConcurrentBackups int
	// MirrorCleanupEvery is how often this worker removes the mirrors of repositories no
	// longer backed up (0: hourly).
	MirrorCleanupEvery time.Duration
}

// Activities are the activity structs a worker registers, one per feature; every one is needed.
// Backups is this process's only one: the host queue and mirror cleanup share its mirror leases.
type Activities struct {
	Onboarding   *activities.Onboarding
	Backups      *activities.Backups
	Sweeps       *activities.Sweeps
	Housekeeping *activities.Housekeeping
	Uninstall    *activities.Uninstall
	Exports      *activities.Exports
	Drills       *activities.Drills
	Restores     *activities.Restores
	Retention    *activities.Retention
}

// New creates a worker with every workflow and activity registered.
func New(o Options) sdkworker.Worker {
	w := sdkworker.New(o.Client, o.TaskQueue, sdkworker.Options{})
	Register(w, o.Activities)
	return w
}

// NewHost creates the worker of this process's host queue: it runs only the activities that
// need the local mirror, bounded so a worker never runs more clones than its disk and CPU allow.
func NewHost(o Options) sdkworker.Worker {
	n := o.MaxConcurrentBackups
	if n <= 0 {
		n = 4
	}
	w := sdkworker.New(o.Client, o.HostQueue, sdkworker.Options{MaxConcurrentActivityExecutionSize: n, DisableWorkflowWorker: true})
	RegisterHost(w, o.Activities.Backups)
	return w
}

// RegisterHost registers the activities that run on a host queue, next to the worker's mirrors.
func RegisterHost(w sdkworker.ActivityRegistry, b *activities.Backups) {
	w.RegisterActivityWithOptions(b.StageBackup, activity.RegisterOptions{Name: workflows.StageBackupActivity})
	w.RegisterActivityWithOptions(b.RunBackup, activity.RegisterOptions{Name: workflows.RunBackupActivity})
}

// Register registers GitSec's workflows and activities on any worker (tests use it too).
// Each struct's exported methods are registered under their names.
func Register(w sdkworker.Registry, acts Activities) {
	if acts.Onboarding == nil || acts.Backups == nil || acts.Sweeps == nil || acts.Housekeeping == nil || acts.Uninstall == nil || acts.Exports == nil ||
		acts.Drills == nil || acts.Restores == nil || acts.Retention == nil {
		// Registering a nil struct would fail each of its activities at run time instead.
		panic(fmt.Sprintf("worker.Register: every activity struct is needed, got %+v", acts))
	}
	registerWorkflows(w)
	w.RegisterActivity(acts.Onboarding)
	w.RegisterActivity(acts.Backups)
	w.RegisterActivity(acts.Sweeps)
	w.RegisterActivity(acts.Housekeeping)
	w.RegisterActivity(acts.Uninstall)
	w.RegisterActivity(acts.Exports)
	w.RegisterActivity(acts.Drills)
	w.RegisterActivity(acts.Restores)
	w.RegisterActivity(acts.Retention)
}

// workflowRegistry is what workers and the replayer share for registering workflows.
type workflowRegistry interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
}

// registerWorkflows registers every workflow under its stable name; the replayer uses the same
// list, so a replay always checks the code that workers run.
func registerWorkflows(r workflowRegistry) {
	r.RegisterWorkflowWithOptions(workflows.Housekeeping, workflow.RegisterOptions{Name: workflows.HousekeepingWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.OnboardInstallation, workflow.RegisterOptions{Name: workflows.OnboardInstallationWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.UninstallInstallation, workflow.RegisterOptions{Name: workflows.UninstallInstallationWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.BackupRepository, workflow.RegisterOptions{Name: workflows.BackupRepositoryWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.SweepInstallation, workflow.RegisterOptions{Name: workflows.SweepInstallationWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.DrillRestore, workflow.RegisterOptions{Name: workflows.DrillRestoreWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.DrillInstallation, workflow.RegisterOptions{Name: workflows.DrillInstallationWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.Restore, workflow.RegisterOptions{Name: workflows.RestoreWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.Retention, workflow.RegisterOptions{Name: workflows.RetentionWorkflowName})
}

// EnsureSchedules creates the housekeeping schedule, or updates its interval and arguments when
// it exists already, so every worker start converges on the configured state.
func EnsureSchedules(ctx context.Context, o Options) error {
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: o.HousekeepingEvery}}}
	action := &client.ScheduleWorkflowAction{
		ID:        "housekeeping",
		Workflow:  workflows.HousekeepingWorkflowName,
		TaskQueue: o.TaskQueue,
		Args:      []any{workflows.HousekeepingInput{WebhookDedupWindow: o.WebhookDedupWindow}},
	}
	created, err := schedules.Ensure(ctx, o.Client, client.ScheduleOptions{
		ID:      HousekeepingScheduleID,
		Spec:    spec,
		Action:  action,
		Overlap: 0, // skip a run while the previous one still runs
		Memo:    map[string]any{"purpose": "delete expired OAuth states and old webhook deliveries"},
	})
	if err != nil {
		return err
	}
	o.Logger.Info("housekeeping schedule ready", "schedule_id", HousekeepingScheduleID, "created", created, "every", o.HousekeepingEvery.String())
	return nil
}

// Run ensures the schedules and runs the worker until ctx is cancelled.
func Run(ctx context.Context, o Options) error {
	if err := EnsureSchedules(ctx, o); err != nil {
		return err
	}
	w := New(o)
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker on task queue %s: %w", o.TaskQueue, err)
	}
	defer w.Stop()
	hw := NewHost(o)
	if err := hw.Start(); err != nil {
		return fmt.Errorf("start worker on host task queue %s: %w", o.HostQueue, err)
	}
	defer hw.Stop()
	go CleanMirrorsEvery(ctx, o)
	o.Logger.Info("worker started", "task_queue", o.TaskQueue, "host_queue", o.HostQueue, "max_concurrent_backups", o.MaxConcurrentBackups)
	<-ctx.Done()
	return nil
}

// CleanMirrorsEvery removes, at start and then periodically until ctx ends, the mirrors on this
// worker's disk whose repositories are no longer backed up. It runs in the worker process, not
// as a Temporal activity, because mirrors are local to each worker and Temporal cannot route a
// task to every worker.
func CleanMirrorsEvery(ctx context.Context, o Options) {
	every := o.MirrorCleanupEvery
	if every <= 0 {
		every = time.Hour
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := activities.CleanMirrors(ctx, o.Activities.Backups)
		switch {
		case err != nil && ctx.Err() == nil:
			o.Logger.Warn("mirror cleanup failed; retrying at the next interval", "error", err)
		case err == nil && len(res.Removed) > 0:
			o.Logger.Info("mirror cleanup", "removed", len(res.Removed), "kept", res.Kept, "bytes_freed", res.BytesFreed)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
