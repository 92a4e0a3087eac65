package store

import (
	"context"
	"fmt"
	"time"
)

// PurgeResult counts what one housekeeping pass removed.
type PurgeResult struct {
	OAuthStates       int64
	WebhookDeliveries int64
	// WebhookRejections counts rows of refused deliveries (kept as long as deliveries).
	WebhookRejections int64
	// Sessions and LoginLinks count dashboard sign-ins that ended (expired, revoked or used).
	Sessions       int64
	LoginLinks     int64
	TenantsAudited int64
}

// PurgeExpired deletes OAuth states, dashboard sessions and login links that expired or were
// used (or revoked) before now, and webhook delivery
// rows received before dedupBefore, and records per tenant what it removed in audit_events.
// It runs as one statement so the audit trail and the deletion cannot disagree.
func (s *Store) PurgeExpired(ctx context.Context, now, dedupBefore time.Time) (PurgeResult, error) {
	var r PurgeResult
	err := s.pool.QueryRow(ctx, `
		WITH states AS (
			DELETE FROM oauth_states WHERE expires_at < $1 OR used_at IS NOT NULL
			RETURNING tenant_id
		), sessions_gone AS (
			DELETE FROM sessions WHERE expires_at < $1 OR revoked_at IS NOT NULL
			RETURNING tenant_id
		), links_gone AS (
			DELETE FROM login_links WHERE expires_at < $1 OR used_at IS NOT NULL
			RETURNING tenant_id
		), deliveries AS (
			DELETE FROM webhook_deliveries WHERE received_at < $2 AND processed_at IS NOT NULL
			RETURNING tenant_id
		), rejections AS (
			DELETE FROM webhook_rejections WHERE received_at < $2
			RETURNING tenant_id
		), removed AS (
			SELECT tenant_id, 'oauth_states' AS kind FROM states
			UNION ALL
			SELECT tenant_id, 'webhook_deliveries' FROM deliveries
			UNION ALL
			SELECT tenant_id, 'webhook_rejections' FROM rejections
			UNION ALL
			SELECT tenant_id, 'sessions' FROM sessions_gone
			UNION ALL
			SELECT tenant_id, 'login_links' FROM links_gone
		), audited AS (
			INSERT INTO audit_events (tenant_id, actor, action, details)
			SELECT tenant_id, 'system:housekeeping', 'housekeeping.purged',
			       jsonb_build_object(
			         'oauth_states', count(*) FILTER (WHERE kind = 'oauth_states'),
			         'webhook_deliveries', count(*) FILTER (WHERE kind = 'webhook_deliveries'),
			         'webhook_rejections', count(*) FILTER (WHERE kind = 'webhook_rejections'),
			         'sessions', count(*) FILTER (WHERE kind = 'sessions'),
			         'login_links', count(*) FILTER (WHERE kind = 'login_links'),
			         'dedup_before', $2::timestamptz)
			  FROM removed GROUP BY tenant_id
			RETURNING 1
		)
		SELECT (SELECT count(*) FROM states), (SELECT count(*) FROM deliveries), (SELECT count(*) FROM rejections),
		       (SELECT count(*) FROM sessions_gone), (SELECT count(*) FROM links_gone), (SELECT count(*) FROM audited)`,
		now, dedupBefore,
	).Scan(&r.OAuthStates, &r.WebhookDeliveries, &r.WebhookRejections, &r.Sessions, &r.LoginLinks, &r.TenantsAudited)
	if err != nil {
		return PurgeResult{}, fmt.Errorf("purge expired rows: %w", err)
	}
	return r, nil
}
