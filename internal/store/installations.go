package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
)

// Installation is one connected provider account.
type Installation struct {
	ID              uuid.UUID
	TenantID        uuid.UUID
	Provider        string
	AccountUUID     string
	AccountName     string
	Status          string
	StatusMessage   string
	DefaultIncluded bool
	Progress        json.RawMessage
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Repositories    RepositoryCount
}

// RepositoryCount summarises an installation's repositories.
type RepositoryCount struct {
	Total    int64
	Included int64
	Deleted  int64
}

// CreateInstallationWithCredentials inserts a pending installation holding encrypted tokens.
func (s *Store) CreateInstallationWithCredentials(ctx context.Context, tenantID uuid.UUID, provider string, credentialsEncrypted []byte) (uuid.UUID, error) {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx,
		`INSERT INTO installations (tenant_id, provider, credentials_encrypted) VALUES ($1, $2, $3) RETURNING id`,
		tenantID, provider, credentialsEncrypted,
	).Scan(&id)
	if err != nil {
		return uuid.Nil, fmt.Errorf("create installation: %w", err)
	}
	return id, nil
}

// ProviderAccount is the provider account an OAuth grant acts for.
type ProviderAccount struct {
	Provider string
	UUID     string
	Name     string
}

// AlreadyConnectedError refuses a second live installation of one provider account in one
// tenant. It matches ErrConflict.
type AlreadyConnectedError struct {
	InstallationID uuid.UUID
	Status         string
	AccountName    string
}

func (e *AlreadyConnectedError) Error() string {
	return fmt.Sprintf("account %s is already connected as installation %s (status %s)", e.AccountName, e.InstallationID, e.Status)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *AlreadyConnectedError) Is(target error) bool { return target == ErrConflict }

// ConnectInstallation records an authorized provider account for the tenant. One live
// installation per account and tenant (migration 00005): a new account gets a pending
// installation; an account whose installation needs re-authorization gets its credentials
// replaced and the installation set back to pending (reconnected); any other live installation
// of the account is an *AlreadyConnectedError. Removed installations do not count.
func (s *Store) ConnectInstallation(ctx context.Context, tenantID uuid.UUID, acct ProviderAccount, credentialsEncrypted []byte) (id uuid.UUID, reconnected bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx,
			`SELECT id, status FROM installations
			  WHERE tenant_id = $1 AND provider = $2 AND account_uuid = $3 AND status <> 'removed' FOR UPDATE`,
			tenantID, acct.Provider, acct.UUID).Scan(&id, &status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return tx.QueryRow(ctx,
				`INSERT INTO installations (tenant_id, provider, account_uuid, account_name, credentials_encrypted)
				 VALUES ($1, $2, $3, $4, $5) RETURNING id`,
				tenantID, acct.Provider, acct.UUID, acct.Name, credentialsEncrypted).Scan(&id)
		case err != nil:
			return err
		case status != domain.InstallationNeedsReauth:
			return &AlreadyConnectedError{InstallationID: id, Status: status, AccountName: acct.Name}
		}
		reconnected = true
		_, err = tx.Exec(ctx,
			`UPDATE installations SET credentials_encrypted = $3, account_name = $4, status = 'pending', status_message = '',
			        updated_at = now()
			  WHERE tenant_id = $1 AND id = $2`,
			tenantID, id, credentialsEncrypted, acct.Name)
		return err
	})
	if isUniqueViolation(err) {
		// A concurrent connect of the same account won the insert.
		return uuid.Nil, false, s.alreadyConnected(ctx, tenantID, acct)
	}
	var dup *AlreadyConnectedError
	if err != nil && !errors.As(err, &dup) {
		err = fmt.Errorf("connect installation of %s: %w", acct.Name, err)
	}
	return id, reconnected, err
}

// alreadyConnected describes the live installation that a unique violation ran into.
func (s *Store) alreadyConnected(ctx context.Context, tenantID uuid.UUID, acct ProviderAccount) error {
	dup := &AlreadyConnectedError{AccountName: acct.Name}
	err := s.pool.QueryRow(ctx,
		`SELECT id, status FROM installations WHERE tenant_id = $1 AND provider = $2 AND account_uuid = $3 AND status <> 'removed'`,
		tenantID, acct.Provider, acct.UUID).Scan(&dup.InstallationID, &dup.Status)
	if err != nil {
		return fmt.Errorf("account %s is already connected: %w", acct.Name, ErrConflict)
	}
	return dup
}

// ErrInstallationRemoved is returned for a write that a removed installation refuses: its
// credentials were dropped at uninstall and nothing may bring them (or another status) back.
var ErrInstallationRemoved = errors.New("installation removed")

// BackupsStopped reports whether an installation in this status is not backed up: it is being
// removed or was removed, or Bitbucket revoked its credentials and it waits for a reconnect.
func BackupsStopped(status string) bool { return slices.Contains(backupsStoppedStatuses, status) }

// backupsStoppedStatuses are the statuses BackupsStopped names, also passed to SQL.
var backupsStoppedStatuses = []string{domain.InstallationRemoving, domain.InstallationRemoved, domain.InstallationNeedsReauth}

// InstallationCredentials returns the encrypted tokens of an installation; a removed one has
// none (ErrInstallationRemoved).
func (s *Store) InstallationCredentials(ctx context.Context, tenantID, id uuid.UUID) ([]byte, error) {
	var enc []byte
	var status string
	err := s.pool.QueryRow(ctx,
		`SELECT credentials_encrypted, status FROM installations WHERE tenant_id = $1 AND id = $2`, tenantID, id,
	).Scan(&enc, &status)
	if err != nil {
		return nil, fmt.Errorf("installation %s credentials: %w", id, notFound(err))
	}
	if status == domain.InstallationRemoved {
		return nil, fmt.Errorf("installation %s credentials: %w", id, ErrInstallationRemoved)
	}
	if len(enc) == 0 {
		return nil, fmt.Errorf("installation %s has no credentials: %w", id, ErrNotFound)
	}
	return enc, nil
}

// UpdateInstallationCredentials replaces the encrypted tokens (after a refresh). The WHERE
// clause refuses a removed installation, so a refresh finishing on another worker after the
// uninstall cannot write the dropped credentials back (ErrInstallationRemoved).
func (s *Store) UpdateInstallationCredentials(ctx context.Context, tenantID, id uuid.UUID, enc []byte) error {
	return s.updateInstallation(ctx, "update installation credentials",
		`UPDATE installations SET credentials_encrypted = $3, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2 AND status <> 'removed'`,
		tenantID, id, enc)
}

// updateInstallation runs an UPDATE of one installation whose WHERE clause may refuse it for its
// status. Whether the row is written is decided by that one statement; when nothing was
// written, a read only picks the error: no such installation, or a refused status.
func (s *Store) updateInstallation(ctx context.Context, what, sql string, tenantID, id uuid.UUID, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, append([]any{tenantID, id}, args...)...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	status, err := s.InstallationStatus(ctx, tenantID, id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: installation %s is %s: %w", what, id, status, ErrInstallationRemoved)
}

// SetInstallationAccount records which provider account the installation is; ErrConflict when
// another live installation of the tenant is that account (only installations connected before
// the callback learnt the account can get here).
func (s *Store) SetInstallationAccount(ctx context.Context, tenantID, id uuid.UUID, accountUUID, accountName string) error {
	err := s.execOne(ctx, "set installation account",
		`UPDATE installations SET account_uuid = $3, account_name = $4, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, accountUUID, accountName)
	if isUniqueViolation(err) {
		return fmt.Errorf("installation %s: account %s is already connected as another installation of the tenant: %w", id, accountName, ErrConflict)
	}
	return err
}

// SetInstallationStatus sets status and message; removing the installation also drops its
// credentials, which nothing needs any more. Uninstalling is one way: a removed installation
// stays removed and one being removed can only become removed, so a late write from a
// cancelled onboarding or a backup on another worker cannot revive it (ErrInstallationRemoved).
func (s *Store) SetInstallationStatus(ctx context.Context, tenantID, id uuid.UUID, status, message string) error {
	return s.updateInstallation(ctx, "set installation status",
		`UPDATE installations SET status = $3, status_message = $4, updated_at = now(),
		        credentials_encrypted = CASE WHEN $3 = 'removed' THEN NULL ELSE credentials_encrypted END
		  WHERE tenant_id = $1 AND id = $2
		    AND (status <> 'removed' OR $3 = 'removed')
		    AND (status <> 'removing' OR $3 IN ('removing', 'removed'))`,
		tenantID, id, status, message)
}

// MarkInstallationNeedsReauth records that the installation's credentials were revoked, unless
// it already waits for a reconnect (the first reason found is kept: several backups of one
// installation fail together) or is being removed.
func (s *Store) MarkInstallationNeedsReauth(ctx context.Context, tenantID, id uuid.UUID, message string) error {
	_, err := s.pool.Exec(ctx,
		`UPDATE installations SET status = 'needs_reauth', status_message = $3, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2 AND status NOT IN ('needs_reauth', 'removing', 'removed')`,
		tenantID, id, message)
	if err != nil {
		return fmt.Errorf("mark installation %s needs_reauth: %w", id, err)
	}
	return nil
}

// SetInstallationProgress stores the onboarding progress document for the API.
func (s *Store) SetInstallationProgress(ctx context.Context, tenantID, id uuid.UUID, progress json.RawMessage) error {
	return s.execOne(ctx, "set installation progress",
		`UPDATE installations SET progress = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, progress)
}

// SetInstallationDefaultIncluded decides whether repositories discovered later are backed up.
func (s *Store) SetInstallationDefaultIncluded(ctx context.Context, tenantID, id uuid.UUID, included bool) error {
	return s.execOne(ctx, "set installation default",
		`UPDATE installations SET default_included = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, included)
}

const installationColumns = `i.id, i.tenant_id, i.provider, coalesce(i.account_uuid, ''), coalesce(i.account_name, ''),
	i.status, i.status_message, i.default_included, i.progress, i.created_at, i.updated_at,
	(SELECT count(*) FROM repositories r WHERE r.installation_id = i.id),
	(SELECT count(*) FROM repositories r WHERE r.installation_id = i.id AND r.included AND r.status = 'active'),
	(SELECT count(*) FROM repositories r WHERE r.installation_id = i.id AND r.status = 'deleted_upstream')`

func scanInstallation(row pgx.Row) (Installation, error) {
	var i Installation
	err := row.Scan(&i.ID, &i.TenantID, &i.Provider, &i.AccountUUID, &i.AccountName, &i.Status, &i.StatusMessage,
		&i.DefaultIncluded, &i.Progress, &i.CreatedAt, &i.UpdatedAt,
		&i.Repositories.Total, &i.Repositories.Included, &i.Repositories.Deleted)
	return i, err
}

// GetInstallation returns one installation of the tenant.
func (s *Store) GetInstallation(ctx context.Context, tenantID, id uuid.UUID) (Installation, error) {
	i, err := scanInstallation(s.pool.QueryRow(ctx,
		`SELECT `+installationColumns+` FROM installations i WHERE i.tenant_id = $1 AND i.id = $2`, tenantID, id))
	if err != nil {
		return Installation{}, fmt.Errorf("installation %s: %w", id, notFound(err))
	}
	return i, nil
}

// InstallationStatus returns the installation's status alone: a cheap check before work that a
// removal must stop.
func (s *Store) InstallationStatus(ctx context.Context, tenantID, id uuid.UUID) (string, error) {
	var status string
	err := s.pool.QueryRow(ctx, `SELECT status FROM installations WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&status)
	if err != nil {
		return "", fmt.Errorf("installation %s status: %w", id, notFound(err))
	}
	return status, nil
}

// ListInstallations returns the tenant's installations, newest first.
func (s *Store) ListInstallations(ctx context.Context, tenantID uuid.UUID) ([]Installation, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+installationColumns+` FROM installations i WHERE i.tenant_id = $1 ORDER BY i.created_at DESC, i.id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list installations: %w", err)
	}
	defer rows.Close()
	var out []Installation
	for rows.Next() {
		i, err := scanInstallation(rows)
		if err != nil {
			return nil, fmt.Errorf("scan installation: %w", err)
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

// Workspace is a provider workspace seen through one installation.
type Workspace struct {
	ID                uuid.UUID
	TenantID          uuid.UUID
	InstallationID    uuid.UUID
	ProviderUUID      string
	Slug              string
	Name              string
	IsAdmin           bool
	Status            string
	StatusReason      string
	WebhookUUID       string
	WebhookRegistered bool
	UpdatedAt         time.Time
}

// UpsertWorkspace records a workspace by provider UUID (slugs can change) and returns its ID.
func (s *Store) UpsertWorkspace(ctx context.Context, w Workspace) (uuid.UUID, error) {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx,
		`INSERT INTO workspaces (tenant_id, installation_id, provider_uuid, slug, name, is_admin)
		 VALUES ($1, $2, $3, $4, $5, $6)
		 ON CONFLICT (installation_id, provider_uuid) DO UPDATE
		   SET slug = excluded.slug, name = excluded.name, is_admin = excluded.is_admin, updated_at = now()
		 WHERE workspaces.tenant_id = excluded.tenant_id
		 RETURNING id`,
		w.TenantID, w.InstallationID, w.ProviderUUID, w.Slug, w.Name, w.IsAdmin,
	).Scan(&id)
	if err != nil {
		return uuid.Nil, fmt.Errorf("upsert workspace %s: %w", w.Slug, err)
	}
	return id, nil
}

// SetWorkspaceStatus records the outcome of webhook registration for a workspace.
func (s *Store) SetWorkspaceStatus(ctx context.Context, tenantID, id uuid.UUID, status, reason string) error {
	return s.execOne(ctx, "set workspace status",
		`UPDATE workspaces SET status = $3, status_reason = $4, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, status, reason)
}

// MarkWorkspaceNotAdmin records that the account lost its administrator right on the workspace
// (Bitbucket refused a hook operation with 403).
func (s *Store) MarkWorkspaceNotAdmin(ctx context.Context, tenantID, id uuid.UUID, reason string) error {
	return s.execOne(ctx, "mark workspace not admin",
		`UPDATE workspaces SET is_admin = false, status = 'no_admin', status_reason = $3, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, reason)
}

// SetWorkspaceWebhook stores the registered hook and its encrypted secret.
func (s *Store) SetWorkspaceWebhook(ctx context.Context, tenantID, id uuid.UUID, hookUUID string, secretEncrypted []byte) error {
	return s.execOne(ctx, "set workspace webhook",
		`UPDATE workspaces SET webhook_uuid = $3, webhook_secret_encrypted = $4, status = 'webhook_registered',
		        status_reason = '', updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, hookUUID, secretEncrypted)
}

// ClearWorkspaceWebhook forgets a hook after it was deleted upstream.
func (s *Store) ClearWorkspaceWebhook(ctx context.Context, tenantID, id uuid.UUID, status, reason string) error {
	return s.execOne(ctx, "clear workspace webhook",
		`UPDATE workspaces SET webhook_uuid = NULL, webhook_secret_encrypted = NULL, status = $3, status_reason = $4, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, id, status, reason)
}

// WorkspaceWebhookSecret returns the encrypted secret of the workspace hook whose UUID is given
// (the receiver verifies deliveries with it).
func (s *Store) WorkspaceWebhookSecret(ctx context.Context, tenantID, installationID uuid.UUID, hookUUID string) ([]byte, error) {
	var enc []byte
	err := s.pool.QueryRow(ctx,
		`SELECT webhook_secret_encrypted FROM workspaces
		  WHERE tenant_id = $1 AND installation_id = $2 AND webhook_uuid = $3 AND webhook_secret_encrypted IS NOT NULL`,
		tenantID, installationID, hookUUID,
	).Scan(&enc)
	if err != nil {
		return nil, fmt.Errorf("webhook %s secret: %w", hookUUID, notFound(err))
	}
	return enc, nil
}

// ListWorkspaces returns an installation's workspaces by slug.
func (s *Store) ListWorkspaces(ctx context.Context, tenantID, installationID uuid.UUID) ([]Workspace, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, tenant_id, installation_id, provider_uuid, slug, name, is_admin, status, status_reason,
		        coalesce(webhook_uuid, ''), updated_at
		   FROM workspaces WHERE tenant_id = $1 AND installation_id = $2 ORDER BY slug, id`,
		tenantID, installationID)
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	defer rows.Close()
	var out []Workspace
	for rows.Next() {
		var w Workspace
		if err := rows.Scan(&w.ID, &w.TenantID, &w.InstallationID, &w.ProviderUUID, &w.Slug, &w.Name, &w.IsAdmin,
			&w.Status, &w.StatusReason, &w.WebhookUUID, &w.UpdatedAt); err != nil {
			return nil, fmt.Errorf("scan workspace: %w", err)
		}
		w.WebhookRegistered = w.WebhookUUID != ""
		out = append(out, w)
	}
	return out, rows.Err()
}

// MarkWorkspacesGone flags workspaces the account no longer sees.
func (s *Store) MarkWorkspacesGone(ctx context.Context, tenantID, installationID uuid.UUID, seenUUIDs []string) (int64, error) {
	tag, err := s.pool.Exec(ctx,
		`UPDATE workspaces SET status = 'gone', status_reason = 'the account no longer sees this workspace', updated_at = now()
		  WHERE tenant_id = $1 AND installation_id = $2 AND NOT (provider_uuid = ANY($3)) AND status <> 'gone'`,
		tenantID, installationID, seenUUIDs)
	if err != nil {
		return 0, fmt.Errorf("mark workspaces gone: %w", err)
	}
	return tag.RowsAffected(), nil
}

func (s *Store) execOne(ctx context.Context, what, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}
