package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// loadRepository answers 404 for unknown IDs and other tenants' repositories.
func (h *handlers) loadRepository(c *gin.Context) (store.Repository, error) {
	id, err := h.repositoryParam(c)
	if err != nil {
		return store.Repository{}, err
	}
	r, err := h.deps.Store.GetRepository(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Repository{}, errNotFound("repository", id.String())
	}
	if err != nil {
		return store.Repository{}, failed("could not read the repository", err)
	}
	return r, nil
}

// installationBacksUp is a 409 when the repository's installation is no longer backed up:
// removed (or being removed), or waiting for a reconnect. Workers check again before each run.
func installationBacksUp(r store.Repository) error {
	switch {
	case r.InstallationStatus == domain.InstallationNeedsReauth:
		return errConflict("installation_needs_reauth", "the installation of repository "+r.FullName+
			" needs a reconnect: Bitbucket rejected its credentials; connect the account again")
	case store.BackupsStopped(r.InstallationStatus):
		return errConflict("installation_removed", "the installation of repository "+r.FullName+" is "+
			r.InstallationStatus+": nothing more is backed up; its existing backups are kept")
	}
	return nil
}

// requestBackup wakes the repository's backup workflow (202); requests during a running
// backup are coalesced into one follow-up run.
func (h *handlers) requestBackup(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	if !r.Included {
		return errConflict("excluded", "repository "+r.FullName+" is excluded from backups; include it first (PATCH {\"included\":true})")
	}
	if r.Status != domain.RepositoryActive {
		return errConflict("not_active", "repository "+r.FullName+" is "+r.Status+"; its existing backups are kept")
	}
	if err := installationBacksUp(r); err != nil {
		return err
	}
	id, err := h.starts.RequestBackup(c.Request.Context(), backupqueue.Target(r),
		workflows.BackupRequest{Trigger: domain.TriggerManual})
	if err != nil {
		return failed("could not queue the backup", err)
	}
	h.audit(c, r.TenantID, "repository.backup_requested", "repository", r.ID.String(), gin.H{"full_name": r.FullName, "workflow_id": id})
	c.JSON(http.StatusAccepted, BackupQueued{RepositoryID: r.ID, WorkflowID: id, Status: "queued"})
	return nil
}

func (h *handlers) listSnapshots(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	limit, err := intQuery(c, "limit", 50, 1, 200)
	if err != nil {
		return err
	}
	cursor := c.Query("cursor")
	snaps, err := h.deps.Store.ListSnapshots(c.Request.Context(), r.TenantID, r.ID, cursor, limit)
	if err != nil {
		return failed("could not list snapshots", err)
	}
	resp := Snapshots{Snapshots: views(snaps, snapshotView)}
	if err := h.withSnapshotDrills(c.Request.Context(), r.TenantID, resp.Snapshots); err != nil {
		return err
	}
	if len(snaps) == limit {
		resp.NextCursor = snaps[len(snaps)-1].ID
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

func (h *handlers) getSnapshot(c *gin.Context) error {
	sn, err := h.tenantSnapshot(c)
	if err != nil {
		return err
	}
	view := []Snapshot{snapshotView(sn)}
	view[0].PullRequests = h.snapshotPullRequests(c, sn)
	if err := h.withSnapshotDrills(c.Request.Context(), sn.TenantID, view); err != nil {
		return err
	}
	c.JSON(http.StatusOK, SnapshotDetail{Snapshot: view[0]})
	return nil
}

// backupStatus asks the running workflow; with none running, the database says how the last
// backup went.
func (h *handlers) backupStatus(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	resp := BackupStatus{
		RepositoryID:     r.ID,
		LastBackupStatus: r.LastBackupStatus,
		LastBackupAt:     r.LastBackupAt,
		LastSnapshotID:   r.LastSnapshotID,
		State:            "idle",
	}
	qctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	val, err := h.deps.Temporal.QueryWorkflow(qctx, workflows.BackupWorkflowID(backupqueue.Target(r)), "", workflows.BackupStatusQuery)
	var live workflows.BackupStatus
	if err == nil && val.Get(&live) == nil {
		resp.State = live.State
		resp.Live = &live
	}
	c.JSON(http.StatusOK, resp)
	return nil
}
