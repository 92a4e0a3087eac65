package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

// Restore drills restore a snapshot into a scratch repository on a worker and check it
// (docs/restore.md#restore-drills). They read only the backup storage, so a repository that is
// excluded or deleted upstream can be drilled too: its backups are what is left of it.

type drillRequest struct {
	SnapshotID string `json:"snapshot_id"`
}

// requestDrill starts a drill of the repository's latest snapshot, or of the one named in the
// body (202); a repository without a snapshot is a 409.
func (h *handlers) requestDrill(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	var req drillRequest
	if c.Request.ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			return err
		}
	}
	ctx := c.Request.Context()
	snapshotID := req.SnapshotID
	if snapshotID == "" {
		if r.LastSnapshotID == nil {
			return errConflict("no_snapshot", "repository "+r.FullName+" has no snapshot to drill yet; back it up first (POST /api/v1/repositories/"+r.ID.String()+"/backups)")
		}
		snapshotID = *r.LastSnapshotID
	} else {
		sn, err := h.deps.Store.GetSnapshot(ctx, r.TenantID, snapshotID)
		if errors.Is(err, store.ErrNotFound) || err == nil && sn.RepositoryID != r.ID {
			return errNotFound("snapshot "+snapshotID+" of repository", r.FullName)
		}
		if err != nil {
			return failed("could not read the snapshot", err)
		}
	}
	drillID := uuid.New()
	target := backupqueue.Target(r)
	workflowID, err := h.starts.StartDrill(ctx, target, drillID, snapshotID, domain.TriggerManual)
	if err != nil {
		return failed("could not start the drill", err)
	}
	// The workflow records the row too; recording it here lists the drill at once.
	if err := h.deps.Store.StartDrill(ctx, store.Drill{ID: drillID, TenantID: r.TenantID, RepositoryID: r.ID, SnapshotID: snapshotID,
		WorkflowID: workflowID, Trigger: domain.TriggerManual}); err != nil {
		h.deps.Logger.WarnContext(ctx, "record requested drill", "drill", drillID, "error", err)
	}
	h.audit(c, r.TenantID, "repository.drill_requested", "repository", r.ID.String(),
		gin.H{"full_name": r.FullName, "snapshot_id": snapshotID, "drill_id": drillID.String(), "workflow_id": workflowID})
	c.JSON(http.StatusAccepted, DrillStarted{DrillID: drillID, WorkflowID: workflowID, RepositoryID: r.ID, SnapshotID: snapshotID, Status: domain.DrillRunning})
	return nil
}

func (h *handlers) listDrills(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	limit, err := intQuery(c, "limit", 20, 1, 100)
	if err != nil {
		return err
	}
	drills, err := h.deps.Store.ListDrills(c.Request.Context(), r.TenantID, r.ID, limit)
	if err != nil {
		return failed("could not list drills", err)
	}
	c.JSON(http.StatusOK, Drills{Drills: views(drills, drillView)})
	return nil
}

func (h *handlers) getDrill(c *gin.Context) error {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return errNotFound("drill", c.Param("id"))
	}
	d, err := h.deps.Store.GetDrill(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("drill", id.String())
	}
	if err != nil {
		return failed("could not read the drill", err)
	}
	c.JSON(http.StatusOK, DrillDetail{Drill: drillView(d)})
	return nil
}

// listAlerts lists what needs a person: today, repositories whose latest restore drill failed
// (until a later drill passes).
func (h *handlers) listAlerts(c *gin.Context) error {
	alerts, err := h.alerts(c.Request.Context(), tenantOf(c).ID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, Alerts{Alerts: alerts})
	return nil
}

func (h *handlers) alerts(ctx context.Context, tenantID uuid.UUID) ([]Alert, error) {
	failedDrills, err := h.deps.Store.FailedDrills(ctx, tenantID)
	if err != nil {
		return nil, failed("could not list alerts", err)
	}
	out := make([]Alert, 0, len(failedDrills))
	for _, d := range failedDrills {
		out = append(out, Alert{Kind: domain.AlertDrillFailed, RepositoryID: d.RepositoryID, FullName: d.FullName, SnapshotID: d.SnapshotID,
			DrillID: d.ID, Message: "the restore drill of snapshot " + d.SnapshotID + " failed: " + d.Reason, Since: *d.FinishedAt})
	}
	return out, nil
}

// withRepositoryDrills sets each repository's last drill.
func (h *handlers) withRepositoryDrills(ctx context.Context, tenantID uuid.UUID, repos []Repository) error {
	ids := make([]uuid.UUID, 0, len(repos))
	for _, r := range repos {
		ids = append(ids, r.ID)
	}
	latest, err := h.deps.Store.LatestDrills(ctx, tenantID, ids)
	if err != nil {
		return failed("could not read the repositories' drills", err)
	}
	for i := range repos {
		if d, ok := latest[repos[i].ID]; ok {
			repos[i].LastDrill = drillStatusView(d)
		}
	}
	return nil
}

// withSnapshotDrills sets each snapshot's last drill.
func (h *handlers) withSnapshotDrills(ctx context.Context, tenantID uuid.UUID, snaps []Snapshot) error {
	ids := make([]string, 0, len(snaps))
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	latest, err := h.deps.Store.LatestSnapshotDrills(ctx, tenantID, ids)
	if err != nil {
		return failed("could not read the snapshots' drills", err)
	}
	for i := range snaps {
		if d, ok := latest[snaps[i].ID]; ok {
			snaps[i].LastDrill = drillStatusView(d)
		}
	}
	return nil
}
