package activities

import (
	"context"
	"fmt"

	"github.com/gitsec/gitsec/workflows"
)

// PurgeExpired removes expired OAuth states and old processed webhook deliveries.
func (a *Housekeeping) PurgeExpired(ctx context.Context, in workflows.PurgeExpiredInput) (workflows.HousekeepingResult, error) {
	r, err := a.Store.PurgeExpired(ctx, in.Now, in.DedupBefore)
	if err != nil {
		return workflows.HousekeepingResult{}, fmt.Errorf("housekeeping: %w", err)
	}
	a.Logger.Info("purged expired rows", "oauth_states", r.OAuthStates, "webhook_deliveries", r.WebhookDeliveries, "tenants", r.TenantsAudited)
	return workflows.HousekeepingResult{OAuthStates: r.OAuthStates, WebhookDeliveries: r.WebhookDeliveries}, nil
}
