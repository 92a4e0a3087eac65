package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Session is a signed-in browser of the dashboard.
type Session struct {
	Tenant    Tenant
	Via       string
	ExpiresAt time.Time
}

// CreateLoginLink stores a single-use sign-in link by the hash of its secret.
func (s *Store) CreateLoginLink(ctx context.Context, tenantID uuid.UUID, secretHash []byte, nextPath string, expiresAt time.Time) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO login_links (id_hash, tenant_id, next_path, expires_at) VALUES ($1, $2, $3, $4)`,
		secretHash, tenantID, nextPath, expiresAt)
	if err != nil {
		return fmt.Errorf("create login link: %w", err)
	}
	return nil
}

// ConsumeLoginLink marks a link used and returns its tenant and the path it leads to; a used,
// expired or unknown link is ErrNotFound, so a forwarded or replayed link signs nobody in.
func (s *Store) ConsumeLoginLink(ctx context.Context, secretHash []byte, now time.Time) (Tenant, string, error) {
	var t Tenant
	var next string
	err := s.pool.QueryRow(ctx,
		`WITH used AS (
			UPDATE login_links SET used_at = $2
			 WHERE id_hash = $1 AND used_at IS NULL AND expires_at >= $2
			RETURNING tenant_id, next_path)
		 SELECT t.id, t.name, t.created_at, used.next_path FROM used JOIN tenants t ON t.id = used.tenant_id`,
		secretHash, now).Scan(&t.ID, &t.Name, &t.CreatedAt, &next)
	if err != nil {
		return Tenant{}, "", fmt.Errorf("consume login link: %w", notFound(err))
	}
	return t, next, nil
}

// CreateSession stores a new browser session by the hash of its cookie's secret. Ended
// sessions and used links are removed by housekeeping (PurgeExpired).
func (s *Store) CreateSession(ctx context.Context, tenantID uuid.UUID, secretHash []byte, via string, expiresAt time.Time) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO sessions (id_hash, tenant_id, via, expires_at) VALUES ($1, $2, $3, $4)`,
		secretHash, tenantID, via, expiresAt)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// SessionByHash resolves a live session (not expired, not revoked) to its tenant.
func (s *Store) SessionByHash(ctx context.Context, secretHash []byte, now time.Time) (Session, error) {
	var sess Session
	err := s.pool.QueryRow(ctx,
		`SELECT t.id, t.name, t.created_at, s.via, s.expires_at
		   FROM sessions s JOIN tenants t ON t.id = s.tenant_id
		  WHERE s.id_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2`, secretHash, now,
	).Scan(&sess.Tenant.ID, &sess.Tenant.Name, &sess.Tenant.CreatedAt, &sess.Via, &sess.ExpiresAt)
	if err != nil {
		return Session{}, fmt.Errorf("resolve session: %w", notFound(err))
	}
	return sess, nil
}

// RevokeSession ends a session at once (sign-out); revoking an unknown one is not an error.
func (s *Store) RevokeSession(ctx context.Context, secretHash []byte) error {
	if _, err := s.pool.Exec(ctx, `UPDATE sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL`, secretHash); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}
