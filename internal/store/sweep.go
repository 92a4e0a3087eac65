package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// SweepCandidate is the little a scheduled sweep needs to check one repository upstream.
type SweepCandidate struct {
	ID             uuid.UUID
	ProviderUUID   string
	FullName       string
	LastSnapshotID *string
}

// SweepCandidates pages an installation's included, active repositories in ID order, after the
// given ID (uuid.Nil for the first page). An installation whose backups stopped (see
// BackupsStopped) has none, so a sweep running while it is removed ends at its next page. Keyset paging by ID stays correct while rows are added
// or renamed during a sweep, which an offset would not.
func (s *Store) SweepCandidates(ctx context.Context, tenantID, installationID, after uuid.UUID, limit int) ([]SweepCandidate, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT r.id, r.provider_uuid, r.full_name, r.last_snapshot_id FROM repositories r
		  WHERE r.tenant_id = $1 AND r.installation_id = $2 AND r.included AND r.status = 'active' AND r.id > $3
		    AND EXISTS (SELECT 1 FROM installations i WHERE i.id = r.installation_id AND i.status <> ALL($5))
		  ORDER BY r.id LIMIT $4`, tenantID, installationID, after, limit, backupsStoppedStatuses)
	if err != nil {
		return nil, fmt.Errorf("list sweep candidates: %w", err)
	}
	defer rows.Close()
	var out []SweepCandidate
	for rows.Next() {
		var c SweepCandidate
		if err := rows.Scan(&c.ID, &c.ProviderUUID, &c.FullName, &c.LastSnapshotID); err != nil {
			return nil, fmt.Errorf("scan sweep candidate: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// MirroredRepositories returns the provider UUIDs of the tenant's repositories that workers
// should keep a mirror of: included, active, and of an installation that is not being removed.
// A repository seen through two installations counts once.
func (s *Store) MirroredRepositories(ctx context.Context, tenantID uuid.UUID) ([]string, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT DISTINCT r.provider_uuid FROM repositories r JOIN installations i ON i.id = r.installation_id
		  WHERE r.tenant_id = $1 AND r.included AND r.status = 'active' AND i.status NOT IN ('removing', 'removed')`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list mirrored repositories: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("scan mirrored repository: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
