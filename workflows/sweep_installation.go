package workflows

import (
	"errors"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// SweepInstallationWorkflowName is the registered name of the scheduled change sweep.
const SweepInstallationWorkflowName = "SweepInstallation"

// SweepScheduleID is the fixed ID of an installation's sweep schedule, so creating it is
// idempotent and uninstalling can delete it without a lookup.
func SweepScheduleID(installationID string) string { return "sweep-" + installationID }

// Activities of the sweep and of its schedule.
const (
	PrepareSweepActivity          = "PrepareSweep"
	CheckForChangesActivity       = "CheckRepositoriesForChanges"
	WakeRepositoriesActivity      = "WakeRepositories"
	EnsureSweepScheduleActivity   = "EnsureSweepSchedule"
	DeleteSweepScheduleActivity   = "DeleteSweepSchedule"
	sweepPagesBeforeContinueAsNew = 200
)

// SweepPageSize is how many repositories one check activity handles. It keeps every payload
// small (a page's changed list is at most ~100 KB) and the history short: a sweep of N
// repositories costs a handful of events per page, not per repository.
const SweepPageSize = 500

// SweepInput starts a sweep. The schedule passes only the installation (an InstallationRef
// payload decodes into it); After and Totals carry progress across continue-as-new.
type SweepInput struct {
	InstallationRef
	After  string
	Totals SweepResult
}

// SweepPlan says whether the installation is swept at all.
type SweepPlan struct {
	// Skip is why the installation is not swept (removed, needs_reauth, ...); "" to sweep.
	Skip string
}

// SweepPageInput asks for one page of change checks. The activity reads the page from Postgres
// itself, so the workflow only carries a cursor.
type SweepPageInput struct {
	InstallationRef
	After string
	Limit int
}

// SweepRepository names one repository to wake: GitSec's ID and the provider's UUID only.
type SweepRepository struct {
	ID           string
	ProviderUUID string
}

// SweepPageResult is one page's outcome.
type SweepPageResult struct {
	Checked   int
	Unchanged int
	Changed   []SweepRepository
	// Failed counts repositories whose check failed for a passing reason; they are checked again
	// by the next sweep (a webhook may well come first). Errors holds the first few messages.
	Failed int
	Errors []string
	// Next is the cursor of the next page; "" after the last one.
	Next string
}

// WakeInput wakes the backup workflows of the given repositories.
type WakeInput struct {
	InstallationRef
	Trigger      domain.TriggerKind
	Repositories []SweepRepository
}

// SweepResult summarises a sweep (it is the workflow's result in the Temporal UI).
type SweepResult struct {
	Skipped   string `json:",omitempty"`
	Checked   int
	Unchanged int
	Changed   int
	Woken     int
	Failed    int
	Errors    []string `json:",omitempty"`
}

// maxSweepErrors bounds the error messages a sweep keeps in its result.
const maxSweepErrors = 20

// SweepInstallation checks every included repository of an installation with one ls-remote
// each against its last snapshot and wakes the backup workflow of those that changed (or were
// never backed up). It is the safety net for webhook deliveries that never came, and the only
// change detection for workspaces without a webhook.
//
// The checks run inside one activity per page of SweepPageSize repositories, which checks its
// page with bounded concurrency (the worker's sweep concurrency, and the client's git rate
// limiter) and heartbeats; the workflow itself only holds a cursor and counters, so payloads
// stay small and pending activities stay at two or less whatever the installation's size.
func SweepInstallation(ctx workflow.Context, in SweepInput) (SweepResult, error) {
	res := in.Totals
	log := workflow.GetLogger(ctx)
	db := DatabaseActivity(ctx)
	if in.After == "" {
		var plan SweepPlan
		if err := workflow.ExecuteActivity(db, PrepareSweepActivity, in.InstallationRef).Get(ctx, &plan); err != nil {
			return res, err
		}
		if plan.Skip != "" {
			res.Skipped = plan.Skip
			log.Info("sweep skipped", "installation", in.InstallationID, "reason", plan.Skip)
			return res, nil
		}
	}
	check := SweepCheckActivity(ctx)
	for pages := 0; ; pages++ {
		var page SweepPageResult
		err := workflow.ExecuteActivity(check, CheckForChangesActivity,
			SweepPageInput{InstallationRef: in.InstallationRef, After: in.After, Limit: SweepPageSize}).Get(ctx, &page)
		if err != nil {
			var appErr *temporal.ApplicationError
			if errors.As(err, &appErr) && revokesInstallation(ctx, appErr.Type()) {
				// The same reaction as a failed backup: the installation waits for a reconnect,
				// and the next sweeps skip it quietly until then.
				msg := "Bitbucket rejected GitSec's access during the scheduled sweep; reconnect the account"
				_ = workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{in.InstallationRef, domain.InstallationNeedsReauth, msg}).Get(ctx, nil)
				res.Skipped = msg
				return res, nil
			}
			return res, err
		}
		res.Checked += page.Checked
		res.Unchanged += page.Unchanged
		res.Changed += len(page.Changed)
		res.Failed += page.Failed
		for _, e := range page.Errors {
			if len(res.Errors) < maxSweepErrors {
				res.Errors = append(res.Errors, e)
			}
		}
		if len(page.Changed) > 0 {
			var woken int
			if err := workflow.ExecuteActivity(db, WakeRepositoriesActivity,
				WakeInput{InstallationRef: in.InstallationRef, Trigger: domain.TriggerSchedule, Repositories: page.Changed}).Get(ctx, &woken); err != nil {
				return res, err
			}
			res.Woken += woken
		}
		if page.Next == "" {
			break
		}
		in.After = page.Next
		if pages+1 >= sweepPagesBeforeContinueAsNew || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			in.Totals = res
			return res, workflow.NewContinueAsNewError(ctx, SweepInstallationWorkflowName, in)
		}
	}
	log.Info("sweep done", "installation", in.InstallationID, "checked", res.Checked, "changed", res.Changed,
		"woken", res.Woken, "failed", res.Failed)
	return res, nil
}

// revokesInstallation says whether a failed page means the installation's credentials are dead.
// Only a 401 that survived a forced refresh does; a 403 is one repository's (the check wakes its
// backup, which records the reason on it). Executions from before that change also took a 403
// for a revocation, and replay them so.
func revokesInstallation(ctx workflow.Context, errType string) bool {
	if workflow.GetVersion(ctx, "sweep-forbidden-is-per-repository", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return errType == domain.ErrTypeCredentialsRevoked || errType == domain.ErrTypeForbidden
	}
	return errType == domain.ErrTypeCredentialsRevoked
}
