package workflows

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

type backupMocks struct {
	runs     atomic.Int32
	triggers []domain.TriggerKind
	commits  []string
	outcomes []BackupOutcomeInput
	// exports are the export steps run; export, when set, replaces the pass-through step.
	exports []ExportInput
	export  func(ExportInput) (RunBackupResult, error)
}

func newBackupEnv(t *testing.T, m *backupMocks) *testsuite.TestWorkflowEnvironment {
	return newBackupEnvWithStage(t, m, func(_ context.Context, in RunBackupInput) (RunBackupResult, error) {
		n := m.runs.Add(1)
		m.triggers = append(m.triggers, in.Trigger)
		id := "s" + string(rune('0'+n%10))
		return RunBackupResult{DraftKey: "staging/" + id + ".json", SnapshotID: id, Host: "host-a"}, nil
	})
}

// newBackupEnvWithStage registers stage as the StageBackup activity, and activities that record
// commits and outcomes in m.
func newBackupEnvWithStage(t *testing.T, m *backupMocks, stage func(context.Context, RunBackupInput) (RunBackupResult, error)) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	// The SDK's 1 s deadlock detector measures wall-clock time; under -race on a loaded 2-core
	// machine a workflow task can take longer without any deadlock.
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: 30 * time.Second})
	env.RegisterWorkflowWithOptions(BackupRepository, workflow.RegisterOptions{Name: BackupRepositoryWorkflowName})
	env.RegisterActivityWithOptions(func(context.Context, PickHostInput) (string, error) { return "host-a", nil },
		activity.RegisterOptions{Name: PickBackupHostActivity})
	env.RegisterActivityWithOptions(stage, activity.RegisterOptions{Name: StageBackupActivity})
	env.RegisterActivityWithOptions(func(_ context.Context, in CommitSnapshotInput) (RunBackupResult, error) {
		m.commits = append(m.commits, in.Staged.SnapshotID)
		res := in.Staged
		res.Changed, res.DraftKey = true, ""
		return res, nil
	}, activity.RegisterOptions{Name: CommitSnapshotActivity})
	env.RegisterActivityWithOptions(func(_ context.Context, in BackupOutcomeInput) error {
		m.outcomes = append(m.outcomes, in)
		return nil
	}, activity.RegisterOptions{Name: RecordBackupOutcomeActivity})
	env.RegisterActivityWithOptions(func(_ context.Context, in ExportInput) (RunBackupResult, error) {
		m.exports = append(m.exports, in)
		if m.export != nil {
			return m.export(in)
		}
		return in.Staged, nil
	}, activity.RegisterOptions{Name: ExportRepositoryDataActivity})
	return env
}

func TestBackupBurstCoalescesIntoOneRun(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnv(t, m)
	// A burst within the quiet period: one run, recorded under the strongest trigger.
	for i, trig := range []domain.TriggerKind{domain.TriggerSchedule, domain.TriggerWebhook, domain.TriggerManual} {
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: trig, DeliveryID: "d"})
		}, time.Duration(i+1)*time.Second)
	}
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: 5 * time.Second, MaxWait: time.Minute, IdleTimeout: 10 * time.Minute})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if n := m.runs.Load(); n != 1 {
		t.Fatalf("runs = %d, want 1", n)
	}
	if m.triggers[0] != domain.TriggerWebhook || len(m.outcomes) != 1 || m.outcomes[0].Trigger != domain.TriggerWebhook {
		t.Fatalf("triggers = %v, outcomes = %+v", m.triggers, m.outcomes)
	}
	// The staged snapshot is committed, and the outcome records the committed one.
	if len(m.commits) != 1 || m.commits[0] != "s1" || !m.outcomes[0].Result.Changed || m.outcomes[0].Result.SnapshotID != "s1" {
		t.Fatalf("commits = %v, outcome = %+v", m.commits, m.outcomes[0])
	}
}

// A run that found nothing to stage commits nothing.
func TestBackupUnchangedRunCommitsNothing(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnvWithStage(t, m, func(context.Context, RunBackupInput) (RunBackupResult, error) {
		m.runs.Add(1)
		return RunBackupResult{SnapshotID: "s0", Host: "host-a"}, nil
	})
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, 0)
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, MaxWait: 2 * time.Second, IdleTimeout: time.Minute})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(m.commits) != 0 || len(m.outcomes) != 1 || m.outcomes[0].Result.Changed || m.outcomes[0].Failure != "" {
		t.Fatalf("commits = %v, outcomes = %+v; want no commit and one unchanged outcome", m.commits, m.outcomes)
	}
}

func TestBackupRequestDuringARunFollowsIt(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnv(t, m)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, 0)
	// Arrives after the first run started (quiet period 1 s): becomes exactly one follow-up run.
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerWebhook})
		env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerWebhook})
	}, 3*time.Second)
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, MaxWait: 2 * time.Second, IdleTimeout: time.Minute})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if n := m.runs.Load(); n != 2 {
		t.Fatalf("runs = %d, want 2 (one run, one follow-up for the two requests)", n)
	}
}

func TestBackupContinuesAsNewWithPendingRequests(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnv(t, m)
	// One request per minute: each becomes its own run until the run limit.
	for i := 0; i < maxRunsPerExecution+5; i++ {
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerSchedule})
		}, time.Duration(i)*time.Minute)
	}
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, MaxWait: 2 * time.Second, IdleTimeout: time.Hour})
	err := env.GetWorkflowError()
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		t.Fatalf("workflow ended with %v, want continue-as-new", err)
	}
	if n := m.runs.Load(); n != maxRunsPerExecution {
		t.Fatalf("runs before continue-as-new = %d, want %d", n, maxRunsPerExecution)
	}
}

func TestBackupFailureIsRecordedAndTheWorkflowLivesOn(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnvWithStage(t, m, func(context.Context, RunBackupInput) (RunBackupResult, error) {
		m.runs.Add(1)
		return RunBackupResult{}, errors.New("upstream exploded")
	})
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, 0)
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, MaxWait: 2 * time.Second, IdleTimeout: time.Minute})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("a failed backup ended the workflow: %v", err)
	}
	if len(m.outcomes) != 1 || m.outcomes[0].Failure == "" || len(m.commits) != 0 {
		t.Fatalf("outcomes = %+v, commits = %v; want the failure recorded and nothing committed", m.outcomes, m.commits)
	}
	if m.runs.Load() < 2 {
		t.Fatalf("StageBackup ran %d times, want Temporal's retries", m.runs.Load())
	}
}

// TestBackupRefusesRequestsForAnotherTarget: a request addressed to another repository row (or
// to none) is never run as this row; the refusal shows in the status query and the execution
// fails with a non-retryable error once it ends.
func TestBackupRefusesRequestsForAnotherTarget(t *testing.T) {
	m := &backupMocks{}
	env := newBackupEnv(t, m)
	own := BackupTarget{TenantID: "tenant-a", InstallationID: "inst-a", RepositoryID: "repo-a", ProviderUUID: "{ABC}"}
	other := own
	other.TenantID, other.InstallationID, other.RepositoryID = "tenant-b", "inst-b", "repo-b"
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(BackupRequestSignal, BackupRequest{Target: other, Trigger: domain.TriggerManual})
		env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual})
	}, time.Second)
	var status BackupStatus
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(BackupStatusQuery)
		if err != nil {
			t.Errorf("query: %v", err)
			return
		}
		if err := v.Get(&status); err != nil {
			t.Errorf("decode status: %v", err)
		}
		// The provider UUID's spelling does not matter; the row does.
		same := own
		same.ProviderUUID = "abc"
		env.SignalWorkflow(BackupRequestSignal, BackupRequest{Target: same, Trigger: domain.TriggerWebhook})
	}, 10*time.Second)
	env.ExecuteWorkflow(BackupRepository, BackupInput{Target: own, QuietPeriod: time.Second, MaxWait: 2 * time.Second, IdleTimeout: time.Minute})

	if status.RefusedRequests != 2 || status.LastResult != "refused" || !strings.Contains(status.LastError, "another repository") {
		t.Fatalf("status after the refused requests = %+v", status)
	}
	if strings.Contains(status.LastError, "tenant-b") {
		t.Fatalf("the status names the other tenant's IDs: %q", status.LastError)
	}
	if n := m.runs.Load(); n != 1 || m.triggers[0] != domain.TriggerWebhook {
		t.Fatalf("runs = %d (triggers %v), want only the own-target webhook request", n, m.triggers)
	}
	var appErr *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &appErr) || appErr.Type() != domain.ErrTypeBackupTargetMismatch || !appErr.NonRetryable() {
		t.Fatalf("workflow ended with %v, want a non-retryable %s", err, domain.ErrTypeBackupTargetMismatch)
	}
}

func TestBackupTargetValidate(t *testing.T) {
	ok := BackupTarget{TenantID: "t", InstallationID: "i", RepositoryID: "r", ProviderUUID: "{u}"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []BackupTarget{
		{InstallationID: "i", RepositoryID: "r", ProviderUUID: "u"},
		{TenantID: "t", RepositoryID: "r", ProviderUUID: "u"},
		{TenantID: "t", InstallationID: "i", ProviderUUID: "u"},
		{TenantID: "t", InstallationID: "i", RepositoryID: "r", ProviderUUID: "{}"},
		{TenantID: "t", InstallationID: "i/x", RepositoryID: "r", ProviderUUID: "u"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if a, b := BackupWorkflowID(ok), BackupWorkflowID(BackupTarget{TenantID: "t2", InstallationID: "i", RepositoryID: "r", ProviderUUID: "{u}"}); a == b {
		t.Fatalf("two tenants share workflow ID %s", a)
	}
}

// TestExportStepRunsBetweenStageAndCommit: the export step gets the staged draft and the PRs
// webhooks named; a PR-only change (nothing staged, the export stages a draft) is committed;
// a failing export step still commits the code.
func TestExportStepRunsBetweenStageAndCommit(t *testing.T) {
	t.Run("named pull requests", func(t *testing.T) {
		m := &backupMocks{}
		env := newBackupEnv(t, m)
		for i, id := range []int64{7, 9, 7} {
			env.RegisterDelayedCallback(func() {
				env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerWebhook, Event: "pullrequest:updated", PullRequestID: id})
			}, time.Duration(i+1)*time.Second)
		}
		env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: 5 * time.Second, IdleTimeout: time.Minute})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if len(m.exports) != 1 || len(m.exports[0].PullRequests) != 2 || m.exports[0].PullRequests[0] != 7 || m.exports[0].PullRequests[1] != 9 {
			t.Fatalf("exports %+v", m.exports)
		}
		if m.exports[0].Staged.DraftKey == "" || len(m.commits) != 1 {
			t.Fatalf("the export step must see the staged draft before the commit: %+v, commits %v", m.exports[0], m.commits)
		}
	})
	t.Run("pull request only change", func(t *testing.T) {
		m := &backupMocks{export: func(in ExportInput) (RunBackupResult, error) {
			res := in.Staged
			res.DraftKey, res.SnapshotID = "staging/pr.json", "pr-only"
			res.Exports = &ExportSummary{PullRequests: 1, Complete: true}
			return res, nil
		}}
		env := newBackupEnvWithStage(t, m, func(context.Context, RunBackupInput) (RunBackupResult, error) {
			return RunBackupResult{SnapshotID: "same", Host: "host-a"}, nil // code unchanged
		})
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, time.Second)
		env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, IdleTimeout: time.Minute})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if len(m.commits) != 1 || m.commits[0] != "pr-only" || !m.outcomes[0].Result.Changed {
			t.Fatalf("commits %v, outcome %+v", m.commits, m.outcomes)
		}
	})
	t.Run("export failure still commits", func(t *testing.T) {
		m := &backupMocks{export: func(ExportInput) (RunBackupResult, error) {
			return RunBackupResult{}, temporal.NewNonRetryableApplicationError("storage down", domain.ErrTypeInvalidInput, nil)
		}}
		env := newBackupEnv(t, m)
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, time.Second)
		env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, IdleTimeout: time.Minute})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if len(m.commits) != 1 || m.outcomes[0].Failure != "" || !strings.Contains(m.outcomes[0].Result.ExportError, "storage down") {
			t.Fatalf("commits %v, outcome %+v", m.commits, m.outcomes)
		}
	})
}

// TestIncompleteExportCatchesUp: after a run whose export was cut short (rate limits) the
// workflow runs again by itself after CatchUpDelay, until the export completes.
func TestIncompleteExportCatchesUp(t *testing.T) {
	var calls int
	m := &backupMocks{export: func(in ExportInput) (RunBackupResult, error) {
		calls++
		res := in.Staged
		res.Exports = &ExportSummary{Complete: calls >= 3, Reason: "rate limited"}
		return res, nil
	}}
	env := newBackupEnv(t, m)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(BackupRequestSignal, BackupRequest{Trigger: domain.TriggerManual}) }, time.Second)
	env.ExecuteWorkflow(BackupRepository, BackupInput{QuietPeriod: time.Second, IdleTimeout: time.Minute, CatchUpDelay: 5 * time.Minute})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if calls != 3 || len(m.outcomes) != 3 {
		t.Fatalf("export steps %d, outcomes %d: want 3 (one requested, two catch-ups)", calls, len(m.outcomes))
	}
	for _, o := range m.outcomes[1:] {
		if o.Trigger != domain.TriggerSchedule {
			t.Fatalf("catch-up run recorded as %s", o.Trigger)
		}
	}
	if n := len(m.exports); n != 3 || m.exports[2].Trigger != domain.TriggerSchedule {
		t.Fatalf("exports %+v", m.exports)
	}
}
