package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/retention"
	"github.com/gitsec/gitsec/internal/schedules"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// RetentionSettings configure retention runs.
type RetentionSettings struct {
	// Every is the interval of each installation's retention schedule (GITSEC_RETENTION_EVERY;
	// default 24h).
	Every time.Duration
	// Grace is how long an object must stay unreferenced, across runs, before it is deleted
	// (GITSEC_RETENTION_GRACE; default 6h; 0 deletes at once and relies on the storage leases
	// alone).
	Grace time.Duration
	// TaskQueue runs the scheduled retention workflows.
	TaskQueue string
}

func (s RetentionSettings) every() time.Duration {
	if s.Every <= 0 {
		return 24 * time.Hour
	}
	return s.Every
}

// sweepLeaseTTL bounds how long a sweep lease keeps backups of the repository waiting should
// the worker die mid-sweep.
const sweepLeaseTTL = 10 * time.Minute

// Retention applies retention policies: which snapshots to forget, deleting their manifests,
// and the sweep of objects nothing references any more. It also keeps each installation's
// retention schedule.
type Retention struct {
	Store    *store.Store
	Archive  *archive.Store
	Temporal client.Client
	Settings RetentionSettings
	Logger   *slog.Logger
}

// ListRetentionRepositories pages an installation's repositories that have snapshots.
func (a *Retention) ListRetentionRepositories(ctx context.Context, in workflows.RetentionPageInput) (workflows.RetentionPage, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return workflows.RetentionPage{}, err
	}
	after := uuid.Nil
	if in.After != "" {
		if after, err = uuid.Parse(in.After); err != nil {
			return workflows.RetentionPage{}, temporal.NewNonRetryableApplicationError("invalid cursor "+in.After, domain.ErrTypeInvalidInput, nil)
		}
	}
	rows, err := a.Store.RetentionCandidates(ctx, tenantID, instID, after, in.Limit)
	if err != nil {
		return workflows.RetentionPage{}, err
	}
	var page workflows.RetentionPage
	for _, r := range rows {
		page.Repositories = append(page.Repositories, workflows.RetentionRepository{
			Target:   workflows.BackupTarget{TenantID: in.TenantID, InstallationID: in.InstallationID, RepositoryID: r.ID.String(), ProviderUUID: r.ProviderUUID},
			FullName: r.FullName,
		})
	}
	if len(rows) == in.Limit {
		page.Next = rows[len(rows)-1].ID.String()
	}
	return page, nil
}

// ApplyRetention runs retention on one repository: it plans from every manifest (refusing a
// repository whose manifests do not verify), deletes the manifests of the snapshots the policy
// forgets (each audited before it is deleted), and then, holding the repository's sweep lease,
// deletes the packs, idx files and export objects that no manifest or draft references and that
// an earlier run already found unreferenced at least the grace period ago. A delete the storage
// refuses (403, an object lock) is recorded and tried again on a later run, never in a loop.
// Running it again after it was cut short finishes the job: every step re-reads storage.
func (a *Retention) ApplyRetention(ctx context.Context, in workflows.ApplyRetentionInput) (workflows.RetentionRepositoryResult, error) {
	res := workflows.RetentionRepositoryResult{Status: domain.RetentionApplied}
	if in.DryRun {
		res.Status = domain.RetentionDryRun
	}
	tenantID, _, repoID, err := parseTarget(in.Target)
	if err != nil {
		return res, err
	}
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return res, classify("load repository", err)
	}
	key, err := archive.NewRepoKey(tenantID.String(), repo.ProviderUUID)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	log := activity.GetLogger(ctx)
	refuse := func(reason string) (workflows.RetentionRepositoryResult, error) {
		res.Status, res.Reason = domain.RetentionRefused, reason
		log.Warn("retention refused", "repository", repo.FullName, "reason", reason)
		return res, a.record(ctx, tenantID, repoID, in.DryRun, res)
	}
	repoDoc, instDoc, err := a.Store.RetentionPolicies(ctx, tenantID, repoID)
	if err != nil {
		return res, classify("load retention policy", err)
	}
	policy, source, err := retention.Effective(repoDoc, instDoc)
	if err != nil {
		return refuse(err.Error())
	}
	holds, err := a.Store.LegalHolds(ctx, tenantID, repoID)
	if err != nil {
		return res, err
	}
	activity.RecordHeartbeat(ctx, "planning")
	plan, err := retention.PlanRepository(ctx, a.Archive, key, policy, holds)
	if err != nil {
		// A manifest that does not verify will not get better by retrying; storage trouble is
		// retried by the activity's policy.
		if errors.Is(err, archive.ErrInvalidManifest) {
			return refuse(err.Error())
		}
		return res, err
	}
	res.Kept, res.ManifestsChecked, res.LegalHoldsKept = len(plan.Keep), len(plan.Decisions), len(holds)
	if in.DryRun {
		res.WouldForget, res.WouldFreeBytes = len(plan.Forget), plan.BytesFreed
		log.Info("retention dry run", "repository", repo.FullName, "policy", source, "would_forget", res.WouldForget,
			"would_free_bytes", res.WouldFreeBytes)
		return res, a.record(ctx, tenantID, repoID, true, res)
	}

	reasons := map[string][]string{}
	for _, d := range plan.Decisions {
		reasons[d.ID] = d.Reasons
	}
	forgot, err := retention.Forget(ctx, a.Archive, key, plan, func(id string) error {
		activity.RecordHeartbeat(ctx, "forgetting "+id)
		return a.audit(ctx, tenantID, domain.AuditSnapshotForgotten, "snapshot", id, map[string]any{
			"repository": repo.FullName, "repository_id": repoID.String(), "policy": policy, "policy_source": source,
		})
	})
	res.Forgotten = len(forgot.Forgotten)
	for _, id := range forgot.Forgotten {
		if err := a.Store.ForgetSnapshot(ctx, tenantID, repoID, id); err != nil {
			return res, err
		}
	}
	for _, l := range forgot.Locked {
		res.ObjectsLocked++
		_ = a.audit(ctx, tenantID, domain.AuditBackupObjectLocked, "snapshot_manifest", l.Key, map[string]any{"repository": repo.FullName, "error": l.Error})
	}
	if err != nil {
		return res, err
	}

	swept, deferred, err := a.sweep(ctx, tenantID, repoID, key, repo.FullName)
	if err != nil {
		return res, err
	}
	if deferred {
		res.SweepDeferred = true
		res.Reason = "sweep deferred: a backup of this repository is staging; the next run sweeps"
	}
	res.ObjectsDeleted, res.BytesFreed = len(swept.Deleted), swept.BytesFreed
	res.ObjectsPending, res.BytesPending = len(swept.Pending), swept.BytesPending
	res.ObjectsLocked += len(swept.Locked)
	log.Info("retention applied", "repository", repo.FullName, "policy", source, "kept", res.Kept, "forgotten", res.Forgotten,
		"objects_deleted", res.ObjectsDeleted, "bytes_freed", res.BytesFreed, "objects_pending", res.ObjectsPending,
		"objects_locked", res.ObjectsLocked, "sweep_deferred", deferred)
	return res, a.record(ctx, tenantID, repoID, false, res)
}

// sweep runs one mark-and-sweep pass under the repository's sweep lease; deferred when a
// backup holds a staging lease (its objects may not be named by a draft yet).
func (a *Retention) sweep(ctx context.Context, tenantID, repoID uuid.UUID, key archive.RepoKey, fullName string) (retention.SweepResult, bool, error) {
	lease, ok, err := a.Store.AcquireStorageLease(ctx, tenantID, repoID, store.LeaseSweep, sweepLeaseTTL)
	if err != nil || !ok {
		return retention.SweepResult{}, !ok && err == nil, err
	}
	defer func() {
		if err := a.Store.ReleaseStorageLease(context.WithoutCancel(ctx), lease); err != nil {
			a.Logger.Warn("release sweep lease", "repository", fullName, "error", err)
		}
	}()
	stored, err := a.Store.RetentionMarks(ctx, tenantID, repoID)
	if err != nil {
		return retention.SweepResult{}, false, err
	}
	marked := make(map[string]time.Time, len(stored))
	for k, m := range stored {
		marked[k] = m.FirstSeen
	}
	res, sweepErr := retention.Sweep(ctx, a.Archive, key, retention.SweepOptions{
		Now: time.Now().UTC(), Grace: a.Settings.Grace, Marked: marked,
		BeforeDelete: func(o archive.StoredObject) error {
			activity.RecordHeartbeat(ctx, "deleting "+o.Key)
			return a.audit(ctx, tenantID, domain.AuditBackupObjectDeleted, "backup_object", o.Key, map[string]any{
				"repository": fullName, "repository_id": repoID.String(), "bytes": o.Size,
			})
		},
	})
	// The marks are saved even when the pass stopped early: what it found stays found.
	next := make(map[string]store.RetentionMark, len(res.Marked))
	sizes := map[string]int64{}
	for _, o := range res.Pending {
		sizes[o.Key] = o.Size
	}
	locked := map[string]string{}
	for _, l := range res.Locked {
		sizes[l.Key], locked[l.Key] = l.Size, l.Error
		_ = a.audit(ctx, tenantID, domain.AuditBackupObjectLocked, "backup_object", l.Key, map[string]any{"repository": fullName, "error": l.Error})
	}
	for k, first := range res.Marked {
		next[k] = store.RetentionMark{Size: sizes[k], FirstSeen: first, LastError: locked[k]}
	}
	if err := a.Store.ReplaceRetentionMarks(ctx, tenantID, repoID, next); err != nil {
		return res, false, err
	}
	if errors.Is(sweepErr, archive.ErrInvalidManifest) {
		return res, false, temporal.NewNonRetryableApplicationError(sweepErr.Error(), domain.ErrTypeSnapshotCorrupt, nil)
	}
	if sweepErr != nil {
		return res, false, sweepErr
	}
	return res, false, nil
}

func (a *Retention) record(ctx context.Context, tenantID, repoID uuid.UUID, dryRun bool, res workflows.RetentionRepositoryResult) error {
	if dryRun {
		// A dry run changes nothing, the stored outcome of the last real run included.
		return nil
	}
	doc, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return a.Store.RecordRetentionRun(ctx, tenantID, repoID, time.Now().UTC(), doc)
}

func (a *Retention) audit(ctx context.Context, tenantID uuid.UUID, action, targetType, targetID string, details map[string]any) error {
	raw, err := json.Marshal(details)
	if err != nil {
		return err
	}
	return a.Store.RecordAudit(ctx, store.AuditEvent{TenantID: tenantID, Actor: "system:retention", Action: action,
		TargetType: targetType, TargetID: targetID, Details: raw})
}

// EnsureRetentionSchedule creates the installation's retention schedule, or brings an existing
// one to the configured interval.
func (a *Retention) EnsureRetentionSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil || a.Settings.TaskQueue == "" {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client or task queue for retention schedules", domain.ErrTypeMisconfigured, nil)
	}
	every := a.Settings.every()
	id := workflows.RetentionScheduleID(ref.InstallationID)
	attrs := temporal.NewSearchAttributes(
		workflows.SearchAttrTenant.ValueSet(ref.TenantID),
		workflows.SearchAttrInstallation.ValueSet(ref.InstallationID),
	)
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}, Jitter: min(every/10, time.Hour)}
	created, err := schedules.Ensure(ctx, a.Temporal, client.ScheduleOptions{
		ID:   id,
		Spec: spec,
		Action: &client.ScheduleWorkflowAction{
			ID: id, Workflow: workflows.RetentionWorkflowName, TaskQueue: a.Settings.TaskQueue,
			Args:                  []any{workflows.RetentionInput{InstallationRef: ref}},
			TypedSearchAttributes: attrs,
		},
		// A run still going when the next is due makes that one skip.
		CatchupWindow:         every,
		TypedSearchAttributes: attrs,
		Memo:                  map[string]any{"purpose": "apply the retention policy of every repository with backups and delete what no snapshot needs any more"},
	})
	if err != nil {
		return fmt.Errorf("retention schedule: %w", err)
	}
	a.Logger.Info("retention schedule ready", "schedule_id", id, "created", created, "every", every.String())
	return nil
}

// DeleteRetentionSchedule deletes the installation's retention schedule; one already gone is
// fine. Backups of an uninstalled installation are kept as they are.
func (a *Retention) DeleteRetentionSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client for retention schedules", domain.ErrTypeMisconfigured, nil)
	}
	id := workflows.RetentionScheduleID(ref.InstallationID)
	deleted, err := schedules.Delete(ctx, a.Temporal, id)
	if deleted {
		a.Logger.Info("deleted retention schedule", "schedule_id", id)
	}
	return err
}
