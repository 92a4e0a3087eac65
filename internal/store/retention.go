package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// RetentionPolicies returns a repository's own retention policy and its installation's, each as
// the stored policy document or nil when it inherits.
func (s *Store) RetentionPolicies(ctx context.Context, tenantID, repositoryID uuid.UUID) (repo, installation json.RawMessage, err error) {
	err = s.pool.QueryRow(ctx,
		`SELECT r.retention_policy, i.retention_policy
		   FROM repositories r JOIN installations i ON i.id = r.installation_id
		  WHERE r.tenant_id = $1 AND r.id = $2`, tenantID, repositoryID).Scan(&repo, &installation)
	if err != nil {
		return nil, nil, fmt.Errorf("retention policy of repository %s: %w", repositoryID, notFound(err))
	}
	return repo, installation, nil
}

// InstallationRetentionPolicy returns the installation's policy document, nil when it has none.
func (s *Store) InstallationRetentionPolicy(ctx context.Context, tenantID, installationID uuid.UUID) (json.RawMessage, error) {
	var doc json.RawMessage
	err := s.pool.QueryRow(ctx, `SELECT retention_policy FROM installations WHERE tenant_id = $1 AND id = $2`,
		tenantID, installationID).Scan(&doc)
	if err != nil {
		return nil, fmt.Errorf("retention policy of installation %s: %w", installationID, notFound(err))
	}
	return doc, nil
}

// SetInstallationRetentionPolicy stores the installation's policy (nil: GitSec's default).
func (s *Store) SetInstallationRetentionPolicy(ctx context.Context, tenantID, installationID uuid.UUID, doc json.RawMessage) error {
	tag, err := s.pool.Exec(ctx, `UPDATE installations SET retention_policy = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, installationID, nullJSON(doc))
	if err != nil {
		return fmt.Errorf("set retention policy of installation %s: %w", installationID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("installation %s: %w", installationID, ErrNotFound)
	}
	return nil
}

// SetRepositoryRetentionPolicy stores the repository's own policy (nil: inherit the
// installation's).
func (s *Store) SetRepositoryRetentionPolicy(ctx context.Context, tenantID, repositoryID uuid.UUID, doc json.RawMessage) error {
	tag, err := s.pool.Exec(ctx, `UPDATE repositories SET retention_policy = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, nullJSON(doc))
	if err != nil {
		return fmt.Errorf("set retention policy of repository %s: %w", repositoryID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("repository %s: %w", repositoryID, ErrNotFound)
	}
	return nil
}

func nullJSON(doc json.RawMessage) any {
	if len(doc) == 0 {
		return nil
	}
	return []byte(doc)
}

// RetentionRun is the stored outcome of a repository's last retention run.
type RetentionRun struct {
	At     time.Time
	Result json.RawMessage
}

// RecordRetentionRun stores the outcome of a repository's retention run.
func (s *Store) RecordRetentionRun(ctx context.Context, tenantID, repositoryID uuid.UUID, at time.Time, result json.RawMessage) error {
	_, err := s.pool.Exec(ctx, `UPDATE repositories SET retention_ran_at = $3, retention_result = $4 WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID, at, []byte(result))
	if err != nil {
		return fmt.Errorf("record retention run of %s: %w", repositoryID, err)
	}
	return nil
}

// LastRetentionRun returns the repository's last retention run, nil when none ran yet.
func (s *Store) LastRetentionRun(ctx context.Context, tenantID, repositoryID uuid.UUID) (*RetentionRun, error) {
	var at *time.Time
	var result json.RawMessage
	err := s.pool.QueryRow(ctx, `SELECT retention_ran_at, retention_result FROM repositories WHERE tenant_id = $1 AND id = $2`,
		tenantID, repositoryID).Scan(&at, &result)
	if err != nil {
		return nil, fmt.Errorf("retention run of %s: %w", repositoryID, notFound(err))
	}
	if at == nil {
		return nil, nil
	}
	return &RetentionRun{At: *at, Result: result}, nil
}

// SetLegalHold puts a snapshot of the tenant under legal hold (again: the reason is replaced).
func (s *Store) SetLegalHold(ctx context.Context, tenantID uuid.UUID, snapshotID, reason, by string) (Snapshot, error) {
	sn, err := scanSnapshot(s.pool.QueryRow(ctx,
		`UPDATE snapshots SET legal_hold_reason = $3, legal_hold_by = $4, legal_hold_at = now()
		  WHERE tenant_id = $1 AND id = $2 RETURNING `+snapshotColumns, tenantID, snapshotID, reason, by))
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", snapshotID, notFound(err))
	}
	return sn, nil
}

// ReleaseLegalHold lifts a snapshot's legal hold; retention may forget it again.
func (s *Store) ReleaseLegalHold(ctx context.Context, tenantID uuid.UUID, snapshotID string) (Snapshot, error) {
	sn, err := scanSnapshot(s.pool.QueryRow(ctx,
		`UPDATE snapshots SET legal_hold_reason = NULL, legal_hold_by = NULL, legal_hold_at = NULL
		  WHERE tenant_id = $1 AND id = $2 RETURNING `+snapshotColumns, tenantID, snapshotID))
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", snapshotID, notFound(err))
	}
	return sn, nil
}

// LegalHolds maps the repository's snapshots under legal hold to a reason retention reports.
func (s *Store) LegalHolds(ctx context.Context, tenantID, repositoryID uuid.UUID) (map[string]string, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, legal_hold_reason, coalesce(legal_hold_by, '') FROM snapshots
		  WHERE tenant_id = $1 AND repository_id = $2 AND legal_hold_reason IS NOT NULL`, tenantID, repositoryID)
	if err != nil {
		return nil, fmt.Errorf("legal holds of %s: %w", repositoryID, err)
	}
	defer rows.Close()
	holds := map[string]string{}
	for rows.Next() {
		var id, reason, by string
		if err := rows.Scan(&id, &reason, &by); err != nil {
			return nil, fmt.Errorf("scan legal hold: %w", err)
		}
		holds[id] = fmt.Sprintf("legal hold by %s: %s", by, reason)
	}
	return holds, rows.Err()
}

// ForgetSnapshot deletes the row of a snapshot retention forgot (its manifest is gone).
func (s *Store) ForgetSnapshot(ctx context.Context, tenantID, repositoryID uuid.UUID, snapshotID string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM snapshots WHERE tenant_id = $1 AND repository_id = $2 AND id = $3 AND legal_hold_reason IS NULL`,
		tenantID, repositoryID, snapshotID)
	if err != nil {
		return fmt.Errorf("forget snapshot %s: %w", snapshotID, err)
	}
	return nil
}

// RetentionMark is an object a retention run found unreferenced.
type RetentionMark struct {
	Size      int64
	FirstSeen time.Time
	LastError string
}

// RetentionMarks returns the repository's marks by object key.
func (s *Store) RetentionMarks(ctx context.Context, tenantID, repositoryID uuid.UUID) (map[string]RetentionMark, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT object_key, size_bytes, first_seen, last_error FROM retention_marks WHERE tenant_id = $1 AND repository_id = $2`,
		tenantID, repositoryID)
	if err != nil {
		return nil, fmt.Errorf("retention marks of %s: %w", repositoryID, err)
	}
	defer rows.Close()
	marks := map[string]RetentionMark{}
	for rows.Next() {
		var key string
		var m RetentionMark
		if err := rows.Scan(&key, &m.Size, &m.FirstSeen, &m.LastError); err != nil {
			return nil, fmt.Errorf("scan retention mark: %w", err)
		}
		marks[key] = m
	}
	return marks, rows.Err()
}

// ReplaceRetentionMarks makes the repository's marks exactly these.
func (s *Store) ReplaceRetentionMarks(ctx context.Context, tenantID, repositoryID uuid.UUID, marks map[string]RetentionMark) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM retention_marks WHERE tenant_id = $1 AND repository_id = $2`, tenantID, repositoryID); err != nil {
			return fmt.Errorf("clear retention marks: %w", err)
		}
		rows := make([][]any, 0, len(marks))
		for key, m := range marks {
			rows = append(rows, []any{tenantID, repositoryID, key, m.Size, m.FirstSeen, m.LastError})
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"retention_marks"},
			[]string{"tenant_id", "repository_id", "object_key", "size_bytes", "first_seen", "last_error"}, pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("store retention marks: %w", err)
		}
		return nil
	})
}

// RetentionCandidates pages an installation's repositories that have a snapshot, whatever their
// status: excluded and deleted-upstream repositories keep backups that retention ages out too.
func (s *Store) RetentionCandidates(ctx context.Context, tenantID, installationID, after uuid.UUID, limit int) ([]SweepCandidate, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT r.id, r.provider_uuid, r.full_name, r.last_snapshot_id FROM repositories r
		  WHERE r.tenant_id = $1 AND r.installation_id = $2 AND r.id > $3 AND r.last_snapshot_id IS NOT NULL
		  ORDER BY r.id LIMIT $4`, tenantID, installationID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list retention candidates: %w", err)
	}
	defer rows.Close()
	var out []SweepCandidate
	for rows.Next() {
		var c SweepCandidate
		if err := rows.Scan(&c.ID, &c.ProviderUUID, &c.FullName, &c.LastSnapshotID); err != nil {
			return nil, fmt.Errorf("scan retention candidate: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Storage lease kinds: any number of backups may stage at once, a sweep excludes them all.
const (
	LeaseStaging = "staging"
	LeaseSweep   = "sweep"
)

// AcquireStorageLease takes a lease on the repository's storage prefix, or reports (ok false)
// that a conflicting one is held: a staging lease conflicts with a sweep lease, a sweep lease
// with every other lease. A backup holds a staging lease from before it uploads (or finds
// already stored) an object until its draft names it, and a sweep holds its lease while it
// decides what is unreferenced and deletes it; so a sweep never deletes an object a backup is
// about to reference. Leases expire after ttl, so a worker that died never blocks the other
// side for longer; the grace period covers a backup stalled beyond that. Decisions are
// serialised on the repository row; no connection is held in between.
func (s *Store) AcquireStorageLease(ctx context.Context, tenantID, repositoryID uuid.UUID, kind string, ttl time.Duration) (id uuid.UUID, ok bool, err error) {
	if kind != LeaseStaging && kind != LeaseSweep {
		return uuid.Nil, false, fmt.Errorf("unknown storage lease kind %q", kind)
	}
	id = uuid.New()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM repositories WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenantID, repositoryID).Scan(&one); err != nil {
			return fmt.Errorf("repository %s: %w", repositoryID, notFound(err))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM storage_leases WHERE repository_id = $1 AND expires_at < now()`, repositoryID); err != nil {
			return fmt.Errorf("expire storage leases: %w", err)
		}
		var conflicts int
		if err := tx.QueryRow(ctx,
			`SELECT count(*) FROM storage_leases WHERE repository_id = $1 AND ($2 = 'sweep' OR kind = 'sweep')`,
			repositoryID, kind).Scan(&conflicts); err != nil {
			return fmt.Errorf("check storage leases: %w", err)
		}
		if conflicts > 0 {
			return nil
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO storage_leases (id, tenant_id, repository_id, kind, expires_at) VALUES ($1, $2, $3, $4, now() + $5::interval)`,
			id, tenantID, repositoryID, kind, fmt.Sprintf("%d milliseconds", ttl.Milliseconds())); err != nil {
			return fmt.Errorf("take storage lease: %w", err)
		}
		ok = true
		return nil
	})
	if err != nil || !ok {
		return uuid.Nil, false, err
	}
	return id, true, nil
}

// ReleaseStorageLease ends a lease early (it is gone anyway once expired).
func (s *Store) ReleaseStorageLease(ctx context.Context, id uuid.UUID) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM storage_leases WHERE id = $1`, id); err != nil {
		return fmt.Errorf("release storage lease: %w", err)
	}
	return nil
}
