package activities

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// ListRegisteredWebhooks returns the workspace hooks GitSec registered for the installation.
func (a *Uninstall) ListRegisteredWebhooks(ctx context.Context, ref workflows.InstallationRef) ([]workflows.RegisteredWebhook, error) {
	tenantID, instID, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	wss, err := a.Store.ListWorkspaces(ctx, tenantID, instID)
	if err != nil {
		return nil, classify("list workspaces", err)
	}
	var out []workflows.RegisteredWebhook
	for _, w := range wss {
		if w.WebhookUUID == "" {
			continue
		}
		out = append(out, workflows.RegisteredWebhook{
			WorkspaceInput: workflows.WorkspaceInput{InstallationRef: ref, WorkspaceID: w.ID.String(), Slug: w.Slug},
			HookUUID:       w.WebhookUUID,
		})
	}
	return out, nil
}

// RemoveWorkspaceWebhook deletes a hook GitSec registered; one already gone counts as removed.
func (a *Uninstall) RemoveWorkspaceWebhook(ctx context.Context, in workflows.RegisteredWebhook) (workflows.RemoveWebhookResult, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return workflows.RemoveWebhookResult{}, err
	}
	wsID, err := uuid.Parse(in.WorkspaceID)
	if err != nil {
		return workflows.RemoveWebhookResult{}, classify("workspace id", store.ErrNotFound)
	}
	c, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return workflows.RemoveWebhookResult{}, classify("load credentials", err)
	}
	err = c.DeleteWorkspaceHook(ctx, in.Slug, in.HookUUID)
	switch {
	case err == nil, errors.Is(err, bitbucket.ErrNotFound):
		if err := a.Store.ClearWorkspaceWebhook(ctx, tenantID, wsID, "uninstalled", "webhook removed at uninstall"); err != nil {
			return workflows.RemoveWebhookResult{}, classify("record webhook removal", err)
		}
		return workflows.RemoveWebhookResult{Removed: true}, nil
	case errors.Is(err, bitbucket.ErrForbidden), errors.Is(err, bitbucket.ErrCredentialsRevoked):
		return workflows.RemoveWebhookResult{Reason: "Bitbucket refused the deletion: " + err.Error()}, nil
	default:
		return workflows.RemoveWebhookResult{}, classify("delete webhook on "+in.Slug, err)
	}
}
