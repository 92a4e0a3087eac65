package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/workflowstarts"
	"github.com/gitsec/gitsec/workflows"
)

// installationParam loads the installation named in the path; another tenant's ID is a 404.
func (h *handlers) installationParam(c *gin.Context) (store.Installation, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return store.Installation{}, errNotFound("installation", c.Param("id"))
	}
	inst, err := h.deps.Store.GetInstallation(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Installation{}, errNotFound("installation", id.String())
	}
	if err != nil {
		return store.Installation{}, failed("could not read the installation", err)
	}
	return inst, nil
}

func (h *handlers) view(ctx context.Context, inst store.Installation) (Installation, error) {
	wss, err := h.deps.Store.ListWorkspaces(ctx, inst.TenantID, inst.ID)
	if err != nil {
		return Installation{}, err
	}
	return installationView(inst, wss), nil
}

func (h *handlers) listInstallations(c *gin.Context) error {
	ctx := c.Request.Context()
	insts, err := h.deps.Store.ListInstallations(ctx, tenantOf(c).ID)
	if err != nil {
		return failed("could not list installations", err)
	}
	out := make([]Installation, 0, len(insts))
	for _, inst := range insts {
		v, err := h.view(ctx, inst)
		if err != nil {
			return failed("could not list workspaces", err)
		}
		out = append(out, v)
	}
	c.JSON(http.StatusOK, Installations{Installations: out})
	return nil
}

func (h *handlers) getInstallation(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	v, err := h.view(ctx, inst)
	if err != nil {
		return failed("could not list workspaces", err)
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
	grant, err := h.restoreGrantView(ctx, inst)
	if err != nil {
		return failed("could not read the Restore App grant", err)
	}
	v.RestoreApp = &grant
	health, err := h.deps.Store.WebhookHealthSince(ctx, inst.TenantID, inst.ID, time.Now().Add(-24*time.Hour))
	if err != nil {
		return failed("could not read the webhook health", err)
	}
	v.Webhooks = &WebhookHealth{LastDeliveryAt: health.LastDeliveryAt, Deliveries24h: health.Deliveries,
		Unprocessed: health.Unprocessed, Rejected24h: health.Rejected}
	c.JSON(http.StatusOK, InstallationDetail{Installation: v, ProgressSource: source})
	return nil
}

// maxDeliveriesListed bounds GET .../webhook-deliveries (the newest are what one debugs).
const maxDeliveriesListed = 100

// listWebhookDeliveries shows an installation's most recent deliveries and what each did.
func (h *handlers) listWebhookDeliveries(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	limit, err := intQuery(c, "limit", 50, 1, maxDeliveriesListed)
	if err != nil {
		return err
	}
	rows, err := h.deps.Store.ListWebhookDeliveries(c.Request.Context(), inst.TenantID, inst.ID, limit)
	if err != nil {
		return failed("could not list webhook deliveries", err)
	}
	c.JSON(http.StatusOK, WebhookDeliveries{Deliveries: views(rows, webhookDeliveryView)})
	return nil
}

func (h *handlers) deleteInstallation(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	if inst.Status == domain.InstallationRemoved {
		return errConflict("already_removed", "installation "+inst.ID.String()+" was already removed; its backups are kept")
	}
	id, err := h.starts.StartUninstall(c.Request.Context(), inst.TenantID, inst.ID)
	if err != nil {
		return failed("could not start the uninstall", err)
	}
	h.audit(c, inst.TenantID, "installation.uninstalled", "installation", inst.ID.String(), gin.H{"workflow_id": id})
	c.JSON(http.StatusAccepted, WorkflowStarted{
		InstallationID: inst.ID,
		Status:         domain.InstallationRemoving,
		WorkflowID:     id,
		Backups:        "kept: existing snapshots stay in storage and remain restorable",
	})
	return nil
}

func (h *handlers) syncInstallation(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	if inst.Status == domain.InstallationRemoved || inst.Status == domain.InstallationRemoving {
		return errConflict("removed", "installation "+inst.ID.String()+" is removed; connect the account again")
	}
	id, err := h.starts.StartOnboarding(c.Request.Context(), inst.TenantID, inst.ID, "sync")
	if errors.Is(err, workflowstarts.ErrAlreadyRunning) {
		return errConflict("discovery_running", "a discovery is already running for installation "+inst.ID.String())
	}
	if err != nil {
		return failed("could not start the discovery", err)
	}
	h.audit(c, inst.TenantID, "installation.sync_requested", "installation", inst.ID.String(), gin.H{"workflow_id": id})
	c.JSON(http.StatusAccepted, WorkflowStarted{InstallationID: inst.ID, WorkflowID: id})
	return nil
}
