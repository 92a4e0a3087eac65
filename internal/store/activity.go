package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
)

// FailingRepository is a repository whose last backup failed.
type FailingRepository struct {
	RepositoryID uuid.UUID
	FullName     string
	Workspace    string
	// LastBackupAt is the last successful backup (nil: never); FailedAt when the failure was
	// recorded.
	LastBackupAt *time.Time
	FailedAt     *time.Time
	Error        string
}

// FailingRepositories lists the tenant's repositories whose last backup failed, newest failure
// first, at most limit of them, and how many there are in all. Only repositories that are still
// backed up count: included, active upstream, of an installation not being removed. A
// needs_reauth installation's failures stay listed: reconnecting is what fixes them.
func (s *Store) FailingRepositories(ctx context.Context, tenantID uuid.UUID, limit int) ([]FailingRepository, int64, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT r.id, r.full_name, split_part(r.full_name, '/', 1), r.last_backup_at, r.last_checked_at, r.last_backup_error,
		        count(*) OVER ()
		   FROM repositories r JOIN installations i ON i.tenant_id = r.tenant_id AND i.id = r.installation_id
		  WHERE r.tenant_id = $1 AND r.included AND r.status = $2 AND r.last_backup_status = $3
		    AND i.status <> ALL($4::text[])
		  ORDER BY r.last_checked_at DESC NULLS LAST, r.id
		  LIMIT $5`,
		tenantID, domain.RepositoryActive, domain.BackupFailed,
		[]string{domain.InstallationRemoving, domain.InstallationRemoved}, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list failing repositories: %w", err)
	}
	defer rows.Close()
	var out []FailingRepository
	var total int64
	for rows.Next() {
		var f FailingRepository
		if err := rows.Scan(&f.RepositoryID, &f.FullName, &f.Workspace, &f.LastBackupAt, &f.FailedAt, &f.Error, &total); err != nil {
			return nil, 0, fmt.Errorf("scan failing repository: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list failing repositories: %w", err)
	}
	return out, total, nil
}

// RecentSnapshot is a snapshot with the name of its repository.
type RecentSnapshot struct {
	Snapshot
	FullName string
}

// RecentSnapshots pages the tenant's snapshots across its repositories, newest finished first
// (the snapshots_tenant_finished index). The cursor is opaque (from the previous page's next).
func (s *Store) RecentSnapshots(ctx context.Context, tenantID uuid.UUID, cursor string, limit int) ([]RecentSnapshot, string, error) {
	var afterAt time.Time
	var afterID string
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		at, id, ok := strings.Cut(string(raw), "\x00")
		if afterAt, err = time.Parse(time.RFC3339Nano, at); !ok || err != nil || id == "" {
			return nil, "", ErrBadCursor
		}
		afterID = id
	}
	rows, err := s.pool.Query(ctx,
		`SELECT `+snapshotColumns+`,
		        (SELECT r.full_name FROM repositories r WHERE r.tenant_id = snapshots.tenant_id AND r.id = snapshots.repository_id)
		   FROM snapshots
		  WHERE tenant_id = $1 AND ($2 = '' OR (finished_at, id) < ($3, $2))
		  ORDER BY finished_at DESC, id DESC
		  LIMIT $4`,
		tenantID, afterID, afterAt, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list recent snapshots: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RecentSnapshot, error) {
		var name string
		sn, err := scanSnapshot(row, &name)
		return RecentSnapshot{Snapshot: sn, FullName: name}, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list recent snapshots: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[len(out)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.FinishedAt.UTC().Format(time.RFC3339Nano) + "\x00" + last.ID))
	}
	return out, next, nil
}
