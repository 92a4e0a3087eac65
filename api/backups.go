package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// loadRepository answers 404 for unknown IDs and other tenants' repositories.
func (h *handlers) loadRepository(c *gin.Context) (store.Repository, bool) {
	id, ok := h.repositoryParam(c)
	if !ok {
		return store.Repository{}, false
	}
	r, err := h.deps.Store.GetRepository(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusNotFound, "not_found", "repository "+id.String()+" does not exist")
		return store.Repository{}, false
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not read the repository")
		return store.Repository{}, false
	}
	return r, true
}

// requestBackup wakes the repository's backup workflow (202); requests during a running
// backup are coalesced into one follow-up run.
func (h *handlers) requestBackup(c *gin.Context) {
	r, ok := h.loadRepository(c)
	if !ok {
		return
	}
	if !r.Included {
		abortError(c, http.StatusConflict, "excluded", "repository "+r.FullName+" is excluded from backups; include it first (PATCH {\"included\":true})")
		return
	}
	if r.Status != store.RepositoryActive {
		abortError(c, http.StatusConflict, "not_active", "repository "+r.FullName+" is "+r.Status+"; its existing backups are kept")
		return
	}
	target := workflows.BackupTarget{TenantID: r.TenantID.String(), InstallationID: r.InstallationID.String(), RepositoryID: r.ID.String()}
	id, err := h.starts.RequestBackup(c.Request.Context(), target, r.ProviderUUID,
		workflows.BackupRequest{Trigger: workflows.TriggerManual})
	if err != nil {
		h.deps.Logger.Error("request backup", "repository", r.ID, "error", err)
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not queue the backup")
		return
	}
	h.audit(c, r.TenantID, "repository.backup_requested", "repository", r.ID.String(), gin.H{"full_name": r.FullName, "workflow_id": id})
	c.JSON(http.StatusAccepted, gin.H{"repository_id": r.ID, "workflow_id": id, "status": "queued"})
}

func (h *handlers) listSnapshots(c *gin.Context) {
	r, ok := h.loadRepository(c)
	if !ok {
		return
	}
	limit, ok := intQuery(c, "limit", 50, 1, 200)
	if !ok {
		return
	}
	cursor := c.Query("cursor")
	snaps, err := h.deps.Store.ListSnapshots(c.Request.Context(), r.TenantID, r.ID, cursor, limit)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list snapshots")
		return
	}
	resp := gin.H{"snapshots": nonNil(snaps)}
	if len(snaps) == limit {
		resp["next_cursor"] = snaps[len(snaps)-1].ID
	}
	c.JSON(http.StatusOK, resp)
}

func (h *handlers) getSnapshot(c *gin.Context) {
	sn, err := h.deps.Store.GetSnapshot(c.Request.Context(), tenantOf(c).ID, c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusNotFound, "not_found", "snapshot "+c.Param("id")+" does not exist")
		return
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not read the snapshot")
		return
	}
	c.JSON(http.StatusOK, gin.H{"snapshot": sn})
}

// backupStatus asks the running workflow; with none running, the database says how the last
// backup went.
func (h *handlers) backupStatus(c *gin.Context) {
	r, ok := h.loadRepository(c)
	if !ok {
		return
	}
	resp := gin.H{
		"repository_id":      r.ID,
		"last_backup_status": r.LastBackupStatus,
		"last_backup_at":     r.LastBackupAt,
		"last_snapshot_id":   r.LastSnapshotID,
		"state":              "idle",
	}
	qctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	val, err := h.deps.Temporal.QueryWorkflow(qctx, workflows.BackupWorkflowID(r.ProviderUUID), "", workflows.BackupStatusQuery)
	var live workflows.BackupStatus
	if err == nil && val.Get(&live) == nil {
		resp["state"] = live.State
		resp["live"] = live
	}
	c.JSON(http.StatusOK, resp)
}
