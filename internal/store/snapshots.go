package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
)

// Snapshot is the dashboard's row for one manifest in object storage.
type Snapshot struct {
	ID            string
	TenantID      uuid.UUID
	RepositoryID  uuid.UUID
	ManifestKey   string
	Trigger       domain.TriggerKind
	ParentID      *string
	RefsCount     int
	PacksCount    int
	BytesUploaded int64
	TotalBytes    int64
	StartedAt     time.Time
	FinishedAt    time.Time
	DurationMS    int64
	// PushedAt is when the oldest push this webhook-triggered snapshot covers was received.
	PushedAt *time.Time
	// LegalHold is set while the snapshot is under legal hold: retention never forgets it.
	LegalHold *LegalHold
}

// LegalHold says who put a snapshot under legal hold, when and why.
type LegalHold struct {
	Reason string
	By     string
	At     time.Time
}

// RecordSnapshot stores a snapshot row and marks the repository backed up, in one
// transaction. Recording the same snapshot twice (an activity retry) is harmless, and so is
// recording an older one late (reconciling rows a failed record left out): the repository's
// last snapshot only ever moves forward. Snapshot IDs sort in history order bytewise, hence
// the C collation.
func (s *Store) RecordSnapshot(ctx context.Context, sn Snapshot) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx,
			`INSERT INTO snapshots (id, tenant_id, repository_id, manifest_key, trigger, parent_id, refs_count,
			                        packs_count, bytes_uploaded, total_bytes, started_at, finished_at, pushed_at)
			 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
			   FROM repositories r WHERE r.tenant_id = $2 AND r.id = $3
			 ON CONFLICT (id) DO UPDATE SET pushed_at = coalesce(snapshots.pushed_at, excluded.pushed_at)
			  WHERE snapshots.tenant_id = excluded.tenant_id`,
			sn.ID, sn.TenantID, sn.RepositoryID, sn.ManifestKey, sn.Trigger, sn.ParentID, sn.RefsCount,
			sn.PacksCount, sn.BytesUploaded, sn.TotalBytes, sn.StartedAt, sn.FinishedAt, sn.PushedAt)
		if err != nil {
			return fmt.Errorf("record snapshot %s: %w", sn.ID, err)
		}
		tag, err := tx.Exec(ctx,
			`UPDATE repositories
			    SET last_snapshot_id = CASE WHEN last_snapshot_id IS NULL OR last_snapshot_id COLLATE "C" < $3 THEN $3
			                                ELSE last_snapshot_id END,
			        last_backup_status = 'succeeded', last_backup_error = '', last_backup_at = GREATEST(last_backup_at, $4),
			        last_checked_at = GREATEST(last_checked_at, $4), updated_at = now()
			  WHERE tenant_id = $1 AND id = $2`,
			sn.TenantID, sn.RepositoryID, sn.ID, sn.FinishedAt)
		if err != nil {
			return fmt.Errorf("record snapshot %s: %w", sn.ID, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("repository %s: %w", sn.RepositoryID, ErrNotFound)
		}
		return nil
	})
}

// RecordBackupCheck records a run that found nothing to back up.
func (s *Store) RecordBackupCheck(ctx context.Context, tenantID, repositoryID uuid.UUID, status string, at time.Time) error {
	return s.execOne(ctx, "record backup check",
		`UPDATE repositories SET last_backup_status = CASE WHEN $3 = 'unchanged' AND last_snapshot_id IS NOT NULL THEN 'succeeded' ELSE $3 END,
		        last_backup_error = '', last_checked_at = $4, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, status, at)
}

// maxBackupErrorLen bounds the stored reason; the full error is in the workflow's history.
const maxBackupErrorLen = 1000

// RecordBackupFailure records a failed run and why it failed, for the dashboard.
func (s *Store) RecordBackupFailure(ctx context.Context, tenantID, repositoryID uuid.UUID, reason string, at time.Time) error {
	if len(reason) > maxBackupErrorLen {
		reason = strings.ToValidUTF8(reason[:maxBackupErrorLen], "") + "…"
	}
	return s.execOne(ctx, "record backup failure",
		`UPDATE repositories SET last_backup_status = 'failed', last_backup_error = $3, last_checked_at = $4, updated_at = now()
		  WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, reason, at)
}

// MarkRepositoryDeletedUpstream flags a repository Bitbucket no longer has; backups are kept.
func (s *Store) MarkRepositoryDeletedUpstream(ctx context.Context, tenantID, repositoryID uuid.UUID) error {
	return s.execOne(ctx, "mark repository deleted upstream",
		`UPDATE repositories SET status = 'deleted_upstream', updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID)
}

const snapshotColumns = `id, tenant_id, repository_id, manifest_key, trigger, parent_id, refs_count, packs_count,
	bytes_uploaded, total_bytes, started_at, finished_at, pushed_at, legal_hold_reason, legal_hold_by, legal_hold_at`

// scanSnapshot scans snapshotColumns and then extra, the columns a query adds after them.
func scanSnapshot(row pgx.Row, extra ...any) (Snapshot, error) {
	var sn Snapshot
	var holdReason, holdBy *string
	var holdAt *time.Time
	err := row.Scan(append([]any{&sn.ID, &sn.TenantID, &sn.RepositoryID, &sn.ManifestKey, &sn.Trigger, &sn.ParentID, &sn.RefsCount,
		&sn.PacksCount, &sn.BytesUploaded, &sn.TotalBytes, &sn.StartedAt, &sn.FinishedAt, &sn.PushedAt, &holdReason, &holdBy, &holdAt}, extra...)...)
	if holdReason != nil && holdAt != nil {
		sn.LegalHold = &LegalHold{Reason: *holdReason, At: *holdAt}
		if holdBy != nil {
			sn.LegalHold.By = *holdBy
		}
	}
	sn.DurationMS = sn.FinishedAt.Sub(sn.StartedAt).Milliseconds()
	return sn, err
}

// ListSnapshots pages a repository's snapshots newest first; before is the last ID seen.
func (s *Store) ListSnapshots(ctx context.Context, tenantID, repositoryID uuid.UUID, before string, limit int) ([]Snapshot, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+snapshotColumns+` FROM snapshots
		  WHERE tenant_id = $1 AND repository_id = $2 AND ($3 = '' OR id < $3)
		  ORDER BY id DESC LIMIT $4`, tenantID, repositoryID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("scan snapshot: %w", err)
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// GetSnapshot returns one snapshot of the tenant.
func (s *Store) GetSnapshot(ctx context.Context, tenantID uuid.UUID, id string) (Snapshot, error) {
	sn, err := scanSnapshot(s.pool.QueryRow(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", id, notFound(err))
	}
	return sn, nil
}

// BackupCandidates lists an installation's included, active repositories.
func (s *Store) BackupCandidates(ctx context.Context, tenantID, installationID uuid.UUID) ([]Repository, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+repositoryColumns+` FROM repositories r
		  WHERE r.tenant_id = $1 AND r.installation_id = $2 AND r.included AND r.status = 'active'
		  ORDER BY r.full_name, r.id`, tenantID, installationID)
	if err != nil {
		return nil, fmt.Errorf("list backup candidates: %w", err)
	}
	defer rows.Close()
	var out []Repository
	for rows.Next() {
		r, err := scanRepository(rows)
		if err != nil {
			return nil, fmt.Errorf("scan repository: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
