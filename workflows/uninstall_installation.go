package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// UninstallInstallationWorkflowName is the registered name of the uninstall workflow.
const UninstallInstallationWorkflowName = "UninstallInstallation"

// UninstallWorkflowID is fixed per installation so a repeated DELETE joins the running one.
func UninstallWorkflowID(installationID string) string { return "uninstall-" + installationID }

// Activity names of uninstalling.
const (
	ListRegisteredWebhooksActivity = "ListRegisteredWebhooks"
	RemoveWorkspaceWebhookActivity = "RemoveWorkspaceWebhook"
)

// RegisteredWebhook is a workspace hook GitSec registered.
type RegisteredWebhook struct {
	WorkspaceInput
	HookUUID string
}

// RemoveWebhookResult says whether the hook is gone and, if not, why.
type RemoveWebhookResult struct {
	Removed bool
	Reason  string
}

// UninstallResult reports what uninstalling did.
type UninstallResult struct {
	WebhooksRemoved int
	WebhooksLeft    map[string]string // workspace slug -> reason
}

// UninstallInstallation deletes the installation's sweep schedule, removes the webhooks GitSec
// registered and marks the installation removed (which drops its credentials). Existing
// backups are kept.
func UninstallInstallation(ctx workflow.Context, ref InstallationRef) (UninstallResult, error) {
	db := DatabaseActivity(ctx)
	provider := ProviderActivity(ctx)
	res := UninstallResult{WebhooksLeft: map[string]string{}}
	if err := workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, domain.InstallationRemoving, "removing webhooks"}).Get(ctx, nil); err != nil {
		return res, err
	}
	if err := workflow.ExecuteActivity(TemporalActivity(ctx), DeleteSweepScheduleActivity, ref).Get(ctx, nil); err != nil {
		return res, err
	}
	if err := deleteDrillSchedule(ctx, ref); err != nil {
		return res, err
	}
	if err := deleteRetentionSchedule(ctx, ref); err != nil {
		return res, err
	}
	var hooks []RegisteredWebhook
	if err := workflow.ExecuteActivity(db, ListRegisteredWebhooksActivity, ref).Get(ctx, &hooks); err != nil {
		return res, err
	}
	for _, h := range hooks {
		var r RemoveWebhookResult
		if err := workflow.ExecuteActivity(provider, RemoveWorkspaceWebhookActivity, h).Get(ctx, &r); err != nil {
			// Credentials may already be revoked: the hook then stays upstream, and we say so.
			res.WebhooksLeft[h.Slug] = err.Error()
			continue
		}
		if r.Removed {
			res.WebhooksRemoved++
		} else {
			res.WebhooksLeft[h.Slug] = r.Reason
		}
	}
	msg := fmt.Sprintf("uninstalled: %d webhooks removed; existing backups are kept", res.WebhooksRemoved)
	if len(res.WebhooksLeft) > 0 {
		msg += fmt.Sprintf("; %d webhooks could not be removed and may be deleted in Bitbucket's workspace settings", len(res.WebhooksLeft))
	}
	return res, workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, domain.InstallationRemoved, msg}).Get(ctx, nil)
}
