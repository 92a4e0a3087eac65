package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// CreateOAuthState stores a single-use OAuth state nonce bound to the tenant.
func (s *Store) CreateOAuthState(ctx context.Context, tenantID uuid.UUID, nonce, provider string, expiresAt time.Time) error {
	return s.CreateOAuthStateReturning(ctx, tenantID, nonce, provider, expiresAt, "")
}

// CreateOAuthStateReturning is CreateOAuthState for a connect started from the dashboard:
// returnTo is the dashboard path the callback sends the browser back to.
func (s *Store) CreateOAuthStateReturning(ctx context.Context, tenantID uuid.UUID, nonce, provider string, expiresAt time.Time, returnTo string) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO oauth_states (nonce, tenant_id, provider, expires_at, return_to) VALUES ($1, $2, $3, $4, $5)`,
		nonce, tenantID, provider, expiresAt, returnTo)
	if err != nil {
		return fmt.Errorf("create oauth state: %w", err)
	}
	return nil
}

// ConsumeOAuthState marks the state used and returns its tenant; a used, expired or unknown
// state is ErrNotFound, so a replayed callback creates nothing.
func (s *Store) ConsumeOAuthState(ctx context.Context, nonce, provider string, now time.Time) (uuid.UUID, error) {
	var tenantID uuid.UUID
	err := s.pool.QueryRow(ctx,
		`UPDATE oauth_states SET used_at = $3
		  WHERE nonce = $1 AND provider = $2 AND used_at IS NULL AND expires_at >= $3
		 RETURNING tenant_id`, nonce, provider, now,
	).Scan(&tenantID)
	if err != nil {
		return uuid.Nil, fmt.Errorf("consume oauth state: %w", notFound(err))
	}
	return tenantID, nil
}

// OAuthStateReturnTo is where the browser of a connect link goes back to ("" when none or
// unknown); it is read before the state is consumed, so that a failed callback can still offer
// the way back.
func (s *Store) OAuthStateReturnTo(ctx context.Context, nonce string) string {
	var to string
	_ = s.pool.QueryRow(ctx, `SELECT return_to FROM oauth_states WHERE nonce = $1`, nonce).Scan(&to)
	return to
}

// CreateInstallation inserts a pending installation for the tenant.
func (s *Store) CreateInstallation(ctx context.Context, tenantID uuid.UUID, provider string) (uuid.UUID, error) {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx,
		`INSERT INTO installations (tenant_id, provider) VALUES ($1, $2) RETURNING id`, tenantID, provider,
	).Scan(&id)
	if err != nil {
		return uuid.Nil, fmt.Errorf("create installation: %w", err)
	}
	return id, nil
}
