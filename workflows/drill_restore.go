package workflows

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// Workflow and activity names of restore drills.
const (
	DrillRestoreWorkflowName      = "DrillRestore"
	DrillInstallationWorkflowName = "DrillInstallation"

	StartDrillActivity          = "StartDrill"
	RunDrillActivity            = "RunDrill"
	FinishDrillActivity         = "FinishDrill"
	ListDrillCandidatesActivity = "ListDrillCandidates"
	EnsureDrillScheduleActivity = "EnsureDrillSchedule"
	DeleteDrillScheduleActivity = "DeleteDrillSchedule"
)

// DrillPageSize is how many repositories one ListDrillCandidates page holds, and
// DrillConcurrency how many drills of an installation run at once: a drill downloads the
// whole snapshot and runs git fsck, which is CPU- and disk-heavy, so a schedule drills a
// few repositories at a time rather than all of them.
const (
	DrillPageSize                 = 50
	DrillConcurrency              = 2
	drillPagesBeforeContinueAsNew = 20
	maxDrillFailuresKept          = 20
)

// DrillWorkflowID names one drill of a repository row (tenant-owned, never the provider's ID
// alone): drills of one repository may overlap, each under its own drill ID.
func DrillWorkflowID(repositoryID, drillID string) string {
	return "drill-" + repositoryID + "-" + drillID
}

// DrillScheduleID is the fixed ID of an installation's drill schedule.
func DrillScheduleID(installationID string) string { return "drills-" + installationID }

// DrillInput starts one drill of one snapshot. DrillID is chosen by whoever starts it (the API
// or the scheduled fan-out), so the drill row exists under a known ID from the start.
type DrillInput struct {
	Target     BackupTarget
	DrillID    string
	SnapshotID string
	Trigger    domain.TriggerKind
}

// DrillStep is one step of a drill with its outcome and duration (domain.DrillStep*).
type DrillStep struct {
	Name       string
	Status     string
	DurationMS int64
	Detail     string `json:",omitempty"`
}

// DrillReport is what RunDrill found: every step, and the first failure's reason.
type DrillReport struct {
	Passed bool
	Reason string `json:",omitempty"`
	Steps  []DrillStep
}

// FinishDrillInput records a drill's outcome.
type FinishDrillInput struct {
	Target  BackupTarget
	DrillID string
	Status  string
	Reason  string
	Steps   []DrillStep
}

// DrillResult is the DrillRestore workflow's result.
type DrillResult struct {
	DrillID    string
	SnapshotID string
	Status     string
	Reason     string `json:",omitempty"`
	DurationMS int64
}

// DrillRestore restores a snapshot into a scratch bare repository on a worker and checks it:
// every pack's checksum, the refs against the manifest, git fsck --strict, and that the pull
// request and metadata exports decode. Nothing is written to Bitbucket or to the backup
// storage. The outcome, with each step's timing, is recorded on the snapshot; a failed drill is
// an alert. A check that fails is the drill's result, not an error: only trouble running the
// drill at all (storage unreachable, after retries) is retried, and is a failed drill too.
func DrillRestore(ctx workflow.Context, in DrillInput) (DrillResult, error) {
	start := workflow.Now(ctx)
	res := DrillResult{DrillID: in.DrillID, SnapshotID: in.SnapshotID}
	db := DatabaseActivity(ctx)
	if err := workflow.ExecuteActivity(db, StartDrillActivity, in).Get(ctx, nil); err != nil {
		return res, err
	}
	var report DrillReport
	if err := workflow.ExecuteActivity(DrillActivity(ctx), RunDrillActivity, in).Get(ctx, &report); err != nil {
		report = DrillReport{Reason: "the drill could not run: " + failureMessage(err)}
		if temporal.IsCanceledError(err) {
			// Record the end even so, or the drill would show as running for ever.
			ctx, _ = workflow.NewDisconnectedContext(ctx)
			db = DatabaseActivity(ctx)
			report.Reason = "the drill was cancelled"
		}
	}
	res.Status, res.Reason = domain.DrillFailed, report.Reason
	if report.Passed {
		res.Status = domain.DrillPassed
	}
	finish := FinishDrillInput{Target: in.Target, DrillID: in.DrillID, Status: res.Status, Reason: report.Reason, Steps: report.Steps}
	if err := workflow.ExecuteActivity(db, FinishDrillActivity, finish).Get(ctx, nil); err != nil {
		return res, err
	}
	res.DurationMS = workflow.Now(ctx).Sub(start).Milliseconds()
	workflow.GetLogger(ctx).Info("restore drill done", "repository", in.Target.RepositoryID, "snapshot", in.SnapshotID,
		"status", res.Status, "reason", res.Reason)
	return res, nil
}

// failureMessage is an activity failure's own message, without the SDK's wrapping.
func failureMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Error()
	}
	return err.Error()
}

// DrillInstallationInput starts an installation's scheduled drills (the schedule passes only
// the installation); After and Totals carry progress across continue-as-new.
type DrillInstallationInput struct {
	InstallationRef
	After  string
	Totals DrillInstallationResult
}

// DrillCandidatesInput asks for one page of repositories to drill.
type DrillCandidatesInput struct {
	InstallationRef
	After string
	Limit int
}

// DrillCandidate is a repository and the snapshot of it to drill (its latest).
type DrillCandidate struct {
	Target     BackupTarget
	FullName   string
	SnapshotID string
}

// DrillCandidatesPage is one page; Next is "" after the last.
type DrillCandidatesPage struct {
	Repositories []DrillCandidate
	Next         string
}

// DrillInstallationResult summarises a scheduled round of drills.
type DrillInstallationResult struct {
	Drilled  int
	Passed   int
	Failed   int
	Failures []string `json:",omitempty"`
}

// DrillInstallation drills the latest snapshot of every included repository of an
// installation, DrillConcurrency at a time, each as a DrillRestore child (its own history, so
// the parent's stays small; continue-as-new after a few pages).
func DrillInstallation(ctx workflow.Context, in DrillInstallationInput) (DrillInstallationResult, error) {
	res := in.Totals
	db := DatabaseActivity(ctx)
	for pages := 0; ; pages++ {
		var page DrillCandidatesPage
		if err := workflow.ExecuteActivity(db, ListDrillCandidatesActivity,
			DrillCandidatesInput{InstallationRef: in.InstallationRef, After: in.After, Limit: DrillPageSize}).Get(ctx, &page); err != nil {
			return res, err
		}
		for i := 0; i < len(page.Repositories); i += DrillConcurrency {
			batch := page.Repositories[i:min(i+DrillConcurrency, len(page.Repositories))]
			futures := make([]workflow.ChildWorkflowFuture, len(batch))
			for j, c := range batch {
				futures[j] = startDrillChild(ctx, c)
			}
			for j, f := range futures {
				var r DrillResult
				res.Drilled++
				err := f.Get(ctx, &r)
				switch {
				case err != nil:
					res.Failed++
					res.addFailure(batch[j].FullName + ": " + failureMessage(err))
				case r.Status == domain.DrillPassed:
					res.Passed++
				default:
					res.Failed++
					res.addFailure(batch[j].FullName + ": " + r.Reason)
				}
			}
		}
		if page.Next == "" {
			break
		}
		in.After = page.Next
		if pages+1 >= drillPagesBeforeContinueAsNew || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			in.Totals = res
			return res, workflow.NewContinueAsNewError(ctx, DrillInstallationWorkflowName, in)
		}
	}
	workflow.GetLogger(ctx).Info("scheduled drills done", "installation", in.InstallationID, "drilled", res.Drilled,
		"passed", res.Passed, "failed", res.Failed)
	return res, nil
}

func (r *DrillInstallationResult) addFailure(msg string) {
	if len(r.Failures) < maxDrillFailuresKept {
		r.Failures = append(r.Failures, msg)
	}
}

// startDrillChild starts one repository's drill under a fresh drill ID (a side effect, so a
// replay reuses the recorded one).
func startDrillChild(ctx workflow.Context, c DrillCandidate) workflow.ChildWorkflowFuture {
	var drillID string
	_ = workflow.SideEffect(ctx, func(workflow.Context) any { return uuid.NewString() }).Get(&drillID)
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:               DrillWorkflowID(c.Target.RepositoryID, drillID),
		WorkflowExecutionTimeout: 12 * time.Hour,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			SearchAttrTenant.ValueSet(c.Target.TenantID),
			SearchAttrInstallation.ValueSet(c.Target.InstallationID),
			SearchAttrRepository.ValueSet(c.Target.ProviderUUID),
		),
	})
	return workflow.ExecuteChildWorkflow(cctx, DrillRestoreWorkflowName,
		DrillInput{Target: c.Target, DrillID: drillID, SnapshotID: c.SnapshotID, Trigger: domain.TriggerSchedule})
}

// ensureDrillSchedule and deleteDrillSchedule are the onboarding's and the uninstall's drill
// schedule steps; executions started before drills existed replay without them.
func ensureDrillSchedule(ctx workflow.Context, ref InstallationRef) error {
	if workflow.GetVersion(ctx, "drill-schedule", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	if err := workflow.ExecuteActivity(TemporalActivity(ctx), EnsureDrillScheduleActivity, ref).Get(ctx, nil); err != nil {
		return fmt.Errorf("drill schedule: %w", err)
	}
	return nil
}

func deleteDrillSchedule(ctx workflow.Context, ref InstallationRef) error {
	if workflow.GetVersion(ctx, "drill-schedule-delete", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	return workflow.ExecuteActivity(TemporalActivity(ctx), DeleteDrillScheduleActivity, ref).Get(ctx, nil)
}
