package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/gitsec/gitsec/internal/domain"
)

// restoreEnv registers fake restore steps; push and prs decide what those steps answer.
func restoreEnv(t *testing.T, push RestorePushResult, prCalls *int, prErr error) (*testsuite.TestWorkflowEnvironment, *RestoreOutcome) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	recorded := &RestoreOutcome{}
	reg := func(name string, fn any) { env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name}) }
	reg(CheckRestoreGrantActivity, func(context.Context, RestoreInput) error { return nil })
	reg(PrepareRestoreTargetActivity, func(context.Context, RestoreInput) (RestoreTargetInfo, error) {
		return RestoreTargetInfo{UUID: "u", Created: true}, nil
	})
	reg(PushRestoreActivity, func(context.Context, RestoreInput) (RestorePushResult, error) { return push, nil })
	reg(ApplyRestoreMetadataActivity, func(context.Context, RestoreStepInput) (RestoreMetadataResult, error) {
		return RestoreMetadataResult{Applied: []string{"main_branch"}}, nil
	})
	reg(RecreatePullRequestsActivity, func(context.Context, RestoreStepInput) (RestorePullRequestsResult, error) {
		*prCalls++
		return RestorePullRequestsResult{Restored: 1}, prErr
	})
	reg(VerifyRestoreActivity, func(_ context.Context, in RestoreStepInput) ([]string, error) {
		var bad []string
		for r := range in.Push.Rejected {
			bad = append(bad, r)
		}
		return bad, nil
	})
	reg(FinishRestoreActivity, func(_ context.Context, out RestoreOutcome) error { *recorded = out; return nil })
	return env, recorded
}

var restoreIn = RestoreInput{TenantID: "t", RestoreID: "r", Target: RestoreTarget{Mode: domain.RestoreTargetNew, Workspace: "acme", Slug: "x"},
	Options: RestoreOptions{RestoreOpenPullRequests: true}}

func TestRestoreRecordsOKPartialAndRefused(t *testing.T) {
	calls := 0
	env, rec := restoreEnv(t, RestorePushResult{Wanted: []string{"refs/heads/main"}, Pushed: []string{"refs/heads/main"}}, &calls, nil)
	env.ExecuteWorkflow(Restore, restoreIn)
	if err := env.GetWorkflowError(); err != nil || rec.Status != domain.RestoreOK || rec.Refs["refs/heads/main"] != "pushed" || calls != 1 {
		t.Fatalf("ok restore: %v %+v (pr calls %d)", err, rec, calls)
	}

	env, rec = restoreEnv(t, RestorePushResult{Wanted: []string{"refs/heads/main", "refs/heads/locked"}, Pushed: []string{"refs/heads/main"},
		Rejected: map[string]string{"refs/heads/locked": "hook declined"}}, &calls, nil)
	env.ExecuteWorkflow(Restore, restoreIn)
	if rec.Status != domain.RestorePartial || !strings.HasPrefix(rec.Refs["refs/heads/locked"], "rejected") || !strings.Contains(rec.Message, "refs/heads/locked") {
		t.Fatalf("partial restore: %+v", rec)
	}

	env, rec = restoreEnv(t, RestorePushResult{Wanted: []string{"refs/heads/main"}, Refused: true,
		Conflicts: []RefConflict{{Ref: "refs/heads/main", Target: "a", Snapshot: "b"}}}, &calls, nil)
	env.ExecuteWorkflow(Restore, restoreIn)
	if rec.Status != domain.RestoreFailed || rec.FailedStep != domain.RestoreStepPush || !strings.Contains(rec.Message, "refs/heads/main") {
		t.Fatalf("refused restore: %+v", rec)
	}
}

// Opening pull requests is not idempotent: a failed attempt is recorded, never repeated.
func TestRestorePullRequestStepRunsOnce(t *testing.T) {
	calls := 0
	env, rec := restoreEnv(t, RestorePushResult{Wanted: []string{"refs/heads/main"}, Pushed: []string{"refs/heads/main"}}, &calls, errors.New("connection reset"))
	env.ExecuteWorkflow(Restore, restoreIn)
	if calls != 1 || rec.Status != domain.RestoreFailed || rec.FailedStep != domain.RestoreStepPullRequests {
		t.Fatalf("pull request step ran %d times; outcome %+v", calls, rec)
	}
}
