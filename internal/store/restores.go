package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
)

// AppGrant is an installation's grant of a second app (the Restore App), without its tokens.
type AppGrant struct {
	InstallationID uuid.UUID
	App            domain.App
	AccountUUID    string
	AccountName    string
	GrantedAt      time.Time
	UpdatedAt      time.Time
}

// ErrNoGrant: the installation has no grant of that app.
var ErrNoGrant = errors.New("no grant of that app")

// CreateInstallationOAuthState stores a single-use state nonce for a connect flow that belongs
// to one installation (the Restore App's).
func (s *Store) CreateInstallationOAuthState(ctx context.Context, tenantID, installationID uuid.UUID, nonce, provider string, expiresAt time.Time) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO oauth_states (nonce, tenant_id, provider, installation_id, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		nonce, tenantID, provider, installationID, expiresAt)
	if err != nil {
		return fmt.Errorf("create oauth state: %w", err)
	}
	return nil
}

// ConsumeInstallationOAuthState marks the state used and returns its tenant and installation;
// a used, expired, unknown or installation-less state is ErrNotFound.
func (s *Store) ConsumeInstallationOAuthState(ctx context.Context, nonce, provider string, now time.Time) (tenantID, installationID uuid.UUID, err error) {
	err = s.pool.QueryRow(ctx,
		`UPDATE oauth_states SET used_at = $3
		  WHERE nonce = $1 AND provider = $2 AND used_at IS NULL AND expires_at >= $3 AND installation_id IS NOT NULL
		 RETURNING tenant_id, installation_id`, nonce, provider, now,
	).Scan(&tenantID, &installationID)
	if err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("consume oauth state: %w", notFound(err))
	}
	return tenantID, installationID, nil
}

// SaveAppGrant stores (or replaces) an installation's grant of app with sealed tokens. A
// removed installation takes no grant (ErrInstallationRemoved).
func (s *Store) SaveAppGrant(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App, acct ProviderAccount, sealed []byte) (AppGrant, error) {
	var g AppGrant
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM installations WHERE tenant_id = $1 AND id = $2 FOR SHARE`, tenantID, installationID).Scan(&status); err != nil {
			return notFound(err)
		}
		if status == domain.InstallationRemoved || status == domain.InstallationRemoving {
			return ErrInstallationRemoved
		}
		return tx.QueryRow(ctx,
			`INSERT INTO app_grants (installation_id, app, tenant_id, account_uuid, account_name, credentials_encrypted)
			 VALUES ($1, $2, $3, $4, $5, $6)
			 ON CONFLICT (installation_id, app) DO UPDATE
			    SET account_uuid = EXCLUDED.account_uuid, account_name = EXCLUDED.account_name,
			        credentials_encrypted = EXCLUDED.credentials_encrypted, granted_at = now(), updated_at = now()
			 RETURNING installation_id, app, account_uuid, account_name, granted_at, updated_at`,
			installationID, string(app), tenantID, acct.UUID, acct.Name, sealed,
		).Scan(&g.InstallationID, &g.App, &g.AccountUUID, &g.AccountName, &g.GrantedAt, &g.UpdatedAt)
	})
	if err != nil {
		return AppGrant{}, fmt.Errorf("save %s grant of installation %s: %w", app, installationID, err)
	}
	return g, nil
}

// AppGrant returns the installation's grant of app (ErrNoGrant when there is none).
func (s *Store) AppGrant(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App) (AppGrant, error) {
	var g AppGrant
	err := s.pool.QueryRow(ctx,
		`SELECT installation_id, app, account_uuid, account_name, granted_at, updated_at
		   FROM app_grants WHERE tenant_id = $1 AND installation_id = $2 AND app = $3`,
		tenantID, installationID, string(app),
	).Scan(&g.InstallationID, &g.App, &g.AccountUUID, &g.AccountName, &g.GrantedAt, &g.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return AppGrant{}, fmt.Errorf("installation %s: %w", installationID, ErrNoGrant)
	}
	if err != nil {
		return AppGrant{}, fmt.Errorf("%s grant of installation %s: %w", app, installationID, err)
	}
	return g, nil
}

// AppCredentials returns the sealed tokens of the installation's grant of app. The backup app's
// are the installation's own; another app's come from its grant (ErrNoGrant without one).
func (s *Store) AppCredentials(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App) ([]byte, error) {
	if app == domain.AppBackup {
		return s.InstallationCredentials(ctx, tenantID, installationID)
	}
	var enc []byte
	var status string
	err := s.pool.QueryRow(ctx,
		`SELECT g.credentials_encrypted, i.status FROM app_grants g JOIN installations i ON i.id = g.installation_id
		  WHERE g.tenant_id = $1 AND g.installation_id = $2 AND g.app = $3`,
		tenantID, installationID, string(app)).Scan(&enc, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("installation %s: %w", installationID, ErrNoGrant)
	}
	if err != nil {
		return nil, fmt.Errorf("%s credentials of installation %s: %w", app, installationID, err)
	}
	if status == domain.InstallationRemoved {
		return nil, fmt.Errorf("installation %s credentials: %w", installationID, ErrInstallationRemoved)
	}
	return enc, nil
}

// UpdateAppCredentials persists refreshed tokens of a grant; a dropped grant takes none
// (ErrNoGrant), so a refresh racing a DELETE cannot bring it back.
func (s *Store) UpdateAppCredentials(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App, enc []byte) error {
	if app == domain.AppBackup {
		return s.UpdateInstallationCredentials(ctx, tenantID, installationID, enc)
	}
	tag, err := s.pool.Exec(ctx,
		`UPDATE app_grants SET credentials_encrypted = $4, updated_at = now()
		  WHERE tenant_id = $1 AND installation_id = $2 AND app = $3`, tenantID, installationID, string(app), enc)
	if err != nil {
		return fmt.Errorf("update %s credentials of installation %s: %w", app, installationID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("installation %s: %w", installationID, ErrNoGrant)
	}
	return nil
}

// DeleteAppGrant drops the grant and its tokens; deleting none is ErrNoGrant.
func (s *Store) DeleteAppGrant(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM app_grants WHERE tenant_id = $1 AND installation_id = $2 AND app = $3`,
		tenantID, installationID, string(app))
	if err != nil {
		return fmt.Errorf("delete %s grant of installation %s: %w", app, installationID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("installation %s: %w", installationID, ErrNoGrant)
	}
	return nil
}

// Restore is one restore's row.
type Restore struct {
	ID                uuid.UUID
	TenantID          uuid.UUID
	InstallationID    *uuid.UUID
	RepositoryID      *uuid.UUID
	SnapshotID        string
	Target            string
	TargetMode        string
	Request           json.RawMessage
	CreatedRepository string
	Status            string
	StatusMessage     string
	Step              string
	Result            json.RawMessage
	WorkflowID        string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
}

const restoreColumns = `id, tenant_id, installation_id, repository_id, snapshot_id, target, target_mode, request,
	created_repository, status, status_message, step, result, coalesce(workflow_id, ''), created_at, updated_at, started_at, finished_at`

func scanRestore(row pgx.Row) (Restore, error) {
	var r Restore
	err := row.Scan(&r.ID, &r.TenantID, &r.InstallationID, &r.RepositoryID, &r.SnapshotID, &r.Target, &r.TargetMode, &r.Request,
		&r.CreatedRepository, &r.Status, &r.StatusMessage, &r.Step, &r.Result, &r.WorkflowID, &r.CreatedAt, &r.UpdatedAt, &r.StartedAt, &r.FinishedAt)
	return r, err
}

// ErrRestoreActive: a restore into the same target is queued or running.
var ErrRestoreActive = errors.New("a restore into this repository is already queued or running")

// CreateRestore inserts a queued restore with the caller's ID (so its workflow ID can be
// derived before the insert); another active one into the same target is ErrRestoreActive.
func (s *Store) CreateRestore(ctx context.Context, r Restore) (Restore, error) {
	out, err := scanRestore(s.pool.QueryRow(ctx,
		`INSERT INTO restores (id, tenant_id, installation_id, repository_id, snapshot_id, target, target_mode, request, status, workflow_id)
		 VALUES ($9, $1, $2, $3, $4, $5, $6, $7, 'queued', $8)
		 RETURNING `+restoreColumns,
		r.TenantID, r.InstallationID, r.RepositoryID, r.SnapshotID, r.Target, r.TargetMode, r.Request, r.WorkflowID, r.ID))
	if isUniqueViolation(err) {
		return Restore{}, ErrRestoreActive
	}
	if err != nil {
		return Restore{}, fmt.Errorf("create restore: %w", err)
	}
	return out, nil
}

// GetRestore returns one of the tenant's restores.
func (s *Store) GetRestore(ctx context.Context, tenantID, id uuid.UUID) (Restore, error) {
	r, err := scanRestore(s.pool.QueryRow(ctx, `SELECT `+restoreColumns+` FROM restores WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if err != nil {
		return Restore{}, fmt.Errorf("restore %s: %w", id, notFound(err))
	}
	return r, nil
}

// ActiveRestore returns the queued or running restore into target, if any.
func (s *Store) ActiveRestore(ctx context.Context, tenantID uuid.UUID, target string) (Restore, error) {
	r, err := scanRestore(s.pool.QueryRow(ctx, `SELECT `+restoreColumns+` FROM restores
		WHERE tenant_id = $1 AND lower(target) = lower($2) AND status IN ('queued', 'running')`, tenantID, target))
	if err != nil {
		return Restore{}, fmt.Errorf("active restore into %s: %w", target, notFound(err))
	}
	return r, nil
}

// ListRestores returns the tenant's restores, newest first, optionally of one repository.
func (s *Store) ListRestores(ctx context.Context, tenantID uuid.UUID, repositoryID *uuid.UUID, limit int) ([]Restore, error) {
	if limit <= 0 || limit > 200 {
		limit = 50
	}
	rows, err := s.pool.Query(ctx, `SELECT `+restoreColumns+` FROM restores
		WHERE tenant_id = $1 AND ($2::uuid IS NULL OR repository_id = $2) ORDER BY created_at DESC, id LIMIT $3`, tenantID, repositoryID, limit)
	if err != nil {
		return nil, fmt.Errorf("list restores: %w", err)
	}
	defer rows.Close()
	var out []Restore
	for rows.Next() {
		r, err := scanRestore(rows)
		if err != nil {
			return nil, fmt.Errorf("list restores: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkRestoreRunning records the step a restore is at; the first call also sets started_at.
// A finished restore is left as it is.
func (s *Store) MarkRestoreRunning(ctx context.Context, tenantID, id uuid.UUID, step string) error {
	_, err := s.pool.Exec(ctx, `UPDATE restores SET status = 'running', step = $3, started_at = coalesce(started_at, now()), updated_at = now()
		WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')`, tenantID, id, step)
	if err != nil {
		return fmt.Errorf("mark restore %s running: %w", id, err)
	}
	return nil
}

// SetRestoreCreatedRepository records the repository (its Bitbucket UUID) this restore created,
// so a retried step reuses it instead of calling it someone else's.
func (s *Store) SetRestoreCreatedRepository(ctx context.Context, tenantID, id uuid.UUID, repoUUID string) error {
	_, err := s.pool.Exec(ctx, `UPDATE restores SET created_repository = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`, tenantID, id, repoUUID)
	if err != nil {
		return fmt.Errorf("record restore %s created repository: %w", id, err)
	}
	return nil
}

// FinishRestore records a restore's outcome once; a second call (an activity retry) changes
// nothing and reports false.
func (s *Store) FinishRestore(ctx context.Context, tenantID, id uuid.UUID, status, message string, result json.RawMessage) (bool, error) {
	if !domain.RestoreFinished(status) {
		return false, fmt.Errorf("finish restore %s: %q is not a final status", id, status)
	}
	if len(result) == 0 {
		result = json.RawMessage(`{}`)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE restores SET status = $3, status_message = $4, result = $5, step = 'done',
		finished_at = now(), updated_at = now() WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')`,
		tenantID, id, status, message, result)
	if err != nil {
		return false, fmt.Errorf("finish restore %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SnapshotAt returns the repository's latest snapshot taken at or before at (ErrNotFound if
// none): the point-in-time a restore by time picks.
func (s *Store) SnapshotAt(ctx context.Context, tenantID, repositoryID uuid.UUID, at time.Time) (Snapshot, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT id FROM snapshots WHERE tenant_id = $1 AND repository_id = $2 AND started_at <= $3
		ORDER BY id COLLATE "C" DESC LIMIT 1`, tenantID, repositoryID, at).Scan(&id)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot of repository %s at %s: %w", repositoryID, at.Format(time.RFC3339), notFound(err))
	}
	return s.GetSnapshot(ctx, tenantID, id)
}
