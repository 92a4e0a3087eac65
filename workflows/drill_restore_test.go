package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

func drillEnv(t *testing.T, run func(context.Context, DrillInput) (DrillReport, error)) (*testsuite.TestWorkflowEnvironment, *FinishDrillInput) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	finished := &FinishDrillInput{}
	env.RegisterActivityWithOptions(func(context.Context, DrillInput) error { return nil }, activity.RegisterOptions{Name: StartDrillActivity})
	env.RegisterActivityWithOptions(run, activity.RegisterOptions{Name: RunDrillActivity})
	env.RegisterActivityWithOptions(func(_ context.Context, in FinishDrillInput) error { *finished = in; return nil },
		activity.RegisterOptions{Name: FinishDrillActivity})
	return env, finished
}

var drillIn = DrillInput{Target: BackupTarget{TenantID: "t", InstallationID: "i", RepositoryID: "r", ProviderUUID: "{u}"},
	DrillID: "d", SnapshotID: "20261202T000000.000Z-00000000", Trigger: domain.TriggerManual}

// A failed check is the drill's result: recorded as failed with the step's reason, never retried.
func TestDrillRecordsAFailedCheckWithoutRetrying(t *testing.T) {
	calls := 0
	env, finished := drillEnv(t, func(context.Context, DrillInput) (DrillReport, error) {
		calls++
		return DrillReport{Reason: "fsck: broken link", Steps: []DrillStep{{Name: domain.DrillStepFsck, Status: domain.DrillStepFailed}}}, nil
	})
	env.ExecuteWorkflow(DrillRestore, drillIn)
	var res DrillResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || res.Status != domain.DrillFailed || finished.Status != domain.DrillFailed || finished.Reason != "fsck: broken link" || len(finished.Steps) != 1 {
		t.Fatalf("calls %d, result %+v, finished %+v", calls, res, finished)
	}
}

// Storage that stays unreachable is retried, then the drill fails saying it could not run.
func TestDrillThatCannotRunFailsAfterRetries(t *testing.T) {
	calls := 0
	env, finished := drillEnv(t, func(context.Context, DrillInput) (DrillReport, error) {
		calls++
		return DrillReport{}, errors.New("storage unreachable")
	})
	env.ExecuteWorkflow(DrillRestore, drillIn)
	var res DrillResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if calls != 3 || res.Status != domain.DrillFailed || !strings.HasPrefix(finished.Reason, "the drill could not run: ") ||
		!strings.Contains(finished.Reason, "storage unreachable") {
		t.Fatalf("calls %d, result %+v, finished %+v", calls, res, finished)
	}
}

func TestDrillInstallationDrillsEveryCandidate(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(DrillRestore, workflow.RegisterOptions{Name: DrillRestoreWorkflowName})
	pages := map[string]DrillCandidatesPage{
		"":  {Repositories: []DrillCandidate{{Target: BackupTarget{RepositoryID: "a"}, FullName: "ws/a"}, {Target: BackupTarget{RepositoryID: "b"}, FullName: "ws/b"}, {Target: BackupTarget{RepositoryID: "c"}, FullName: "ws/c"}}, Next: "c"},
		"c": {Repositories: []DrillCandidate{{Target: BackupTarget{RepositoryID: "d"}, FullName: "ws/d"}}},
	}
	env.RegisterActivityWithOptions(func(_ context.Context, in DrillCandidatesInput) (DrillCandidatesPage, error) {
		return pages[in.After], nil
	},
		activity.RegisterOptions{Name: ListDrillCandidatesActivity})
	env.RegisterActivityWithOptions(func(context.Context, DrillInput) error { return nil }, activity.RegisterOptions{Name: StartDrillActivity})
	env.RegisterActivityWithOptions(func(_ context.Context, in DrillInput) (DrillReport, error) {
		if in.Target.RepositoryID == "b" {
			return DrillReport{Reason: "restore: sha256 mismatch"}, nil
		}
		return DrillReport{Passed: true}, nil
	}, activity.RegisterOptions{Name: RunDrillActivity})
	env.RegisterActivityWithOptions(func(context.Context, FinishDrillInput) error { return nil }, activity.RegisterOptions{Name: FinishDrillActivity})
	env.ExecuteWorkflow(DrillInstallation, DrillInstallationInput{InstallationRef: InstallationRef{TenantID: "t", InstallationID: "i"}})
	var res DrillInstallationResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Drilled != 4 || res.Passed != 3 || res.Failed != 1 || len(res.Failures) != 1 || res.Failures[0] != "ws/b: restore: sha256 mismatch" {
		t.Fatalf("result = %+v", res)
	}
}
