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
	ID             uuid.UUID
	TenantID       uuid.UUID
	InstallationID uuid.UUID
	WorkspaceID    *uuid.UUID
	Workspace      string
	ProviderUUID   string
	FullName       string
	MainBranch     string
	// ProjectKey and ProjectName are the Bitbucket project the repository is in ("" until
	// discovery or a webhook said).
	ProjectKey       string
	ProjectName      string
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
	// SnapshotCount and StoredBytes are filled by ListRepositories, GetRepository and
	// SetRepositoryIncluded only (the dashboard's reads): see repositoryStats.
	SnapshotCount int
	StoredBytes   int64
}

// UpsertRepository records a repository by provider UUID: a rename keeps its row, its inclusion
// and its backups. New rows take the installation's default inclusion. created reports an insert.
// The project is updated as setProject says.
func (s *Store) UpsertRepository(ctx context.Context, r Repository) (id uuid.UUID, created bool, err error) {
	err = s.pool.QueryRow(ctx,
		`INSERT INTO repositories (tenant_id, installation_id, workspace_id, provider_uuid, full_name, main_branch, size_bytes, is_private, included,
		                           project_key, project_name)
		 SELECT $1, $2, $3, $4, $5, $6, $7, $8, i.default_included, $9, $10 FROM installations i WHERE i.tenant_id = $1 AND i.id = $2
		 ON CONFLICT (installation_id, provider_uuid) DO UPDATE
		   SET workspace_id = excluded.workspace_id, full_name = excluded.full_name, main_branch = excluded.main_branch,
		       size_bytes = excluded.size_bytes, is_private = excluded.is_private, status = 'active', updated_at = now(),
		       `+setProject("repositories.", "excluded.project_key", "excluded.project_name")+`
		 WHERE repositories.tenant_id = excluded.tenant_id
		 RETURNING id, (xmax = 0)`,
		r.TenantID, r.InstallationID, r.WorkspaceID, r.ProviderUUID, r.FullName, r.MainBranch, r.SizeBytes, r.IsPrivate,
		r.ProjectKey, r.ProjectName,
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
	// BackupStatuses keeps the repositories whose last_backup_status is one of these (the
	// domain.Backup* values); empty keeps every one.
	BackupStatuses []string
	Cursor         string
	Limit          int
}

// RepositoryPage is one page of ListRepositories.
type RepositoryPage struct {
	Repositories []Repository
	// NextCursor continues after the page; "" on the last page.
	NextCursor string
	// Total counts every repository the filter matches, on all pages.
	Total int64
}

// ErrBadCursor means the cursor was not produced by ListRepositories.
var ErrBadCursor = errors.New("invalid cursor")

const repositoryColumns = `r.id, r.tenant_id, r.installation_id, r.workspace_id, split_part(r.full_name, '/', 1), r.provider_uuid,
	r.full_name, r.main_branch, r.size_bytes, r.is_private, r.included, r.status, r.last_backup_status,
	r.last_backup_at, r.last_checked_at, r.last_snapshot_id, r.created_at, r.updated_at, r.mirror_host,
	r.last_backup_error, (SELECT i.status FROM installations i WHERE i.id = r.installation_id),
	r.last_push_at, r.backed_up_through, r.project_key, r.project_name`

// repositoryStats adds a repository's snapshot count and stored bytes to a query over
// "repositories r" (select st.snapshots, st.stored_bytes). It reads the snapshots_repository
// index once per repository row it is joined to, so a page query joins it after its LIMIT
// (never to every row of the tenant). Stored bytes sum bytes_uploaded: each snapshot uploads
// only the packs its fetch wrote, so the sum is what the repository occupies in object storage,
// where total_bytes would count the shared packs of every snapshot again.
const repositoryStats = ` LEFT JOIN LATERAL (
	SELECT count(*) AS snapshots, coalesce(sum(s.bytes_uploaded), 0)::bigint AS stored_bytes
	  FROM snapshots s WHERE s.tenant_id = r.tenant_id AND s.repository_id = r.id) st ON true`

func scanRepository(row pgx.Row, extra ...any) (Repository, error) {
	var r Repository
	dest := []any{&r.ID, &r.TenantID, &r.InstallationID, &r.WorkspaceID, &r.Workspace, &r.ProviderUUID, &r.FullName,
		&r.MainBranch, &r.SizeBytes, &r.IsPrivate, &r.Included, &r.Status, &r.LastBackupStatus, &r.LastBackupAt,
		&r.LastCheckedAt, &r.LastSnapshotID, &r.CreatedAt, &r.UpdatedAt, &r.MirrorHost,
		&r.LastBackupError, &r.InstallationStatus, &r.LastPushAt, &r.BackedUpThrough, &r.ProjectKey, &r.ProjectName}
	err := row.Scan(append(dest, extra...)...)
	return r, err
}

// scanRepositoryStats scans repositoryColumns followed by st.snapshots, st.stored_bytes.
func scanRepositoryStats(row pgx.Row) (Repository, error) {
	var n int
	var bytes int64
	r, err := scanRepository(row, &n, &bytes)
	r.SnapshotCount, r.StoredBytes = n, bytes
	return r, err
}

// repositoryFilterSQL is the WHERE clause of RepositoryFilter over "repositories r", on the
// parameters $1 (tenant) to $6, shared by the page and its total so that both always agree.
const repositoryFilterSQL = `r.tenant_id = $1
	    AND ($2::uuid IS NULL OR r.installation_id = $2)
	    AND ($3 = '' OR split_part(r.full_name, '/', 1) = $3)
	    AND ($4::boolean IS NULL OR r.included = $4)
	    AND ($5 = '' OR r.full_name ILIKE '%' || $5 || '%')
	    AND (coalesce(cardinality($6::text[]), 0) = 0 OR r.last_backup_status = ANY($6::text[]))`

// ListRepositories pages the tenant's repositories in (full_name, id) order, which stays stable
// while rows are added, with each one's snapshot count and stored bytes and the number of
// repositories the filter matches. The page is one query and the total another: two index
// scans over the tenant's rows, whatever the page size (no query per repository).
func (s *Store) ListRepositories(ctx context.Context, tenantID uuid.UUID, f RepositoryFilter) (RepositoryPage, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var afterName string
	var afterID uuid.UUID
	if f.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil {
			return RepositoryPage{}, ErrBadCursor
		}
		name, id, ok := strings.Cut(string(raw), "\x00")
		if afterID, err = uuid.Parse(id); !ok || err != nil {
			return RepositoryPage{}, ErrBadCursor
		}
		afterName = name
	}
	args := []any{tenantID, f.InstallationID, f.Workspace, f.Included, escapeLike(f.Query), f.BackupStatuses}
	var page RepositoryPage
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM repositories r WHERE `+repositoryFilterSQL, args...).Scan(&page.Total); err != nil {
		return RepositoryPage{}, fmt.Errorf("count repositories: %w", err)
	}
	// The inner query picks the page by the (tenant_id, full_name, id) index; the snapshot
	// statistics are joined to its rows only.
	rows, err := s.pool.Query(ctx,
		`SELECT `+repositoryColumns+`, st.snapshots, st.stored_bytes
		   FROM (SELECT * FROM repositories r
		          WHERE `+repositoryFilterSQL+`
		            AND ($7 = '' OR (r.full_name, r.id) > ($7, $8::uuid))
		          ORDER BY r.full_name, r.id
		          LIMIT $9) r`+repositoryStats+`
		  ORDER BY r.full_name, r.id`,
		append(args, afterName, afterID, f.Limit+1)...)
	if err != nil {
		return RepositoryPage{}, fmt.Errorf("list repositories: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRepositoryStats(rows)
		if err != nil {
			return RepositoryPage{}, fmt.Errorf("scan repository: %w", err)
		}
		page.Repositories = append(page.Repositories, r)
	}
	if err := rows.Err(); err != nil {
		return RepositoryPage{}, fmt.Errorf("list repositories: %w", err)
	}
	if len(page.Repositories) > f.Limit {
		page.Repositories = page.Repositories[:f.Limit]
		last := page.Repositories[len(page.Repositories)-1]
		page.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(last.FullName + "\x00" + last.ID.String()))
	}
	return page, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// GetRepository returns one repository of the tenant with its snapshot statistics.
func (s *Store) GetRepository(ctx context.Context, tenantID, id uuid.UUID) (Repository, error) {
	r, err := scanRepositoryStats(s.pool.QueryRow(ctx,
		`SELECT `+repositoryColumns+`, st.snapshots, st.stored_bytes FROM repositories r`+repositoryStats+`
		  WHERE r.tenant_id = $1 AND r.id = $2`, tenantID, id))
	if err != nil {
		return Repository{}, fmt.Errorf("repository %s: %w", id, notFound(err))
	}
	return r, nil
}

// SetRepositoryIncluded includes or excludes one repository; existing snapshots are untouched.
func (s *Store) SetRepositoryIncluded(ctx context.Context, tenantID, id uuid.UUID, included bool) (Repository, error) {
	r, err := scanRepositoryStats(s.pool.QueryRow(ctx,
		`WITH r AS (UPDATE repositories r SET included = $3, updated_at = now() WHERE r.tenant_id = $1 AND r.id = $2 RETURNING r.*)
		 SELECT `+repositoryColumns+`, st.snapshots, st.stored_bytes FROM r`+repositoryStats, tenantID, id, included))
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

// Project is the Bitbucket project a repository is in; a zero Project means "not told" and
// keeps what is stored.
type Project struct {
	Key, Name string
}

// setProject is the SET clause that records a project told as key and name (SQL expressions)
// over the row's columns (prefix: "" or the table's name and a dot). An empty key was not told
// (webhook payloads may carry no project) and keeps the stored project; an empty name with a
// key (Atlassian's documented repo:updated has none) keeps the stored name while the key is
// the same, and clears it when the key changed, since it names the old project.
func setProject(prefix, key, name string) string {
	return `project_key = CASE WHEN ` + key + ` <> '' THEN ` + key + ` ELSE ` + prefix + `project_key END,
		project_name = CASE WHEN ` + key + ` = '' THEN ` + prefix + `project_name WHEN ` + name + ` <> '' THEN ` + name + `
		                    WHEN ` + key + ` = ` + prefix + `project_key THEN ` + prefix + `project_name ELSE '' END`
}

// RenameRepository records a repository's new workspace/slug (and project), found by its
// provider UUID.
func (s *Store) RenameRepository(ctx context.Context, tenantID uuid.UUID, providerUUID, fullName string, project Project) error {
	return s.execOne(ctx, "rename repository",
		`UPDATE repositories SET full_name = $3, status = 'active', updated_at = now(),
		        `+setProject("", "$4", "$5")+`
		  WHERE tenant_id = $1 AND provider_uuid = $2`, tenantID, providerUUID, fullName, project.Key, project.Name)
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

// BackupProgress is where a repository's backups stand, as BackupProgressOf reads it.
type BackupProgress struct {
	BackedUpThrough *time.Time
	LastStatus      string
	LastError       string
	LastCheckedAt   *time.Time
}

// BackupProgressOf reads the backup progress of many repositories of a tenant in one query (the
// benchmark follows hundreds of concurrent backups with it).
func (s *Store) BackupProgressOf(ctx context.Context, tenantID uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]BackupProgress, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, backed_up_through, last_backup_status, last_backup_error, last_checked_at
		   FROM repositories WHERE tenant_id = $1 AND id = ANY($2)`, tenantID, ids)
	if err != nil {
		return nil, fmt.Errorf("read backup progress: %w", err)
	}
	defer rows.Close()
	out := make(map[uuid.UUID]BackupProgress, len(ids))
	for rows.Next() {
		var id uuid.UUID
		var p BackupProgress
		if err := rows.Scan(&id, &p.BackedUpThrough, &p.LastStatus, &p.LastError, &p.LastCheckedAt); err != nil {
			return nil, fmt.Errorf("read backup progress: %w", err)
		}
		out[id] = p
	}
	return out, rows.Err()
}

// MoveRepository records a repository's new name, workspace and project (a rename, a move to
// another project, or a transfer between two of the installation's workspaces); the row, its
// inclusion and its backups stay. A nil workspaceID or a zero project keeps the stored one.
func (s *Store) MoveRepository(ctx context.Context, tenantID, repositoryID uuid.UUID, fullName string, workspaceID *uuid.UUID, project Project) error {
	return s.execOne(ctx, "move repository",
		`UPDATE repositories SET full_name = $3, workspace_id = coalesce($4, workspace_id), status = 'active', updated_at = now(),
		        `+setProject("", "$5", "$6")+`
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, fullName, workspaceID, project.Key, project.Name)
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
