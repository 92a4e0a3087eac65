package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// WebhookReceiver is what the receiver needs to accept a delivery for an installation: whose it
// is, whether it is live, and the encrypted secret of the workspace hook that sent it.
type WebhookReceiver struct {
	TenantID           uuid.UUID
	InstallationID     uuid.UUID
	InstallationStatus string
	// HookSecretEncrypted is nil when the installation has no live hook with that UUID.
	HookSecretEncrypted []byte
	// WorkspaceID is the workspace whose hook it is (nil with the secret).
	WorkspaceID *uuid.UUID
}

// NormalizeHookUUID compares hook UUIDs as Bitbucket spells them in different places: with
// braces in the REST API, without them in the X-Hook-UUID header.
func NormalizeHookUUID(u string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(u), "{}"))
}

// WebhookReceiverFor looks an installation up by its ID alone, the one query that does not start
// from a tenant: a webhook delivery carries no bearer token, and the hook's secret (checked by
// the caller) is what proves the sender. ErrNotFound: no such installation.
func (s *Store) WebhookReceiverFor(ctx context.Context, installationID uuid.UUID, hookUUID string) (WebhookReceiver, error) {
	r := WebhookReceiver{InstallationID: installationID}
	err := s.pool.QueryRow(ctx,
		`SELECT i.tenant_id, i.status, w.webhook_secret_encrypted, w.id
		   FROM installations i
		   LEFT JOIN workspaces w ON w.installation_id = i.id AND w.tenant_id = i.tenant_id
		        AND w.webhook_secret_encrypted IS NOT NULL AND $2 <> ''
		        AND lower(btrim(w.webhook_uuid, '{}')) = $2
		  WHERE i.id = $1
		  LIMIT 1`,
		installationID, NormalizeHookUUID(hookUUID),
	).Scan(&r.TenantID, &r.InstallationStatus, &r.HookSecretEncrypted, &r.WorkspaceID)
	if err != nil {
		return WebhookReceiver{}, fmt.Errorf("webhook receiver for installation %s: %w", installationID, notFound(err))
	}
	return r, nil
}

// WebhookDelivery is one received webhook: the de-duplication key and an outbox row that stays
// unprocessed until its work was handed to Temporal.
type WebhookDelivery struct {
	ID             int64
	TenantID       uuid.UUID
	InstallationID uuid.UUID
	DeliveryUUID   uuid.UUID
	EventKey       string
	HookUUID       string
	Attempt        int
	RepositoryUUID string
	// Action is what the receiver parsed from the payload (internal/webhooks.Action as JSON).
	Action json.RawMessage
	// BodySHA256 and BodyGzip keep the raw body for audits and for re-parsing after a fix.
	BodySHA256 []byte
	BodyGzip   []byte
	ReceivedAt time.Time
	// NextAttemptAt is when the re-driver may pick the row up if nobody processed it.
	NextAttemptAt time.Time
	ProcessedAt   *time.Time
	Result        string
	Tries         int
	LastError     string
}

// RecordWebhookDelivery stores a delivery; inserted is false when Bitbucket redelivered one
// already recorded (same X-Request-UUID).
func (s *Store) RecordWebhookDelivery(ctx context.Context, d WebhookDelivery) (inserted bool, err error) {
	if d.ReceivedAt.IsZero() {
		d.ReceivedAt = time.Now()
	}
	if d.NextAttemptAt.IsZero() {
		d.NextAttemptAt = d.ReceivedAt
	}
	if d.Attempt == 0 {
		d.Attempt = 1
	}
	if len(d.Action) == 0 {
		d.Action = json.RawMessage(`{}`)
	}
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO webhook_deliveries (tenant_id, installation_id, delivery_uuid, event_key, hook_uuid, received_at,
		                                 attempt, repository_uuid, action, body_sha256, body_gzip, next_attempt_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (delivery_uuid) DO NOTHING`,
		d.TenantID, d.InstallationID, d.DeliveryUUID, d.EventKey, d.HookUUID, d.ReceivedAt,
		d.Attempt, d.RepositoryUUID, d.Action, d.BodySHA256, d.BodyGzip, d.NextAttemptAt)
	if err != nil {
		return false, fmt.Errorf("record webhook delivery: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// FinishWebhookDelivery marks the delivery processed with what processing did; a second finish
// (the dispatcher and the re-driver both got to it) keeps the first.
func (s *Store) FinishWebhookDelivery(ctx context.Context, tenantID, deliveryUUID uuid.UUID, result string, at time.Time) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE webhook_deliveries SET processed_at = coalesce(processed_at, $3),
		        result = CASE WHEN processed_at IS NULL THEN $4 ELSE result END, tries = tries + 1, last_error = ''
		  WHERE tenant_id = $1 AND delivery_uuid = $2`,
		tenantID, deliveryUUID, at, result)
	if err != nil {
		return fmt.Errorf("mark webhook delivery processed: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("webhook delivery %s: %w", deliveryUUID, ErrNotFound)
	}
	return nil
}

// maxDeliveryErrorLen bounds the stored error of a failed processing attempt.
const maxDeliveryErrorLen = 500

// RetryWebhookDeliveryLater records a failed processing attempt and when to try again.
func (s *Store) RetryWebhookDeliveryLater(ctx context.Context, tenantID, deliveryUUID uuid.UUID, reason string, next time.Time) error {
	if len(reason) > maxDeliveryErrorLen {
		reason = strings.ToValidUTF8(reason[:maxDeliveryErrorLen], "") + "…"
	}
	return s.execOne(ctx, "retry webhook delivery later",
		`UPDATE webhook_deliveries SET tries = tries + 1, last_error = $3, next_attempt_at = $4
		  WHERE tenant_id = $1 AND delivery_uuid = $2 AND processed_at IS NULL`,
		tenantID, deliveryUUID, reason, next)
}

const webhookDeliveryColumns = `id, tenant_id, installation_id, delivery_uuid, event_key, hook_uuid, attempt, repository_uuid,
	action, body_sha256, received_at, next_attempt_at, processed_at, result, tries, last_error`

func scanWebhookDelivery(row pgx.Row) (WebhookDelivery, error) {
	var d WebhookDelivery
	err := row.Scan(&d.ID, &d.TenantID, &d.InstallationID, &d.DeliveryUUID, &d.EventKey, &d.HookUUID, &d.Attempt,
		&d.RepositoryUUID, &d.Action, &d.BodySHA256, &d.ReceivedAt, &d.NextAttemptAt, &d.ProcessedAt, &d.Result,
		&d.Tries, &d.LastError)
	return d, err
}

// DueWebhookDeliveries returns unprocessed deliveries of every tenant whose next attempt is due,
// oldest first: the re-driver's work list (it acts for each row's own tenant).
func (s *Store) DueWebhookDeliveries(ctx context.Context, now time.Time, limit int) ([]WebhookDelivery, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+webhookDeliveryColumns+` FROM webhook_deliveries
		  WHERE processed_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("list due webhook deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookDelivery, error) { return scanWebhookDelivery(r) })
	if err != nil {
		return nil, fmt.Errorf("list due webhook deliveries: %w", err)
	}
	return out, nil
}

// CountUnprocessedWebhookDeliveries is the outbox backlog of every tenant.
func (s *Store) CountUnprocessedWebhookDeliveries(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE processed_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count unprocessed webhook deliveries: %w", err)
	}
	return n, nil
}

// GetWebhookDelivery returns one of the tenant's deliveries by request UUID.
func (s *Store) GetWebhookDelivery(ctx context.Context, tenantID, deliveryUUID uuid.UUID) (WebhookDelivery, error) {
	d, err := scanWebhookDelivery(s.pool.QueryRow(ctx,
		`SELECT `+webhookDeliveryColumns+` FROM webhook_deliveries WHERE tenant_id = $1 AND delivery_uuid = $2`,
		tenantID, deliveryUUID))
	if err != nil {
		return WebhookDelivery{}, fmt.Errorf("webhook delivery %s: %w", deliveryUUID, notFound(err))
	}
	return d, nil
}

// ListWebhookDeliveries returns an installation's most recent deliveries, newest first.
func (s *Store) ListWebhookDeliveries(ctx context.Context, tenantID, installationID uuid.UUID, limit int) ([]WebhookDelivery, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+webhookDeliveryColumns+` FROM webhook_deliveries
		  WHERE tenant_id = $1 AND installation_id = $2 ORDER BY received_at DESC, id DESC LIMIT $3`,
		tenantID, installationID, limit)
	if err != nil {
		return nil, fmt.Errorf("list webhook deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookDelivery, error) { return scanWebhookDelivery(r) })
	if err != nil {
		return nil, fmt.Errorf("list webhook deliveries: %w", err)
	}
	return out, nil
}

// RecordWebhookRejection counts a delivery the receiver refused for a known installation.
func (s *Store) RecordWebhookRejection(ctx context.Context, tenantID, installationID uuid.UUID, reason, eventKey string) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO webhook_rejections (tenant_id, installation_id, reason, event_key) VALUES ($1, $2, $3, $4)`,
		tenantID, installationID, reason, eventKey)
	if err != nil {
		return fmt.Errorf("record webhook rejection: %w", err)
	}
	return nil
}

// WebhookHealth is an installation's webhook traffic over a window.
type WebhookHealth struct {
	LastDeliveryAt *time.Time
	Deliveries     int
	Unprocessed    int
	// Rejected counts refused deliveries by reason (domain.Webhook* results).
	Rejected map[string]int
}

// WebhookHealthSince summarises an installation's deliveries received since since.
func (s *Store) WebhookHealthSince(ctx context.Context, tenantID, installationID uuid.UUID, since time.Time) (WebhookHealth, error) {
	h := WebhookHealth{Rejected: map[string]int{}}
	err := s.pool.QueryRow(ctx,
		`SELECT (SELECT max(received_at) FROM webhook_deliveries WHERE tenant_id = $1 AND installation_id = $2),
		        (SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND installation_id = $2 AND received_at >= $3),
		        (SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND installation_id = $2 AND processed_at IS NULL)`,
		tenantID, installationID, since,
	).Scan(&h.LastDeliveryAt, &h.Deliveries, &h.Unprocessed)
	if err != nil {
		return WebhookHealth{}, fmt.Errorf("webhook health: %w", err)
	}
	rows, err := s.pool.Query(ctx,
		`SELECT reason, count(*) FROM webhook_rejections
		  WHERE tenant_id = $1 AND installation_id = $2 AND received_at >= $3 GROUP BY reason`,
		tenantID, installationID, since)
	if err != nil {
		return WebhookHealth{}, fmt.Errorf("webhook rejections: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var reason string
		var n int
		if err := rows.Scan(&reason, &n); err != nil {
			return WebhookHealth{}, fmt.Errorf("scan webhook rejections: %w", err)
		}
		h.Rejected[reason] = n
	}
	return h, rows.Err()
}

// AcquireLease takes or renews the named lease for holder until now+ttl; false means another
// holder has it. One of several API processes runs a loop this way.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var got string
	err := s.pool.QueryRow(ctx,
		`INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + $3::interval)
		 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		  WHERE leases.holder = excluded.holder OR leases.expires_at < now()
		 RETURNING holder`,
		name, holder, fmt.Sprintf("%d milliseconds", ttl.Milliseconds()),
	).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return got == holder, nil
}

// ReleaseLease gives the lease up (on shutdown) so another process takes over at once.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
