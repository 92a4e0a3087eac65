package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// Workflow and activity names of retention.
const (
	RetentionWorkflowName = "Retention"

	ListRetentionRepositoriesActivity = "ListRetentionRepositories"
	ApplyRetentionActivity            = "ApplyRetention"
	EnsureRetentionScheduleActivity   = "EnsureRetentionSchedule"
	DeleteRetentionScheduleActivity   = "DeleteRetentionSchedule"
)

// RetentionPageSize is how many repositories one page lists; RetentionConcurrency how many
// repositories of an installation retention works on at once (each run lists and reads every
// manifest of its repository, which is storage-heavy, not CPU-heavy).
const (
	RetentionPageSize                 = 50
	RetentionConcurrency              = 4
	retentionPagesBeforeContinueAsNew = 20
	maxRetentionProblemsKept          = 20
)

// RetentionScheduleID is the fixed ID of an installation's retention schedule (and of the
// runs it starts; one at a time).
func RetentionScheduleID(installationID string) string { return "retention-" + installationID }

// RetentionManualWorkflowID is the ID of an installation's retention run started through the
// API (one at a time; the schedule's runs have their own IDs).
func RetentionManualWorkflowID(installationID string) string {
	return "retention-manual-" + installationID
}

// RetentionInput starts a retention run over an installation's repositories; DryRun reports
// and deletes nothing. After and Totals carry progress across continue-as-new.
type RetentionInput struct {
	InstallationRef
	DryRun bool
	After  string
	Totals RetentionResult
}

// RetentionPageInput asks for one page of repositories with snapshots.
type RetentionPageInput struct {
	InstallationRef
	After string
	Limit int
}

// RetentionRepository is one repository a run works on.
type RetentionRepository struct {
	Target   BackupTarget
	FullName string
}

// RetentionPage is one page; Next is "" after the last.
type RetentionPage struct {
	Repositories []RetentionRepository
	Next         string
}

// ApplyRetentionInput runs retention on one repository.
type ApplyRetentionInput struct {
	Target   BackupTarget
	FullName string
	DryRun   bool
}

// RetentionRepositoryResult is what retention did to one repository (domain.Retention* status).
type RetentionRepositoryResult struct {
	Status string
	// Reason says why the repository was refused or its sweep deferred.
	Reason           string `json:",omitempty"`
	Kept             int
	Forgotten        int
	ObjectsDeleted   int
	BytesFreed       int64
	ObjectsPending   int
	BytesPending     int64
	ObjectsLocked    int
	SweepDeferred    bool `json:",omitempty"`
	WouldForget      int  `json:",omitempty"`
	WouldFreeBytes   int64
	LegalHoldsKept   int
	ManifestsChecked int
}

// RetentionResult sums a run over an installation.
type RetentionResult struct {
	Repositories   int
	Refused        int
	Forgotten      int
	ObjectsDeleted int
	BytesFreed     int64
	ObjectsLocked  int
	WouldForget    int
	WouldFreeBytes int64
	Problems       []string `json:",omitempty"`
}

// Retention applies each repository's retention policy across an installation, a few
// repositories at a time: the snapshots the policy forgets lose their manifests first, then
// packs and export objects that no remaining manifest or draft references are deleted once
// they have been unreferenced for the grace period (see ApplyRetention). A repository whose
// manifests do not verify is refused and reported; the others go on.
func Retention(ctx workflow.Context, in RetentionInput) (RetentionResult, error) {
	res := in.Totals
	db := DatabaseActivity(ctx)
	storage := StorageActivity(ctx)
	for pages := 0; ; pages++ {
		var page RetentionPage
		if err := workflow.ExecuteActivity(db, ListRetentionRepositoriesActivity,
			RetentionPageInput{InstallationRef: in.InstallationRef, After: in.After, Limit: RetentionPageSize}).Get(ctx, &page); err != nil {
			return res, err
		}
		for i := 0; i < len(page.Repositories); i += RetentionConcurrency {
			batch := page.Repositories[i:min(i+RetentionConcurrency, len(page.Repositories))]
			futures := make([]workflow.Future, len(batch))
			for j, r := range batch {
				futures[j] = workflow.ExecuteActivity(storage, ApplyRetentionActivity,
					ApplyRetentionInput{Target: r.Target, FullName: r.FullName, DryRun: in.DryRun})
			}
			for j, f := range futures {
				var r RetentionRepositoryResult
				res.Repositories++
				if err := f.Get(ctx, &r); err != nil {
					res.Refused++
					res.addProblem(batch[j].FullName + ": " + failureMessage(err))
					continue
				}
				res.add(batch[j].FullName, r)
			}
		}
		if page.Next == "" {
			break
		}
		in.After = page.Next
		if pages+1 >= retentionPagesBeforeContinueAsNew || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			in.Totals = res
			return res, workflow.NewContinueAsNewError(ctx, RetentionWorkflowName, in)
		}
	}
	workflow.GetLogger(ctx).Info("retention done", "installation", in.InstallationID, "dry_run", in.DryRun,
		"repositories", res.Repositories, "forgotten", res.Forgotten, "objects_deleted", res.ObjectsDeleted,
		"bytes_freed", res.BytesFreed, "refused", res.Refused)
	return res, nil
}

func (r *RetentionResult) add(name string, x RetentionRepositoryResult) {
	r.Forgotten += x.Forgotten
	r.ObjectsDeleted += x.ObjectsDeleted
	r.BytesFreed += x.BytesFreed
	r.ObjectsLocked += x.ObjectsLocked
	r.WouldForget += x.WouldForget
	r.WouldFreeBytes += x.WouldFreeBytes
	if x.Reason != "" {
		if x.Status == domain.RetentionRefused {
			r.Refused++
		}
		r.addProblem(fmt.Sprintf("%s: %s", name, x.Reason))
	}
}

func (r *RetentionResult) addProblem(msg string) {
	if len(r.Problems) < maxRetentionProblemsKept {
		r.Problems = append(r.Problems, msg)
	}
}

// ensureRetentionSchedule and deleteRetentionSchedule are the onboarding's and the uninstall's
// retention schedule steps; executions started before retention existed replay without them.
// An uninstall stops retention: the backups of a removed installation are kept as they are.
func ensureRetentionSchedule(ctx workflow.Context, ref InstallationRef) error {
	if workflow.GetVersion(ctx, "retention-schedule", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	if err := workflow.ExecuteActivity(TemporalActivity(ctx), EnsureRetentionScheduleActivity, ref).Get(ctx, nil); err != nil {
		return fmt.Errorf("retention schedule: %w", err)
	}
	return nil
}

func deleteRetentionSchedule(ctx workflow.Context, ref InstallationRef) error {
	if workflow.GetVersion(ctx, "retention-schedule-delete", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	return workflow.ExecuteActivity(TemporalActivity(ctx), DeleteRetentionScheduleActivity, ref).Get(ctx, nil)
}
