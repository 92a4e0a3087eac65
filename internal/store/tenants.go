package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/apitoken"
)

// Tenant is one customer account; API tokens, installations and backups belong to it.
type Tenant struct {
	ID        uuid.UUID
	Name      string
	CreatedAt time.Time
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
	// LastUsedAt is stamped at most once a minute (see TenantByTokenHash); nil = never used.
	LastUsedAt *time.Time
	RevokedAt  *time.Time
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

// ListAPITokens returns the tenant's active tokens, oldest first. Revoked tokens are left out:
// they can never be used again, and their revocation is in the audit trail.
func (s *Store) ListAPITokens(ctx context.Context, tenantID uuid.UUID) ([]APIToken, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+apiTokenColumns+` FROM api_tokens
		  WHERE tenant_id = $1 AND revoked_at IS NULL
		  ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	toks, err := pgx.CollectRows(rows, scanAPIToken)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	return toks, nil
}

// ErrLastToken refuses to revoke a tenant's only active token where that would lock it out.
var ErrLastToken = errors.New("the tenant's last active api token")

// LastTokenRule says whether a revocation may leave the tenant without an active token.
type LastTokenRule bool

const (
	// KeepLastToken is for tenants revoking their own tokens: revoking the last one would lock
	// them out of the API until an operator issues another, so it is refused (ErrLastToken).
	KeepLastToken LastTokenRule = false
	// AllowLastToken is for operators, who can always issue a new token.
	AllowLastToken LastTokenRule = true
)

// RevokeAPIToken marks one of the tenant's active tokens revoked; from the commit on,
// TenantByTokenHash no longer resolves it. Another tenant's or an already revoked token is
// ErrNotFound.
func (s *Store) RevokeAPIToken(ctx context.Context, tenantID, tokenID uuid.UUID, rule LastTokenRule) (APIToken, error) {
	var tok APIToken
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Two concurrent revocations of a tenant's last two tokens would each still see the
		// other token active; locking the tenant row serialises them so the guard holds.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`, tenantID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx,
			`UPDATE api_tokens SET revoked_at = now()
			  WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
			 RETURNING `+apiTokenColumns, tenantID, tokenID)
		if err != nil {
			return err
		}
		if tok, err = pgx.CollectExactlyOneRow(rows, scanAPIToken); err != nil {
			return notFound(err)
		}
		if rule == AllowLastToken {
			return nil
		}
		var active int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE tenant_id = $1 AND revoked_at IS NULL`, tenantID).Scan(&active); err != nil {
			return err
		}
		if active == 0 {
			return ErrLastToken
		}
		return nil
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("revoke api token %s: %w", tokenID, err)
	}
	return tok, nil
}

const apiTokenColumns = `id, tenant_id, display_prefix, name, created_at, last_used_at, revoked_at`

func scanAPIToken(row pgx.CollectableRow) (APIToken, error) {
	var t APIToken
	err := row.Scan(&t.ID, &t.TenantID, &t.DisplayPrefix, &t.Name, &t.CreatedAt, &t.LastUsedAt, &t.RevokedAt)
	return t, err
}
