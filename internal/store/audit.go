package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// AuditEvent records one change made by a user or by GitSec itself.
type AuditEvent struct {
	ID         int64
	TenantID   uuid.UUID
	Actor      string
	Action     string
	TargetType string
	TargetID   string
	Details    json.RawMessage
	CreatedAt  time.Time
}

// RecordAudit appends an audit event for the tenant. Details must never hold secrets.
func (s *Store) RecordAudit(ctx context.Context, ev AuditEvent) error {
	details := ev.Details
	if len(details) == 0 {
		details = json.RawMessage(`{}`)
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO audit_events (tenant_id, actor, action, target_type, target_id, details)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		ev.TenantID, ev.Actor, ev.Action, ev.TargetType, ev.TargetID, details)
	if err != nil {
		return fmt.Errorf("record audit event %s: %w", ev.Action, err)
	}
	return nil
}

// ListAuditEvents returns the tenant's events newest first, before the given ID (0 = newest).
func (s *Store) ListAuditEvents(ctx context.Context, tenantID uuid.UUID, beforeID int64, limit int) ([]AuditEvent, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, tenant_id, actor, action, target_type, target_id, details, created_at
		   FROM audit_events
		  WHERE tenant_id = $1 AND ($2 = 0 OR id < $2)
		  ORDER BY id DESC LIMIT $3`, tenantID, beforeID, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var ev AuditEvent
		if err := rows.Scan(&ev.ID, &ev.TenantID, &ev.Actor, &ev.Action, &ev.TargetType, &ev.TargetID, &ev.Details, &ev.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan audit event: %w", err)
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}
