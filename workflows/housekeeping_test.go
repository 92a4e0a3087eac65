package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
)

func TestHousekeepingPassesTheDedupCutoffAndReturnsCounts(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	env.SetStartTime(start)
	var got PurgeExpiredInput
	env.RegisterActivityWithOptions(func(_ context.Context, in PurgeExpiredInput) (HousekeepingResult, error) {
		got = in
		return HousekeepingResult{OAuthStates: 3, WebhookDeliveries: 7}, nil
	}, activity.RegisterOptions{Name: PurgeExpiredActivityName})

	env.ExecuteWorkflow(Housekeeping, HousekeepingInput{WebhookDedupWindow: 48 * time.Hour})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res HousekeepingResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.OAuthStates != 3 || res.WebhookDeliveries != 7 {
		t.Fatalf("result = %+v", res)
	}
	if !got.Now.Equal(start) || !got.DedupBefore.Equal(start.Add(-48*time.Hour)) {
		t.Fatalf("activity input = %+v, want now=%v dedupBefore=%v", got, start, start.Add(-48*time.Hour))
	}
}

func TestHousekeepingRetriesAFailingPurge(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	calls := 0
	env.RegisterActivityWithOptions(func(_ context.Context, in PurgeExpiredInput) (HousekeepingResult, error) {
		calls++
		if calls < 3 {
			return HousekeepingResult{}, errors.New("postgres restarting")
		}
		return HousekeepingResult{OAuthStates: 1}, nil
	}, activity.RegisterOptions{Name: PurgeExpiredActivityName})
	env.ExecuteWorkflow(Housekeeping, HousekeepingInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Fatalf("activity ran %d times, want 3 (two failures retried)", calls)
	}
}
