package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Repository is one upstream repository known through an installation.
type Repository struct {
	ID               uuid.UUID
	TenantID         uuid.UUID
	InstallationID   uuid.UUID
	WorkspaceID      *uuid.UUID
	Workspace        string
	ProviderUUID     string
	FullName         string
	MainBranch       string
	SizeBytes        int64
	IsPrivate        bool
	Included         bool
	Status           string
	LastBackupStatus string
	// LastBackupError is why the last backup failed ("" after a good one).
	LastBackupError string
	LastBackupAt    *time.Time
	LastCheckedAt   *time.Time
	MirrorHost      string
	// InstallationStatus is the status of the installation the repository belongs to: backups
	// and backup requests stop once it is removed (see BackupsStopped).
	InstallationStatus string
	LastSnapshotID     *string
	// LastPushAt is when the last push was received (a webhook); BackedUpThrough is when the last
	// successful backup run started: a push received before it is in that backup.
	LastPushAt      *time.Time
	BackedUpThrough *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// UpsertRepository records a repository by provider UUID: a rename keeps its row, its inclusion
// and its backups. New rows take the installation's default inclusion. created reports an insert.
func (s *Store) UpsertRepository(ctx context.Context, r Repository) (id uuid.UUID, created bool, err error) {
	err = s.pool.QueryRow(ctx,
		`INSERT INTO repositories (tenant_id, installation_id, workspace_id, provider_uuid, full_name, main_branch, size_bytes, is_private, included)
		 SELECT $1, $2, $3, $4, $5, $6, $7, $8, i.default_included FROM installations i WHERE i.tenant_id = $1 AND i.id = $2
		 ON CONFLICT (installation_id, provider_uuid) DO UPDATE
		   SET workspace_id = excluded.workspace_id, full_name = excluded.full_name, main_branch = excluded.main_branch,
		       size_bytes = excluded.size_bytes, is_private = excluded.is_private, status = 'active', updated_at = now()
		 WHERE repositories.tenant_id = excluded.tenant_id
		 RETURNING id, (xmax = 0)`,
		r.TenantID, r.InstallationID, r.WorkspaceID, r.ProviderUUID, r.FullName, r.MainBranch, r.SizeBytes, r.IsPrivate,
	).Scan(&id, &created)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("upsert repository %s: %w", r.FullName, notFound(err))
	}
	return id, created, nil
}

// MarkRepositoriesDeletedUpstream flags the workspace's repositories that a full listing did not
// return. Their rows and backups are kept.
func (s *Store) MarkRepositoriesDeletedUpstream(ctx context.Context, tenantID, installationID, workspaceID uuid.UUID, seenUUIDs []string) (int64, error) {
	tag, err := s.pool.Exec(ctx,
		`UPDATE repositories SET status = 'deleted_upstream', updated_at = now()
		  WHERE tenant_id = $1 AND installation_id = $2 AND workspace_id = $3
		    AND NOT (provider_uuid = ANY($4)) AND status <> 'deleted_upstream'`,
		tenantID, installationID, workspaceID, seenUUIDs)
	if err != nil {
		return 0, fmt.Errorf("mark deleted repositories: %w", err)
	}
	return tag.RowsAffected(), nil
}

// MarkIncludedPendingBackup flags the included active repositories that were never backed up.
func (s *Store) MarkIncludedPendingBackup(ctx context.Context, tenantID, installationID uuid.UUID) (int64, error) {
	tag, err := s.pool.Exec(ctx,
		`UPDATE repositories SET last_backup_status = 'pending_backup', updated_at = now()
		  WHERE tenant_id = $1 AND installation_id = $2 AND included AND status = 'active' AND last_backup_status = 'never'`,
		tenantID, installationID)
	if err != nil {
		return 0, fmt.Errorf("mark repositories pending backup: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RepositoryFilter selects and pages repositories. Cursor is opaque (from NextCursor).
type RepositoryFilter struct {
	InstallationID *uuid.UUID
	Workspace      string
	Included       *bool
	Query          string
	Cursor         string
	Limit          int
}

// ErrBadCursor means the cursor was not produced by ListRepositories.
var ErrBadCursor = errors.New("invalid cursor")

const repositoryColumns = `r.id, r.tenant_id, r.installation_id, r.workspace_id, split_part(r.full_name, '/', 1), r.provider_uuid,
	r.full_name, r.main_branch, r.size_bytes, r.is_private, r.included, r.status, r.last_backup_status,
	r.last_backup_at, r.last_checked_at, r.last_snapshot_id, r.created_at, r.updated_at, r.mirror_host,
	r.last_backup_error, (SELECT i.status FROM installations i WHERE i.id = r.installation_id),
	r.last_push_at, r.backed_up_through`

func scanRepository(row pgx.Row) (Repository, error) {
	var r Repository
	err := row.Scan(&r.ID, &r.TenantID, &r.InstallationID, &r.WorkspaceID, &r.Workspace, &r.ProviderUUID, &r.FullName,
		&r.MainBranch, &r.SizeBytes, &r.IsPrivate, &r.Included, &r.Status, &r.LastBackupStatus, &r.LastBackupAt,
		&r.LastCheckedAt, &r.LastSnapshotID, &r.CreatedAt, &r.UpdatedAt, &r.MirrorHost,
		&r.LastBackupError, &r.InstallationStatus, &r.LastPushAt, &r.BackedUpThrough)
	return r, err
}

// ListRepositories pages the tenant's repositories in (full_name, id) order, which stays stable
// while rows are added. It returns the cursor of the next page, or "" on the last page.
func (s *Store) ListRepositories(ctx context.Context, tenantID uuid.UUID, f RepositoryFilter) ([]Repository, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var afterName string
	var afterID uuid.UUID
	if f.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		name, id, ok := strings.Cut(string(raw), "\x00")
		if afterID, err = uuid.Parse(id); !ok || err != nil {
			return nil, "", ErrBadCursor
		}
		afterName = name
	}
	rows, err := s.pool.Query(ctx,
		`SELECT `+repositoryColumns+` FROM repositories r
		  WHERE r.tenant_id = $1
		    AND ($2::uuid IS NULL OR r.installation_id = $2)
		    AND ($3 = '' OR split_part(r.full_name, '/', 1) = $3)
		    AND ($4::boolean IS NULL OR r.included = $4)
		    AND ($5 = '' OR r.full_name ILIKE '%' || $5 || '%')
		    AND ($6 = '' OR (r.full_name, r.id) > ($6, $7::uuid))
		  ORDER BY r.full_name, r.id
		  LIMIT $8`,
		tenantID, f.InstallationID, f.Workspace, f.Included, escapeLike(f.Query), afterName, afterID, f.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list repositories: %w", err)
	}
	defer rows.Close()
	var out []Repository
	for rows.Next() {
		r, err := scanRepository(rows)
		if err != nil {
			return nil, "", fmt.Errorf("scan repository: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > f.Limit {
		out = out[:f.Limit]
		last := out[len(out)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.FullName + "\x00" + last.ID.String()))
	}
	return out, next, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// GetRepository returns one repository of the tenant.
func (s *Store) GetRepository(ctx context.Context, tenantID, id uuid.UUID) (Repository, error) {
	r, err := scanRepository(s.pool.QueryRow(ctx,
		`SELECT `+repositoryColumns+` FROM repositories r WHERE r.tenant_id = $1 AND r.id = $2`, tenantID, id))
	if err != nil {
		return Repository{}, fmt.Errorf("repository %s: %w", id, notFound(err))
	}
	return r, nil
}

// SetRepositoryIncluded includes or excludes one repository; existing snapshots are untouched.
func (s *Store) SetRepositoryIncluded(ctx context.Context, tenantID, id uuid.UUID, included bool) (Repository, error) {
	r, err := scanRepository(s.pool.QueryRow(ctx,
		`UPDATE repositories r SET included = $3, updated_at = now() WHERE r.tenant_id = $1 AND r.id = $2
		 RETURNING `+repositoryColumns, tenantID, id, included))
	if err != nil {
		return Repository{}, fmt.Errorf("repository %s: %w", id, notFound(err))
	}
	return r, nil
}

// SetIncludedByFullName sets inclusion for the named repositories of an installation and
// returns how many rows changed.
func (s *Store) SetIncludedByFullName(ctx context.Context, tenantID, installationID uuid.UUID, fullNames []string, included bool) (int64, error) {
	tag, err := s.pool.Exec(ctx,
		`UPDATE repositories SET included = $4, updated_at = now()
		  WHERE tenant_id = $1 AND installation_id = $2 AND full_name = ANY($3) AND included <> $4`,
		tenantID, installationID, fullNames, included)
	if err != nil {
		return 0, fmt.Errorf("set inclusion: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RepositoryNames lists the full names of an installation's repositories (for pattern matching).
func (s *Store) RepositoryNames(ctx context.Context, tenantID, installationID uuid.UUID) ([]string, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT full_name FROM repositories WHERE tenant_id = $1 AND installation_id = $2 ORDER BY full_name`,
		tenantID, installationID)
	if err != nil {
		return nil, fmt.Errorf("list repository names: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list repository names: %w", err)
	}
	return names, nil
}

// RenameRepository records a repository's new workspace/slug, found by its provider UUID.
func (s *Store) RenameRepository(ctx context.Context, tenantID uuid.UUID, providerUUID, fullName string) error {
	return s.execOne(ctx, "rename repository",
		`UPDATE repositories SET full_name = $3, status = 'active', updated_at = now()
		  WHERE tenant_id = $1 AND provider_uuid = $2`, tenantID, providerUUID, fullName)
}

// Behind reports a push received after the start of the last successful backup run: that push
// is not known to be in any snapshot yet.
func (r Repository) Behind() bool {
	return r.LastPushAt != nil && (r.BackedUpThrough == nil || r.LastPushAt.After(*r.BackedUpThrough))
}

// RepositoryByProviderUUID finds an installation's repository by the provider's UUID (braces and
// case as Bitbucket spells them anywhere).
func (s *Store) RepositoryByProviderUUID(ctx context.Context, tenantID, installationID uuid.UUID, providerUUID string) (Repository, error) {
	r, err := scanRepository(s.pool.QueryRow(ctx,
		`SELECT `+repositoryColumns+` FROM repositories r
		  WHERE r.tenant_id = $1 AND r.installation_id = $2 AND lower(btrim(r.provider_uuid, '{}')) = $3`,
		tenantID, installationID, NormalizeHookUUID(providerUUID)))
	if err != nil {
		return Repository{}, fmt.Errorf("repository %s: %w", providerUUID, notFound(err))
	}
	return r, nil
}

// RecordPush notes that a push to the repository was received at at; an older delivery that
// arrives late never moves it back.
func (s *Store) RecordPush(ctx context.Context, tenantID, repositoryID uuid.UUID, at time.Time) error {
	return s.execOne(ctx, "record push",
		`UPDATE repositories SET last_push_at = GREATEST(last_push_at, $3) WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, at)
}

// RecordBackedUpThrough notes that a successful backup run started at at (see Behind).
func (s *Store) RecordBackedUpThrough(ctx context.Context, tenantID, repositoryID uuid.UUID, at time.Time) error {
	return s.execOne(ctx, "record backed-up-through",
		`UPDATE repositories SET backed_up_through = GREATEST(backed_up_through, $3) WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, at)
}

// MoveRepository records a repository's new name and workspace (a rename or a transfer between
// two of the installation's workspaces); the row, its inclusion and its backups stay.
func (s *Store) MoveRepository(ctx context.Context, tenantID, repositoryID uuid.UUID, fullName string, workspaceID *uuid.UUID) error {
	return s.execOne(ctx, "move repository",
		`UPDATE repositories SET full_name = $3, workspace_id = coalesce($4, workspace_id), status = 'active', updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, fullName, workspaceID)
}

// WorkspaceByProvider finds an installation's workspace by the provider's UUID or, when that is
// unknown, by slug.
func (s *Store) WorkspaceByProvider(ctx context.Context, tenantID, installationID uuid.UUID, providerUUID, slug string) (Workspace, error) {
	var w Workspace
	err := s.pool.QueryRow(ctx,
		`SELECT id, tenant_id, installation_id, provider_uuid, slug, name, is_admin, status, status_reason,
		        coalesce(webhook_uuid, ''), updated_at
		   FROM workspaces
		  WHERE tenant_id = $1 AND installation_id = $2
		    AND (($3 <> '' AND lower(btrim(provider_uuid, '{}')) = $3) OR ($3 = '' AND slug = $4))
		  LIMIT 1`,
		tenantID, installationID, NormalizeHookUUID(providerUUID), slug,
	).Scan(&w.ID, &w.TenantID, &w.InstallationID, &w.ProviderUUID, &w.Slug, &w.Name, &w.IsAdmin,
		&w.Status, &w.StatusReason, &w.WebhookUUID, &w.UpdatedAt)
	if err != nil {
		return Workspace{}, fmt.Errorf("workspace %s: %w", slug, notFound(err))
	}
	w.WebhookRegistered = w.WebhookUUID != ""
	return w, nil
}

// SetMirrorHost records which worker's host queue keeps the repository's mirror.
func (s *Store) SetMirrorHost(ctx context.Context, tenantID, repositoryID uuid.UUID, host string) error {
	return s.execOne(ctx, "set mirror host",
		`UPDATE repositories SET mirror_host = $3 WHERE tenant_id = $1 AND id = $2`, tenantID, repositoryID, host)
}
