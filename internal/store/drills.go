package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
)

// DrillStep is one step of a restore drill: what it checked, how it ended and how long it took.
type DrillStep struct {
	Name       string `json:"name"`
	Status     string `json:"status"`
	DurationMS int64  `json:"duration_ms"`
	Detail     string `json:"detail,omitempty"`
}

// Drill is one restore drill of a snapshot.
type Drill struct {
	ID           uuid.UUID
	TenantID     uuid.UUID
	RepositoryID uuid.UUID
	SnapshotID   string
	WorkflowID   string
	Trigger      domain.TriggerKind
	Status       string
	Reason       string
	Steps        []DrillStep
	StartedAt    time.Time
	FinishedAt   *time.Time
	// FullName is the repository's, for alerts.
	FullName string
}

// DurationMS is how long a finished drill took (0 while it runs).
func (d Drill) DurationMS() int64 {
	if d.FinishedAt == nil {
		return 0
	}
	return d.FinishedAt.Sub(d.StartedAt).Milliseconds()
}

// StartDrill records a running drill of one of the repository's snapshots. Recording it again
// (the API and the workflow both do, and activities retry) keeps the first row. A snapshot that
// is not the tenant's repository's is ErrNotFound.
func (s *Store) StartDrill(ctx context.Context, d Drill) error {
	if d.StartedAt.IsZero() {
		d.StartedAt = time.Now()
	}
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO restore_drills (id, tenant_id, repository_id, snapshot_id, workflow_id, trigger, status, started_at)
		 SELECT $1, $2, $3, sn.id, $5, $6, $7, $8 FROM snapshots sn
		  WHERE sn.tenant_id = $2 AND sn.repository_id = $3 AND sn.id = $4
		 ON CONFLICT (id) DO NOTHING`,
		d.ID, d.TenantID, d.RepositoryID, d.SnapshotID, d.WorkflowID, d.Trigger, domain.DrillRunning, d.StartedAt)
	if err != nil {
		return fmt.Errorf("record drill %s: %w", d.ID, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.GetDrill(ctx, d.TenantID, d.ID); err != nil {
			return fmt.Errorf("snapshot %s of repository %s: %w", d.SnapshotID, d.RepositoryID, ErrNotFound)
		}
	}
	return nil
}

// FinishDrill records a drill's outcome. A drill finishes once: a retried finish changes
// nothing and reports finished false.
func (s *Store) FinishDrill(ctx context.Context, tenantID, id uuid.UUID, status, reason string, steps []DrillStep, at time.Time) (finished bool, err error) {
	if len(reason) > maxBackupErrorLen {
		reason = strings.ToValidUTF8(reason[:maxBackupErrorLen], "") + "…"
	}
	if steps == nil {
		steps = []DrillStep{}
	}
	raw, err := json.Marshal(steps)
	if err != nil {
		return false, fmt.Errorf("finish drill %s: %w", id, err)
	}
	tag, err := s.pool.Exec(ctx,
		`UPDATE restore_drills SET status = $3, reason = $4, steps = $5, finished_at = GREATEST($6, started_at)
		  WHERE tenant_id = $1 AND id = $2 AND finished_at IS NULL`,
		tenantID, id, status, reason, raw, at)
	if err != nil {
		return false, fmt.Errorf("finish drill %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

const drillColumns = `d.id, d.tenant_id, d.repository_id, d.snapshot_id, d.workflow_id, d.trigger, d.status, d.reason,
	d.steps, d.started_at, d.finished_at, r.full_name`

const drillFrom = ` FROM restore_drills d JOIN repositories r ON r.id = d.repository_id `

func scanDrill(row pgx.Row) (Drill, error) {
	var d Drill
	var steps []byte
	if err := row.Scan(&d.ID, &d.TenantID, &d.RepositoryID, &d.SnapshotID, &d.WorkflowID, &d.Trigger, &d.Status, &d.Reason,
		&steps, &d.StartedAt, &d.FinishedAt, &d.FullName); err != nil {
		return Drill{}, err
	}
	if err := json.Unmarshal(steps, &d.Steps); err != nil {
		return Drill{}, fmt.Errorf("drill %s steps: %w", d.ID, err)
	}
	return d, nil
}

func (s *Store) queryDrills(ctx context.Context, what, sql string, args ...any) ([]Drill, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []Drill
	for rows.Next() {
		d, err := scanDrill(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDrill returns one drill of the tenant.
func (s *Store) GetDrill(ctx context.Context, tenantID, id uuid.UUID) (Drill, error) {
	d, err := scanDrill(s.pool.QueryRow(ctx, `SELECT `+drillColumns+drillFrom+`WHERE d.tenant_id = $1 AND d.id = $2`, tenantID, id))
	if err != nil {
		return Drill{}, fmt.Errorf("drill %s: %w", id, notFound(err))
	}
	return d, nil
}

// ListDrills returns a repository's most recent drills, newest first.
func (s *Store) ListDrills(ctx context.Context, tenantID, repositoryID uuid.UUID, limit int) ([]Drill, error) {
	return s.queryDrills(ctx, "list drills",
		`SELECT `+drillColumns+drillFrom+`WHERE d.tenant_id = $1 AND d.repository_id = $2
		  ORDER BY d.started_at DESC, d.id LIMIT $3`, tenantID, repositoryID, limit)
}

// LatestDrills returns the latest drill of each of the given repositories that has one.
func (s *Store) LatestDrills(ctx context.Context, tenantID uuid.UUID, repositoryIDs []uuid.UUID) (map[uuid.UUID]Drill, error) {
	list, err := s.queryDrills(ctx, "latest drills",
		`SELECT DISTINCT ON (d.repository_id) `+drillColumns+drillFrom+`WHERE d.tenant_id = $1 AND d.repository_id = ANY($2)
		  ORDER BY d.repository_id, d.started_at DESC, d.id`, tenantID, repositoryIDs)
	out := map[uuid.UUID]Drill{}
	for _, d := range list {
		out[d.RepositoryID] = d
	}
	return out, err
}

// LatestSnapshotDrills returns the latest drill of each of the given snapshots that has one.
func (s *Store) LatestSnapshotDrills(ctx context.Context, tenantID uuid.UUID, snapshotIDs []string) (map[string]Drill, error) {
	list, err := s.queryDrills(ctx, "latest snapshot drills",
		`SELECT DISTINCT ON (d.snapshot_id) `+drillColumns+drillFrom+`WHERE d.tenant_id = $1 AND d.snapshot_id = ANY($2)
		  ORDER BY d.snapshot_id, d.started_at DESC, d.id`, tenantID, snapshotIDs)
	out := map[string]Drill{}
	for _, d := range list {
		out[d.SnapshotID] = d
	}
	return out, err
}

// FailedDrills returns, for each of the tenant's repositories whose latest finished drill
// failed, that drill, newest first: the drill_failed alerts. A later drill that passes clears
// the alert; one still running does not hide it.
func (s *Store) FailedDrills(ctx context.Context, tenantID uuid.UUID) ([]Drill, error) {
	return s.queryDrills(ctx, "failed drills",
		`SELECT * FROM (
		   SELECT DISTINCT ON (d.repository_id) `+drillColumns+drillFrom+`
		    WHERE d.tenant_id = $1 AND d.finished_at IS NOT NULL
		    ORDER BY d.repository_id, d.started_at DESC, d.id) latest
		  WHERE latest.status = $2
		  ORDER BY latest.finished_at DESC`, tenantID, domain.DrillFailed)
}
