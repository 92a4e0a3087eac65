package workflows

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// RestoreWorkflowName is the registered name of the restore workflow.
const RestoreWorkflowName = "Restore"

// RestoreWorkflowID is derived from the restore's row, so the API finds the run it started.
func RestoreWorkflowID(restoreID string) string { return "restore-" + restoreID }

// RestoreProgressQuery answers a RestoreProgress.
const RestoreProgressQuery = "restore-progress"

// Activity names of a restore.
const (
	CheckRestoreGrantActivity     = "CheckRestoreGrant"
	PrepareRestoreTargetActivity  = "PrepareRestoreTarget"
	PushRestoreActivity           = "PushRestore"
	ApplyRestoreMetadataActivity  = "ApplyRestoreMetadata"
	RecreatePullRequestsActivity  = "RecreateRestorePullRequests"
	VerifyRestoreActivity         = "VerifyRestore"
	FinishRestoreActivity         = "FinishRestore"
	restoreCancelledMessageSuffix = "cancelled by request"
)

// RestoreTarget is where a snapshot is restored to.
type RestoreTarget struct {
	Mode      string // domain.RestoreTargetNew or domain.RestoreTargetExisting
	Workspace string
	Slug      string
	// Private and Project apply to a new repository ("" project: the workspace's default).
	Private bool
	Project string
	// OnConflict is domain.OnConflictFail or domain.OnConflictForce (mode existing).
	OnConflict string
}

// FullName is "workspace/slug".
func (t RestoreTarget) FullName() string { return t.Workspace + "/" + t.Slug }

// RestoreOptions choose what is restored.
type RestoreOptions struct {
	// Refs are branch or tag names; none: every branch and tag.
	Refs                    []string
	RestoreMetadata         bool
	RestoreOpenPullRequests bool
}

// RestoreInput starts a Restore. It names the snapshot and the target; the Restore App's
// tokens are loaded by the activities from the installation, never carried here.
type RestoreInput struct {
	TenantID       string
	RestoreID      string
	InstallationID string
	RepositoryID   string
	// RepositoryUUID is the source repository's Bitbucket UUID (its key in backup storage).
	RepositoryUUID string
	SnapshotID     string
	Target         RestoreTarget
	Options        RestoreOptions
}

// RestoreTargetInfo is the repository the restore writes to.
type RestoreTargetInfo struct {
	UUID string
	// Created: this restore created it (mode new), possibly in an earlier attempt.
	Created bool
}

// RestorePushResult is what the push step did. Refused is set when on_conflict=fail stopped
// it: Conflicts then lists the refs it would have rewound and nothing was pushed.
type RestorePushResult struct {
	Wanted    []string
	Pushed    []string
	Skipped   map[string]string
	Rejected  map[string]string
	Conflicts []RefConflict
	Refused   bool
	// HeadBranch is the snapshot's HEAD branch (short name); Bytes what was downloaded from
	// storage and written to the target.
	HeadBranch string
	Bytes      int64
}

// RefConflict is a target ref a restore would rewind.
type RefConflict struct {
	Ref      string `json:"ref"`
	Target   string `json:"target"`
	Snapshot string `json:"snapshot"`
}

// RestoreMetadataResult lists the settings applied and, for the others, why not.
type RestoreMetadataResult struct {
	Applied []string          `json:"applied"`
	Skipped map[string]string `json:"skipped,omitempty"`
	// NotInBackup are settings the snapshot does not hold (the backup app could not read them):
	// nothing a restore could do, so they do not make it partial.
	NotInBackup map[string]string `json:"not_in_backup,omitempty"`
}

// RestoredPullRequest is what happened to one open pull request.
type RestoredPullRequest struct {
	OriginalID int64  `json:"original_id"`
	Title      string `json:"title"`
	Restored   bool   `json:"restored"`
	NewID      int64  `json:"new_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

// RestorePullRequestsResult is the pull request step's report.
type RestorePullRequestsResult struct {
	Results         []RestoredPullRequest `json:"results"`
	Restored        int                   `json:"restored"`
	Failed          int                   `json:"failed"`
	Skipped         int                   `json:"skipped"`
	NeverRestorable []string              `json:"never_restorable,omitempty"`
}

// RestoreStepInput is the input of every step after the grant check.
type RestoreStepInput struct {
	Restore RestoreInput
	Wanted  []string
	Push    *RestorePushResult
}

// RestoreProgress is the progress query's answer.
type RestoreProgress struct {
	Step string `json:"step"`
	// Detail is the running step's sub-step ("hydrate: pack-....pack", "push: Writing objects"),
	// filled by the API from the step's heartbeat.
	Detail     string `json:"detail,omitempty"`
	RefsTotal  int    `json:"refs_total"`
	RefsPushed int    `json:"refs_pushed"`
	Bytes      int64  `json:"bytes"`
}

// RestoreOutcome is what a restore recorded: its status, why, and per ref and per pull request
// what happened.
type RestoreOutcome struct {
	TenantID  string `json:"tenant_id"`
	RestoreID string `json:"restore_id"`
	Status    string `json:"status"`
	Message   string `json:"message"`
	// FailedStep is the step a failed restore stopped at.
	FailedStep   string                     `json:"failed_step,omitempty"`
	Target       string                     `json:"target"`
	Refs         map[string]string          `json:"refs,omitempty"` // ref -> pushed|unchanged|rejected: ...|mismatch|not pushed
	RefsPushed   int                        `json:"refs_pushed"`
	RefsTotal    int                        `json:"refs_total"`
	Conflicts    []RefConflict              `json:"conflicts,omitempty"`
	Mismatches   []string                   `json:"mismatches,omitempty"`
	Metadata     *RestoreMetadataResult     `json:"metadata,omitempty"`
	PullRequests *RestorePullRequestsResult `json:"pull_requests,omitempty"`
	Bytes        int64                      `json:"bytes"`
	DurationMS   int64                      `json:"duration_ms"`
}

// Restore puts a snapshot back into Bitbucket with the Restore App's grant, as durable steps:
// check the grant, create (or find) the target, hydrate and push, metadata, open pull requests,
// verify by ls-remote, record. A failure at any step is recorded with how far the restore got;
// a cancellation is recorded as cancelled. The restore never writes to backup storage.
func Restore(ctx workflow.Context, in RestoreInput) (RestoreOutcome, error) {
	started := workflow.Now(ctx)
	progress := RestoreProgress{Step: domain.RestoreStepCheckGrant}
	if err := workflow.SetQueryHandler(ctx, RestoreProgressQuery, func() (RestoreProgress, error) { return progress, nil }); err != nil {
		return RestoreOutcome{}, err
	}
	out := RestoreOutcome{TenantID: in.TenantID, RestoreID: in.RestoreID, Target: in.Target.FullName()}
	step := func(name string) { progress.Step = name }

	runErr := func() error {
		if err := workflow.ExecuteActivity(ProviderActivity(ctx), CheckRestoreGrantActivity, in).Get(ctx, nil); err != nil {
			return err
		}
		step(domain.RestoreStepCreateTarget)
		var target RestoreTargetInfo
		if err := workflow.ExecuteActivity(ProviderActivity(ctx), PrepareRestoreTargetActivity, in).Get(ctx, &target); err != nil {
			return err
		}
		step(domain.RestoreStepPush)
		var push RestorePushResult
		if err := workflow.ExecuteActivity(RestorePushActivity(ctx), PushRestoreActivity, in).Get(ctx, &push); err != nil {
			return err
		}
		progress.RefsTotal, progress.RefsPushed, progress.Bytes = len(push.Wanted), len(push.Pushed), push.Bytes
		out.RefsTotal, out.RefsPushed, out.Bytes, out.Conflicts = len(push.Wanted), len(push.Pushed), push.Bytes, push.Conflicts
		out.Refs = refOutcomes(push, nil)
		if push.Refused {
			out.FailedStep = domain.RestoreStepPush
			return temporal.NewNonRetryableApplicationError(refusedMessage(push.Conflicts), domain.ErrTypeRestoreRefConflict, nil)
		}
		stepIn := RestoreStepInput{Restore: in, Wanted: push.Wanted, Push: &push}
		step(domain.RestoreStepMetadata)
		var md RestoreMetadataResult
		if err := workflow.ExecuteActivity(ProviderActivity(ctx), ApplyRestoreMetadataActivity, stepIn).Get(ctx, &md); err != nil {
			return err
		}
		out.Metadata = &md
		if in.Options.RestoreOpenPullRequests {
			step(domain.RestoreStepPullRequests)
			var prs RestorePullRequestsResult
			if err := workflow.ExecuteActivity(RestorePullRequestActivity(ctx), RecreatePullRequestsActivity, stepIn).Get(ctx, &prs); err != nil {
				return err
			}
			out.PullRequests = &prs
		}
		step(domain.RestoreStepVerify)
		var mismatches []string
		if err := workflow.ExecuteActivity(ProviderActivity(ctx), VerifyRestoreActivity, stepIn).Get(ctx, &mismatches); err != nil {
			return err
		}
		out.Mismatches = mismatches
		out.Refs = refOutcomes(push, mismatches)
		return nil
	}()

	failedAt := progress.Step
	step(domain.RestoreStepRecord)
	out.DurationMS = workflow.Now(ctx).Sub(started).Milliseconds()
	recordCtx := ctx
	var canceled *temporal.CanceledError
	switch {
	case runErr != nil && (errors.As(runErr, &canceled) || ctx.Err() != nil):
		out.Status, out.FailedStep = domain.RestoreCancelled, failedAt
		out.Message = fmt.Sprintf("%s at step %s after pushing %d of %d refs", restoreCancelledMessageSuffix, failedAt, out.RefsPushed, out.RefsTotal)
		recordCtx, _ = workflow.NewDisconnectedContext(ctx)
	case runErr != nil:
		out.Status = domain.RestoreFailed
		if out.FailedStep == "" {
			out.FailedStep = failedAt
		}
		out.Message = fmt.Sprintf("failed at step %s (%d of %d refs pushed): %s", out.FailedStep, out.RefsPushed, out.RefsTotal, failureText(runErr))
	default:
		out.Status, out.Message = summarize(out)
	}
	if err := workflow.ExecuteActivity(DatabaseActivity(recordCtx), FinishRestoreActivity, out).Get(recordCtx, nil); err != nil {
		return out, err
	}
	step(domain.RestoreStepDone)
	if runErr != nil && out.Status == domain.RestoreCancelled {
		return out, runErr
	}
	return out, nil
}

func refusedMessage(cs []RefConflict) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Ref
	}
	return "the target has refs the snapshot would rewind: " + strings.Join(names, ", ") +
		" (nothing was pushed; restore with on_conflict=force to rewind them)"
}

// refOutcomes says per wanted ref what happened.
func refOutcomes(push RestorePushResult, mismatches []string) map[string]string {
	out := map[string]string{}
	for _, r := range push.Wanted {
		out[r] = "not pushed"
	}
	for r, why := range push.Skipped {
		if _, wanted := out[r]; wanted {
			out[r] = "unchanged: " + why
		}
	}
	for _, r := range push.Pushed {
		out[r] = "pushed"
	}
	for r, why := range push.Rejected {
		out[r] = "rejected: " + why
	}
	for _, r := range mismatches {
		if !strings.HasPrefix(out[r], "rejected") {
			out[r] = "mismatch: the target's commit differs from the snapshot's after the push"
		}
	}
	return out
}

// summarize turns a restore that ran to the end into ok or partial, with the reasons.
func summarize(out RestoreOutcome) (string, string) {
	var reasons []string
	if n := len(out.Mismatches); n > 0 {
		reasons = append(reasons, fmt.Sprintf("%d refs differ from the snapshot (%s)", n, strings.Join(out.Mismatches, ", ")))
	}
	if md := out.Metadata; md != nil && len(md.Skipped) > 0 {
		keys := make([]string, 0, len(md.Skipped))
		for k := range md.Skipped {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		reasons = append(reasons, "settings not restored: "+strings.Join(keys, ", "))
	}
	if pr := out.PullRequests; pr != nil && pr.Failed > 0 {
		reasons = append(reasons, fmt.Sprintf("%d of %d open pull requests not re-created", pr.Failed, pr.Failed+pr.Restored))
	}
	if len(reasons) == 0 {
		return domain.RestoreOK, fmt.Sprintf("restored %d refs into %s; the target's refs equal the snapshot's", out.RefsTotal, out.Target)
	}
	return domain.RestorePartial, "restored with gaps: " + strings.Join(reasons, "; ")
}

// failureText is an activity failure's message without Temporal's wrapping.
func failureText(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Error()
	}
	return err.Error()
}
