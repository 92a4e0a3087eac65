package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/workflowstarts"
	"github.com/gitsec/gitsec/workflows"
)

// installationParam loads the installation named in the path; another tenant's ID is a 404.
func (h *handlers) installationParam(c *gin.Context) (store.Installation, bool) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		abortError(c, http.StatusNotFound, "not_found", "installation "+c.Param("id")+" does not exist")
		return store.Installation{}, false
	}
	inst, err := h.deps.Store.GetInstallation(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusNotFound, "not_found", "installation "+id.String()+" does not exist")
		return store.Installation{}, false
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not read the installation")
		return store.Installation{}, false
	}
	return inst, true
}

type installationView struct {
	store.Installation
	Account    gin.H             `json:"account"`
	Workspaces []store.Workspace `json:"workspaces"`
}

func (h *handlers) view(ctx context.Context, inst store.Installation) (installationView, error) {
	wss, err := h.deps.Store.ListWorkspaces(ctx, inst.TenantID, inst.ID)
	if err != nil {
		return installationView{}, err
	}
	return installationView{
		Installation: inst,
		Account:      gin.H{"uuid": inst.AccountUUID, "name": inst.AccountName},
		Workspaces:   nonNil(wss),
	}, nil
}

func (h *handlers) listInstallations(c *gin.Context) {
	ctx := c.Request.Context()
	insts, err := h.deps.Store.ListInstallations(ctx, tenantOf(c).ID)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list installations")
		return
	}
	out := make([]installationView, 0, len(insts))
	for _, inst := range insts {
		v, err := h.view(ctx, inst)
		if err != nil {
			abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list workspaces")
			return
		}
		out = append(out, v)
	}
	c.JSON(http.StatusOK, gin.H{"installations": out})
}

func (h *handlers) getInstallation(c *gin.Context) {
	inst, ok := h.installationParam(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	v, err := h.view(ctx, inst)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list workspaces")
		return
	}
	progress, source := json.RawMessage(inst.Progress), "database"
	if h.deps.Temporal != nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := h.deps.Temporal.QueryWorkflow(qctx, workflows.OnboardWorkflowID(inst.ID.String()), "", workflows.OnboardingProgressQuery)
		cancel()
		var live workflows.OnboardingProgress
		if err == nil && resp.Get(&live) == nil {
			if raw, err := json.Marshal(live); err == nil {
				progress, source = raw, "workflow"
			}
		}
	}
	v.Progress = progress
	c.JSON(http.StatusOK, gin.H{"installation": v, "progress_source": source})
}

func (h *handlers) deleteInstallation(c *gin.Context) {
	inst, ok := h.installationParam(c)
	if !ok {
		return
	}
	if inst.Status == store.InstallationRemoved {
		abortError(c, http.StatusConflict, "already_removed", "installation "+inst.ID.String()+" was already removed; its backups are kept")
		return
	}
	id, err := h.starts.StartUninstall(c.Request.Context(), inst.TenantID, inst.ID)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not start the uninstall")
		return
	}
	h.audit(c, inst.TenantID, "installation.uninstalled", "installation", inst.ID.String(), gin.H{"workflow_id": id})
	c.JSON(http.StatusAccepted, gin.H{
		"installation_id": inst.ID,
		"status":          store.InstallationRemoving,
		"workflow_id":     id,
		"backups":         "kept: existing snapshots stay in storage and remain restorable",
	})
}

func (h *handlers) syncInstallation(c *gin.Context) {
	inst, ok := h.installationParam(c)
	if !ok {
		return
	}
	if inst.Status == store.InstallationRemoved || inst.Status == store.InstallationRemoving {
		abortError(c, http.StatusConflict, "removed", "installation "+inst.ID.String()+" is removed; connect the account again")
		return
	}
	id, err := h.starts.StartOnboarding(c.Request.Context(), inst.TenantID, inst.ID, "sync")
	if errors.Is(err, workflowstarts.ErrAlreadyRunning) {
		abortError(c, http.StatusConflict, "discovery_running", "a discovery is already running for installation "+inst.ID.String())
		return
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not start the discovery")
		return
	}
	h.audit(c, inst.TenantID, "installation.sync_requested", "installation", inst.ID.String(), gin.H{"workflow_id": id})
	c.JSON(http.StatusAccepted, gin.H{"installation_id": inst.ID, "workflow_id": id})
}
