package activities

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/schedules"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// SweepSettings configure the scheduled sweeps.
type SweepSettings struct {
	// Interval between two sweeps of an installation (GITSEC_SWEEP_INTERVAL; default 24h).
	Interval time.Duration
	// Concurrency bounds the ls-remote checks one sweep page runs at once
	// (GITSEC_SWEEP_CONCURRENCY; default 8). The git rate limiter of the installation's
	// client paces them further.
	Concurrency int
	// TaskQueue runs the scheduled sweeps; default Sweeps.Queue.TaskQueue, the shared queue.
	TaskQueue string
}

func (s SweepSettings) interval() time.Duration {
	if s.Interval <= 0 {
		return 24 * time.Hour
	}
	return s.Interval
}

func (s SweepSettings) concurrency() int {
	if s.Concurrency <= 0 {
		return 8
	}
	return s.Concurrency
}

// PrepareSweep decides whether an installation is swept: not while it is being removed or
// waits for a reconnect (checking would only spend the budget on rejected credentials).
func (a *Sweeps) PrepareSweep(ctx context.Context, ref workflows.InstallationRef) (workflows.SweepPlan, error) {
	tenantID, instID, err := parseRef(ref)
	if err != nil {
		return workflows.SweepPlan{}, err
	}
	inst, err := a.Store.GetInstallation(ctx, tenantID, instID)
	if errors.Is(err, store.ErrNotFound) {
		return workflows.SweepPlan{Skip: "installation not found"}, nil
	}
	if err != nil {
		return workflows.SweepPlan{}, classify("load installation", err)
	}
	switch inst.Status {
	case domain.InstallationRemoving, domain.InstallationRemoved:
		return workflows.SweepPlan{Skip: "installation is " + inst.Status}, nil
	case domain.InstallationNeedsReauth:
		return workflows.SweepPlan{Skip: "installation needs a reconnect: " + inst.StatusMessage}, nil
	}
	return workflows.SweepPlan{}, nil
}

// maxPageErrors bounds the error messages one page reports.
const maxPageErrors = 5

// CheckRepositoriesForChanges checks one page of an installation's included repositories with
// one ls-remote each, at most SweepSettings.Concurrency at once, and returns the ones that
// changed since their last snapshot. Repositories never backed up have changed without a check,
// and so has one that is gone upstream or that Bitbucket refuses (403) to show: its backup
// workflow records the deletion, or the refusal on that repository alone.
//
// A revoked credential (a 401 even after a forced refresh) fails the whole page
// (non-retryable): every other check would fail the same way. Other failures are counted per
// repository; the next sweep checks them again.
func (a *Sweeps) CheckRepositoriesForChanges(ctx context.Context, in workflows.SweepPageInput) (workflows.SweepPageResult, error) {
	var res workflows.SweepPageResult
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return res, err
	}
	after := uuid.Nil
	if in.After != "" {
		if after, err = uuid.Parse(in.After); err != nil {
			return res, temporal.NewNonRetryableApplicationError("invalid sweep cursor "+in.After, domain.ErrTypeInvalidInput, nil)
		}
	}
	limit := in.Limit
	if limit <= 0 || limit > workflows.SweepPageSize {
		limit = workflows.SweepPageSize
	}
	repos, err := a.Store.SweepCandidates(ctx, tenantID, instID, after, limit)
	if err != nil {
		return res, classify("list sweep candidates", err)
	}
	if len(repos) == limit {
		res.Next = repos[len(repos)-1].ID.String()
	}
	if len(repos) == 0 {
		return res, nil
	}
	bb, err := a.Clients.Client(ctx, tenantID, instID)
	if errors.Is(err, store.ErrInstallationRemoved) {
		return installationRemovedPage(err), nil
	}
	if err != nil {
		return res, classify("load credentials", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		fatal    error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, a.Settings.concurrency())
		finished int
	)
	changed := func(r store.SweepCandidate) {
		mu.Lock()
		defer mu.Unlock()
		res.Changed = append(res.Changed, workflows.SweepRepository{ID: r.ID.String(), ProviderUUID: r.ProviderUUID})
	}
	done := func() {
		mu.Lock()
		defer mu.Unlock()
		finished++
		activity.RecordHeartbeat(ctx, finished)
	}
	for _, r := range repos {
		res.Checked++
		if r.LastSnapshotID == nil {
			changed(r)
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(r store.SweepCandidate) {
			defer wg.Done()
			defer func() { <-slots }()
			defer done()
			check, err := checkUpstream(ctx, a.Store, a.Archive, bb, tenantID, r.ProviderUUID, r.FullName)
			var appErr *temporal.ApplicationError
			switch {
			case err == nil && check.Changed:
				changed(r)
			case err == nil:
				mu.Lock()
				res.Unchanged++
				mu.Unlock()
			case errors.As(err, &appErr) && (appErr.Type() == domain.ErrTypeNotFound || appErr.Type() == domain.ErrTypeForbidden):
				changed(r)
			case errors.As(err, &appErr) && (appErr.Type() == domain.ErrTypeCredentialsRevoked || appErr.Type() == domain.ErrTypeInstallationRemoved):
				mu.Lock()
				if fatal == nil {
					fatal = err
				}
				mu.Unlock()
				cancel()
			default:
				mu.Lock()
				res.Failed++
				if len(res.Errors) < maxPageErrors {
					res.Errors = append(res.Errors, err.Error())
				}
				mu.Unlock()
				a.Logger.Warn("sweep check failed", "repository", r.FullName, "error", err)
			}
		}(r)
	}
	wg.Wait()
	var appErr *temporal.ApplicationError
	if errors.As(fatal, &appErr) && appErr.Type() == domain.ErrTypeInstallationRemoved {
		return installationRemovedPage(fatal), nil
	}
	if fatal != nil {
		return workflows.SweepPageResult{}, fatal
	}
	if err := ctx.Err(); err != nil {
		// The activity was cancelled or timed out: a partial page must not pass for a full one.
		return workflows.SweepPageResult{}, err
	}
	return res, nil
}

// installationRemovedPage ends a sweep whose installation was removed under it (by another
// worker): an empty last page, so the sweep finishes quietly instead of failing.
func installationRemovedPage(err error) workflows.SweepPageResult {
	return workflows.SweepPageResult{Errors: []string{"sweep stopped: " + err.Error()}}
}

// WakeRepositories signals the backup workflow of each repository (starting it when none
// runs); requests coalesce there with webhook ones.
func (a *Sweeps) WakeRepositories(ctx context.Context, in workflows.WakeInput) (int, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return 0, err
	}
	// The installation may have been removed since its page was checked.
	status, err := a.Store.InstallationStatus(ctx, tenantID, instID)
	if err != nil {
		return 0, classify("load installation status", err)
	}
	if store.BackupsStopped(status) {
		a.Logger.Info("sweep wakes no backups: installation is "+status, "installation", in.InstallationID)
		return 0, nil
	}
	n := 0
	for _, r := range in.Repositories {
		target := workflows.BackupTarget{TenantID: tenantID.String(), InstallationID: instID.String(), RepositoryID: r.ID, ProviderUUID: r.ProviderUUID}
		if _, err := backupqueue.Request(ctx, a.Temporal, a.Queue, target, workflows.BackupRequest{Trigger: in.Trigger}); err != nil {
			return n, err
		}
		n++
		activity.RecordHeartbeat(ctx, n)
	}
	return n, nil
}

// sweepSchedule is the desired state of an installation's sweep schedule.
func (a *Sweeps) sweepSchedule(ref workflows.InstallationRef) (client.ScheduleSpec, *client.ScheduleWorkflowAction) {
	every := a.Settings.interval()
	// Jitter spreads installations onboarded together over the hour, so their sweeps do not
	// all hit Bitbucket (and the workers) at the same instant.
	jitter := every / 10
	if jitter > time.Hour {
		jitter = time.Hour
	}
	queue := a.Settings.TaskQueue
	if queue == "" {
		queue = a.Queue.TaskQueue
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}, Jitter: jitter}
	action := &client.ScheduleWorkflowAction{
		ID:        workflows.SweepScheduleID(ref.InstallationID),
		Workflow:  workflows.SweepInstallationWorkflowName,
		TaskQueue: queue,
		Args:      []any{workflows.SweepInput{InstallationRef: ref}},
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(ref.TenantID),
			workflows.SearchAttrInstallation.ValueSet(ref.InstallationID),
		),
	}
	return spec, action
}

// EnsureSweepSchedule creates the installation's sweep schedule, or brings an existing one to
// the configured interval, so onboarding and every re-sync converge on the same state.
func (a *Sweeps) EnsureSweepSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client for schedules", domain.ErrTypeMisconfigured, nil)
	}
	id := workflows.SweepScheduleID(ref.InstallationID)
	spec, action := a.sweepSchedule(ref)
	created, err := schedules.Ensure(ctx, a.Temporal, client.ScheduleOptions{
		ID:     id,
		Spec:   spec,
		Action: action,
		// A sweep still running when the next one is due makes that one skip; after downtime at
		// most one missed sweep runs.
		CatchupWindow: spec.Intervals[0].Every,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(ref.TenantID),
			workflows.SearchAttrInstallation.ValueSet(ref.InstallationID),
		),
		Memo: map[string]any{"purpose": "check every included repository for changes and back up the changed ones"},
	})
	if err != nil {
		return err
	}
	a.Logger.Info("sweep schedule ready", "schedule_id", id, "created", created, "every", spec.Intervals[0].Every.String())
	return nil
}

// DeleteSweepSchedule deletes the installation's sweep schedule; one that is already gone is
// fine (a repeated uninstall, or an installation that never finished onboarding).
func (a *Sweeps) DeleteSweepSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client for schedules", domain.ErrTypeMisconfigured, nil)
	}
	id := workflows.SweepScheduleID(ref.InstallationID)
	deleted, err := schedules.Delete(ctx, a.Temporal, id)
	if deleted {
		a.Logger.Info("deleted sweep schedule", "schedule_id", id)
	}
	return err
}
