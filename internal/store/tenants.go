package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/apitoken"
)

// Tenant is one customer account; API tokens, installations and backups belong to it.
type Tenant struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateTenant inserts a tenant; ErrConflict when the name is taken.
func (s *Store) CreateTenant(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	err := s.pool.QueryRow(ctx,
		`INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at`, name,
	).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if isUniqueViolation(err) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrConflict)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	return t, nil
}

// TenantByName finds a tenant by its unique name.
func (s *Store) TenantByName(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	err := s.pool.QueryRow(ctx,
		`SELECT id, name, created_at FROM tenants WHERE name = $1`, name,
	).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, notFound(err))
	}
	return t, nil
}

// APIToken is the stored form of a token: its hash and a display prefix, never the token.
type APIToken struct {
	ID            uuid.UUID
	TenantID      uuid.UUID
	DisplayPrefix string
	Name          string
	CreatedAt     time.Time
}

// CreateAPIToken stores the SHA-256 of a new token for the tenant.
func (s *Store) CreateAPIToken(ctx context.Context, tenantID uuid.UUID, tokenSHA256 []byte, displayPrefix, name string) (APIToken, error) {
	tok := APIToken{TenantID: tenantID, DisplayPrefix: displayPrefix, Name: name}
	err := s.pool.QueryRow(ctx,
		`INSERT INTO api_tokens (tenant_id, token_sha256, display_prefix, name) VALUES ($1, $2, $3, $4)
		 RETURNING id, created_at`, tenantID, tokenSHA256, displayPrefix, name,
	).Scan(&tok.ID, &tok.CreatedAt)
	if err != nil {
		return APIToken{}, fmt.Errorf("create api token: %w", err)
	}
	return tok, nil
}

// TenantByTokenHash resolves a bearer token's hash to its tenant. Revoked tokens resolve to
// ErrNotFound. Every API request comes through here, so last use is stamped at most once a
// minute per token rather than written on every request.
func (s *Store) TenantByTokenHash(ctx context.Context, tokenSHA256 []byte) (Tenant, error) {
	var t Tenant
	err := s.pool.QueryRow(ctx,
		`WITH tok AS (
			SELECT k.id, k.last_used_at, t.id AS tenant_id, t.name, t.created_at
			  FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id
			 WHERE k.token_sha256 = $1 AND k.revoked_at IS NULL
		 ), touched AS (
			UPDATE api_tokens SET last_used_at = now()
			 WHERE id IN (SELECT id FROM tok WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
		 )
		 SELECT tenant_id, name, created_at FROM tok`, tokenSHA256,
	).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if err != nil {
		return Tenant{}, fmt.Errorf("resolve api token: %w", notFound(err))
	}
	return t, nil
}

// IssueAPIToken creates a new random token for the tenant and stores its hash. The returned
// token is the only copy: show it once.
func (s *Store) IssueAPIToken(ctx context.Context, tenantID uuid.UUID, name string) (string, APIToken, error) {
	token, sha, prefix, err := apitoken.New()
	if err != nil {
		return "", APIToken{}, err
	}
	rec, err := s.CreateAPIToken(ctx, tenantID, sha, prefix, name)
	if err != nil {
		return "", APIToken{}, err
	}
	return token, rec, nil
}
