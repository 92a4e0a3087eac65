package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// HousekeepingWorkflowName is the registered name; schedules refer to it.
const HousekeepingWorkflowName = "Housekeeping"

// HousekeepingInput configures one pass. The dedup window comes from configuration so the
// schedule's stored arguments say what each run did.
type HousekeepingInput struct {
	WebhookDedupWindow time.Duration
}

// PurgeExpiredInput is the activity's input: the cut-off for webhook deliveries is computed in
// the workflow from its deterministic clock.
type PurgeExpiredInput struct {
	Now         time.Time
	DedupBefore time.Time
}

// HousekeepingResult counts what the pass removed.
type HousekeepingResult struct {
	OAuthStates       int64
	WebhookDeliveries int64
}

// PurgeExpiredActivityName is the name the worker registers the purge activity under.
const PurgeExpiredActivityName = "PurgeExpired"

// Housekeeping deletes expired OAuth states and processed webhook-delivery rows older than the
// de-duplication window, and records what it removed in audit_events (inside the activity).
func Housekeeping(ctx workflow.Context, in HousekeepingInput) (HousekeepingResult, error) {
	now := workflow.Now(ctx)
	window := in.WebhookDedupWindow
	if window <= 0 {
		window = 72 * time.Hour
	}
	var res HousekeepingResult
	err := workflow.ExecuteActivity(DatabaseActivity(ctx), PurgeExpiredActivityName,
		PurgeExpiredInput{Now: now, DedupBefore: now.Add(-window)}).Get(ctx, &res)
	if err != nil {
		return HousekeepingResult{}, err
	}
	workflow.GetLogger(ctx).Info("housekeeping done",
		"oauth_states", res.OAuthStates, "webhook_deliveries", res.WebhookDeliveries)
	return res, nil
}
