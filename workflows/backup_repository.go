package workflows

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// BackupRepositoryWorkflowName is the registered name of the per-repository backup workflow.
const BackupRepositoryWorkflowName = "BackupRepository"

// BackupRequestSignal asks a BackupRepository workflow for a backup (sent with Signal-With-Start).
const BackupRequestSignal = "backup-request"

// BackupStatusQuery returns the live BackupStatus.
const BackupStatusQuery = "status"

// BackupWorkflowID is derived from the repository row the workflow backs up: tenant,
// installation and provider UUID. Provider UUIDs are global (two tenants, or two installations of
// one tenant, may see the same Bitbucket repository), so an ID derived from the UUID alone would
// let one tenant's requests wake a workflow that runs as another. One workflow per repository row
// also means two backups of one row never run at once.
func BackupWorkflowID(t BackupTarget) string {
	return "backup-" + t.TenantID + "-" + t.InstallationID + "-" + normalizeProviderUUID(t.ProviderUUID)
}

func normalizeProviderUUID(u string) string { return strings.ToLower(strings.Trim(u, "{}")) }

// backupIdleDrainVersion marks executions that look for buffered requests before ending idle;
// older ones ended and dropped them.
const backupIdleDrainVersion = "backup-idle-drain"

// backupTargetCheckVersion marks executions that refuse requests for another target; older
// executions accepted every request and must replay as they ran.
const backupTargetCheckVersion = "backup-request-target-check"

// BackupRequest is one reason to back up; requests that arrive while a run is busy are
// coalesced into the next run. Target is the repository row the sender means: a workflow refuses
// a request whose target is not its own.
type BackupRequest struct {
	Target     BackupTarget
	Trigger    domain.TriggerKind
	DeliveryID string
	// RequestedAt is when the reason arose; for a webhook, when the delivery was received (the
	// push time that freshness is measured from).
	RequestedAt time.Time
	// Event is a webhook request's event key (repo:push, pullrequest:updated, ...).
	Event string `json:",omitempty"`
	// PushedRefs are the ref changes a push reported: a hint for the record, since the fetch
	// takes everything the server has anyway.
	PushedRefs []PushedRef `json:",omitempty"`
	// PullRequestID is the pull request a webhook named: the export step fetches it again
	// even when its updated_on did not move.
	PullRequestID int64 `json:",omitempty"`
}

// PushedRef is one ref change of a push as Bitbucket reported it (full hashes; Old empty on
// creation, New empty on deletion).
type PushedRef struct {
	Name   string `json:"name"`
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
	Forced bool   `json:"forced,omitempty"`
}

// BackupTarget names the repository row by GitSec's IDs and the provider's UUID (part of the
// workflow ID); activities load the rest themselves.
type BackupTarget struct {
	TenantID       string
	InstallationID string
	RepositoryID   string
	ProviderUUID   string
}

// Validate refuses a target with a part missing: the workflow ID is built from the parts, so a
// missing one could make two rows share a workflow.
func (t BackupTarget) Validate() error {
	for _, p := range []struct{ name, value string }{
		{"tenant", t.TenantID}, {"installation", t.InstallationID}, {"repository", t.RepositoryID},
		{"provider UUID", normalizeProviderUUID(t.ProviderUUID)},
	} {
		if strings.TrimSpace(p.value) == "" {
			return fmt.Errorf("backup target %+v has no %s", t, p.name)
		}
		if strings.ContainsAny(p.value, " /") {
			return fmt.Errorf("backup target %+v: invalid %s %q", t, p.name, p.value)
		}
	}
	return nil
}

func (t BackupTarget) sameRow(o BackupTarget) bool {
	return t.TenantID == o.TenantID && t.InstallationID == o.InstallationID && t.RepositoryID == o.RepositoryID &&
		normalizeProviderUUID(t.ProviderUUID) == normalizeProviderUUID(o.ProviderUUID)
}

// BackupInput starts (or continues) a BackupRepository workflow.
type BackupInput struct {
	Target  BackupTarget
	Pending []BackupRequest
	// QuietPeriod waits for more requests after one arrives (a push burst becomes one backup);
	// MaxWait bounds that wait from the first pending request.
	QuietPeriod time.Duration
	MaxWait     time.Duration
	// IdleTimeout ends the workflow after a quiet spell; the next request starts a new one.
	IdleTimeout time.Duration
	// LastHost is the host queue that served the previous run (mirror affinity).
	LastHost string
	// HostTimeout is how long a run waits for the mirror's worker to pick it up before another
	// worker takes over (and hydrates the mirror from storage).
	HostTimeout time.Duration
	// RefusedRequests counts requests refused for another target, carried over continue-as-new
	// so that the execution that finally ends still fails loudly.
	RefusedRequests int
	// HeartbeatTimeout is how long the staging activity may go without a heartbeat before
	// Temporal retries it (0: two minutes); tests shorten it.
	HeartbeatTimeout time.Duration
	// CatchUpDelay is how long after a run whose export was incomplete (rate limits) the
	// workflow runs again on its own to catch up (0: two minutes); CatchUps counts such runs in
	// a row (carried over continue-as-new), at most maxExportCatchUps.
	CatchUpDelay time.Duration
	CatchUps     int `json:",omitempty"`
	// CatchUpAt is when the pending catch-up run is due (zero: none).
	CatchUpAt time.Time `json:",omitempty"`
}

// exportCatchUpVersion marks executions that run again by themselves after an incomplete
// export; older ones waited for the next request.
const exportCatchUpVersion = "backup-export-catch-up"

// maxExportCatchUps bounds the catch-up runs in a row: an export that never completes (a
// permission missing) must not keep the workflow alive for ever; the next push or sweep
// resumes it.
const maxExportCatchUps = 30

// ExportCatchUpEvent is the Event of the request a workflow sends itself to catch up.
const ExportCatchUpEvent = "export-catch-up"

// PickHostInput asks which worker should run a backup; Exclude is a host that did not answer.
type PickHostInput struct {
	Target  BackupTarget
	Exclude string
}

// Activities of a backup run. A run stages on the mirror's host (fetch, upload the new packs,
// store the manifest draft), then commits on the shared queue (the manifest is written last);
// steps that add objects to a snapshot (exports) go between the two. RunBackup is both in one,
// kept for executions that scheduled it before the split.
const (
	PickBackupHostActivity       = "PickBackupHost"
	StageBackupActivity          = "StageBackup"
	CommitSnapshotActivity       = "CommitSnapshot"
	RunBackupActivity            = "RunBackup"
	RecordBackupOutcomeActivity  = "RecordBackupOutcome"
	ExportRepositoryDataActivity = "ExportRepositoryData"
)

// backupExportsChange adds the export step (pull requests, metadata) between staging and
// commit; executions started before it replay without.
const backupExportsChange = "backup-exports"

// ExportInput asks for the export step of a run: Staged is StageBackup's result (a draft to
// add the exports to, or none when the code did not change), PullRequests the PRs webhooks
// named.
type ExportInput struct {
	Target       BackupTarget
	Trigger      domain.TriggerKind
	DeliveryID   string
	Staged       RunBackupResult
	PullRequests []int64 `json:",omitempty"`
}

// maxNamedPullRequests bounds the PR ids one export request carries; more are found by the
// updated_on listing anyway.
const maxNamedPullRequests = 200

// namedPullRequests are the distinct PR ids of a batch's webhook requests, in arrival order.
func namedPullRequests(batch []BackupRequest) []int64 {
	var out []int64
	seen := map[int64]bool{}
	for _, r := range batch {
		if r.PullRequestID > 0 && !seen[r.PullRequestID] && len(out) < maxNamedPullRequests {
			seen[r.PullRequestID] = true
			out = append(out, r.PullRequestID)
		}
	}
	return out
}

// stageCommitChange guards the split of RunBackup into StageBackup and CommitSnapshot, so that
// executions started before it replay their single RunBackup.
const stageCommitChange = "backup-stage-commit"

// RunBackupInput is one backup run (or its staging) on the host worker.
type RunBackupInput struct {
	Target     BackupTarget
	Trigger    domain.TriggerKind
	DeliveryID string
}

// CommitSnapshotInput commits what StageBackup staged; Staged is its result.
type CommitSnapshotInput struct {
	Target BackupTarget
	Staged RunBackupResult
}

// RunBackupResult summarises a run. Unchanged runs wrote nothing but the check record.
type RunBackupResult struct {
	// Changed says a new snapshot was committed.
	Changed bool
	// DraftKey is set by StageBackup when a snapshot (SnapshotID) is staged and awaits
	// CommitSnapshot: the storage key of its manifest draft, which holds the ref map and pack
	// list (too big for workflow history).
	DraftKey      string
	SnapshotID    string
	ManifestKey   string
	ParentID      string
	Refs          int
	Packs         int
	PacksUploaded int
	BytesUploaded int64
	TotalBytes    int64
	StartedAt     time.Time
	FinishedAt    time.Time
	Host          string
	// Skipped says why nothing was attempted (repository excluded or deleted upstream).
	Skipped string
	// Exports summarises the export step (nil when it did not run); ExportError is set when
	// the step failed and the snapshot was committed without it.
	Exports     *ExportSummary `json:",omitempty"`
	ExportError string         `json:",omitempty"`
}

// ExportSummary is what the export step did, for the outcome record and the status.
type ExportSummary struct {
	PullRequests int
	Complete     bool
	Reason       string `json:",omitempty"`
	RESTCalls    int64
}

// BackupOutcomeInput records a run in Postgres.
type BackupOutcomeInput struct {
	Target  BackupTarget
	Trigger domain.TriggerKind
	Result  RunBackupResult
	// Failure is set when the run failed; ErrorType is the non-retryable type if any, and
	// Reason that error's own message (what the repository shows, without Temporal's framing).
	Failure   string
	ErrorType string
	Reason    string `json:",omitempty"`
	// PushTimes are the receipt times of the webhook deliveries this run answers (oldest first,
	// at most maxPushTimes): what push-to-snapshot latency is measured from.
	PushTimes []time.Time `json:",omitempty"`
}

// maxPushTimes bounds the push times one outcome carries; a longer burst keeps its oldest.
const maxPushTimes = 100

// pushTimes are the webhook receipt times of a batch, oldest first.
func pushTimes(batch []BackupRequest) []time.Time {
	var out []time.Time
	for _, r := range batch {
		if r.Trigger == domain.TriggerWebhook && !r.RequestedAt.IsZero() {
			out = append(out, r.RequestedAt)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	if len(out) > maxPushTimes {
		out = out[:maxPushTimes]
	}
	return out
}

// BackupStatus is what the "status" query returns.
type BackupStatus struct {
	State          string    `json:"state"` // waiting, running, idle
	Step           string    `json:"step,omitempty"`
	Pending        int       `json:"pending"`
	RunsCompleted  int       `json:"runs_completed"`
	LastSnapshotID string    `json:"last_snapshot_id,omitempty"`
	LastResult     string    `json:"last_result,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	LastRunAt      time.Time `json:"last_run_at,omitempty"`
	// RefusedRequests counts requests for another repository row that this workflow refused.
	RefusedRequests int `json:"refused_requests,omitempty"`
}

// maxRunsPerExecution bounds the history; continue-as-new carries pending requests over.
const maxRunsPerExecution = 100

// BackupRepository runs backups of one repository, one at a time, for as long as requests come.
func BackupRepository(ctx workflow.Context, in BackupInput) error {
	if in.QuietPeriod <= 0 {
		in.QuietPeriod = 5 * time.Second
	}
	if in.MaxWait <= 0 {
		in.MaxWait = time.Minute
	}
	if in.IdleTimeout <= 0 {
		in.IdleTimeout = 10 * time.Minute
	}
	if in.CatchUpDelay <= 0 {
		in.CatchUpDelay = 2 * time.Minute
	}
	checkTarget := workflow.GetVersion(ctx, backupTargetCheckVersion, workflow.DefaultVersion, 1) >= 1
	status := &BackupStatus{State: "waiting", RefusedRequests: in.RefusedRequests}
	if err := workflow.SetQueryHandler(ctx, BackupStatusQuery, func() (BackupStatus, error) {
		s := *status
		s.Pending = len(in.Pending)
		return s, nil
	}); err != nil {
		return err
	}
	requests := workflow.GetSignalChannel(ctx, BackupRequestSignal)
	// receive reports whether a request arrived, refused ones included (they end a wait like
	// any signal but add no work).
	receive := func(wait time.Duration) bool {
		got := false
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(requests, func(c workflow.ReceiveChannel, _ bool) {
			var r BackupRequest
			c.Receive(ctx, &r)
			got = true
			if checkTarget && !r.Target.sameRow(in.Target) {
				refuseRequest(ctx, &in, status, r)
				return
			}
			in.Pending = append(in.Pending, r)
		})
		if wait > 0 {
			timerCtx, cancel := workflow.WithCancel(ctx)
			defer cancel()
			sel.AddFuture(workflow.NewTimer(timerCtx, wait), func(workflow.Future) {})
		} else {
			sel.AddDefault(func() {})
		}
		sel.Select(ctx)
		return got
	}

	for runs := 0; ; runs++ {
		// Drain whatever is already buffered, then wait for work or end when idle.
		for receive(0) {
		}
		for len(in.Pending) == 0 {
			status.State = "idle"
			wait := in.IdleTimeout
			if !in.CatchUpAt.IsZero() {
				wait = max(in.CatchUpAt.Sub(workflow.Now(ctx)), 0)
			}
			if receive(wait) {
				continue
			}
			if !in.CatchUpAt.IsZero() {
				in.CatchUpAt = time.Time{}
				in.Pending = append(in.Pending, BackupRequest{Target: in.Target, Trigger: domain.TriggerSchedule, Event: ExportCatchUpEvent, RequestedAt: workflow.Now(ctx)})
				continue
			}
			// A request delivered in the same workflow task as the idle timer (the worker was
			// down or busy while both happened) must not end with the execution.
			if workflow.GetVersion(ctx, backupIdleDrainVersion, workflow.DefaultVersion, 1) >= 1 && receive(0) {
				continue
			}
			return endIdle(in)
		}
		// Coalesce a burst: wait until quiet, but not past MaxWait from the first request.
		status.State = "waiting"
		deadline := workflow.Now(ctx).Add(in.MaxWait)
		for {
			wait := in.QuietPeriod
			if left := deadline.Sub(workflow.Now(ctx)); left < wait {
				wait = left
			}
			if wait <= 0 || !receive(wait) {
				break
			}
		}
		batch := in.Pending
		in.Pending = nil
		status.State = "running"
		behind := runBackup(ctx, &in, batch, status)
		if workflow.GetVersion(ctx, exportCatchUpVersion, workflow.DefaultVersion, 1) == 1 {
			in.CatchUpAt = time.Time{}
			if behind && in.CatchUps < maxExportCatchUps {
				in.CatchUps++
				in.CatchUpAt = workflow.Now(ctx).Add(in.CatchUpDelay)
			} else if !behind {
				in.CatchUps = 0
			}
		}
		status.RunsCompleted++
		status.State = "idle"
		status.Step = ""

		if runs+1 >= maxRunsPerExecution || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			for receive(0) {
			}
			return workflow.NewContinueAsNewError(ctx, BackupRepositoryWorkflowName, in)
		}
	}
}

// refuseRequest drops a request meant for another repository row: running it would back up this
// workflow's row for someone who asked about another one (possibly another tenant's). The
// details go to the worker log only: the status query is answered to this row's tenant, who must
// not learn another tenant's IDs.
func refuseRequest(ctx workflow.Context, in *BackupInput, status *BackupStatus, r BackupRequest) {
	workflow.GetLogger(ctx).Error("refused a backup request for another repository row",
		"workflow_target", in.Target, "request_target", r.Target, "trigger", r.Trigger, "delivery", r.DeliveryID)
	in.RefusedRequests++
	status.RefusedRequests = in.RefusedRequests
	status.LastResult = "refused"
	status.LastError = "refused a backup request meant for another repository (workflow ID mismatch; see the worker log)"
}

// endIdle ends the execution after a quiet spell; one that refused requests fails, so the
// mismatch shows as a failed workflow in Temporal rather than only in a log line.
func endIdle(in BackupInput) error {
	if in.RefusedRequests == 0 {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("refused %d backup request(s) meant for another repository row", in.RefusedRequests),
		domain.ErrTypeBackupTargetMismatch, nil)
}

// coalesce picks the trigger a batch of requests is recorded under: a webhook (with its
// delivery ID) beats a manual request, which beats a schedule, which beats the initial one.
func coalesce(batch []BackupRequest) (trigger domain.TriggerKind, deliveryID string) {
	rank := map[domain.TriggerKind]int{domain.TriggerInitial: 1, domain.TriggerSchedule: 2, domain.TriggerManual: 3, domain.TriggerWebhook: 4}
	best := BackupRequest{Trigger: domain.TriggerManual}
	bestRank := 0
	for _, r := range batch {
		if rank[r.Trigger] >= bestRank {
			best, bestRank = r, rank[r.Trigger]
		}
	}
	return best.Trigger, best.DeliveryID
}

// runBackup picks the host with the mirror, stages the backup there, commits it and records the
// outcome. Failures are recorded, not returned: the workflow lives on for the next request. It
// reports whether the export step left the export behind (incomplete), so a catch-up run is due.
func runBackup(ctx workflow.Context, in *BackupInput, batch []BackupRequest, status *BackupStatus) (exportBehind bool) {
	trigger, delivery := coalesce(batch)
	db := DatabaseActivity(ctx)
	split := workflow.GetVersion(ctx, stageCommitChange, workflow.DefaultVersion, 1) == 1
	var res RunBackupResult
	var runErr error
	exclude := ""
	for attempt := 0; attempt < 3; attempt++ {
		host := in.LastHost
		if host == "" {
			status.Step = "choosing worker"
			if runErr = workflow.ExecuteActivity(db, PickBackupHostActivity, PickHostInput{Target: in.Target, Exclude: exclude}).Get(ctx, &host); runErr != nil {
				break
			}
		}
		status.Step = "backing up"
		hostCtx := BackupHostActivity(ctx, host, in.HostTimeout, in.HeartbeatTimeout)
		input := RunBackupInput{Target: in.Target, Trigger: trigger, DeliveryID: delivery}
		if split {
			runErr = workflow.ExecuteActivity(hostCtx, StageBackupActivity, input).Get(ctx, &res)
		} else {
			runErr = workflow.ExecuteActivity(hostCtx, RunBackupActivity, input).Get(ctx, &res)
		}
		var timeout *temporal.TimeoutError
		if errors.As(runErr, &timeout) && timeout.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
			// The mirror's worker is gone: another worker takes over and hydrates the mirror.
			workflow.GetLogger(ctx).Warn("mirror host did not pick up the backup; choosing another worker", "host", host)
			in.LastHost, exclude = "", host
			continue
		}
		if runErr == nil {
			in.LastHost = res.Host
		}
		break
	}
	if split && runErr == nil && res.Skipped == "" && workflow.GetVersion(ctx, backupExportsChange, workflow.DefaultVersion, 1) == 1 {
		// The export never fails the backup: without it, the staged code is committed as is.
		status.Step = "exporting pull requests and metadata"
		var exported RunBackupResult
		err := workflow.ExecuteActivity(ExportActivity(ctx), ExportRepositoryDataActivity, ExportInput{
			Target: in.Target, Trigger: trigger, DeliveryID: delivery, Staged: res, PullRequests: namedPullRequests(batch),
		}).Get(ctx, &exported)
		if err != nil {
			workflow.GetLogger(ctx).Error("export step failed; committing the code without exports", "error", err)
			res.ExportError = err.Error()
		} else {
			res = exported
		}
	}
	if split && runErr == nil && res.DraftKey != "" {
		status.Step = "committing"
		runErr = workflow.ExecuteActivity(StorageActivity(ctx), CommitSnapshotActivity,
			CommitSnapshotInput{Target: in.Target, Staged: res}).Get(ctx, &res)
	}
	outcome := BackupOutcomeInput{Target: in.Target, Trigger: trigger, Result: res, PushTimes: pushTimes(batch)}
	status.LastRunAt = workflow.Now(ctx)
	if runErr != nil {
		outcome.Failure = runErr.Error()
		var appErr *temporal.ApplicationError
		if errors.As(runErr, &appErr) {
			outcome.ErrorType, outcome.Reason = appErr.Type(), appErr.Message()
		}
		status.LastResult, status.LastError = "failed", runErr.Error()
	} else if res.Changed {
		status.LastResult, status.LastError, status.LastSnapshotID = "snapshot", "", res.SnapshotID
	} else {
		status.LastResult, status.LastError = "unchanged", ""
	}
	status.Step = "recording"
	if err := workflow.ExecuteActivity(db, RecordBackupOutcomeActivity, outcome).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("record backup outcome", "error", err)
	}
	return runErr == nil && res.Exports != nil && !res.Exports.Complete
}
