// Package backupqueue asks for repository backups: it wakes (or starts) the repository's
// BackupRepository workflow with Signal-With-Start, so every caller (the API, onboarding, the
// sweep, webhooks) goes through the one workflow per repository and bursts coalesce there.
package backupqueue

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Settings tune the coalescing of every workflow started from here.
type Settings struct {
	TaskQueue   string
	QuietPeriod time.Duration
	MaxWait     time.Duration
	IdleTimeout time.Duration
	// HostTimeout bounds the wait for the mirror's worker before another one takes over.
	HostTimeout time.Duration
	// HeartbeatTimeout overrides the staging activity's heartbeat timeout (0: the default).
	HeartbeatTimeout time.Duration
	// CatchUpDelay is how soon a workflow runs again after an incomplete export (0: default).
	CatchUpDelay time.Duration
}

// Target is the backup target of a repository row.
func Target(r store.Repository) workflows.BackupTarget {
	return workflows.BackupTarget{
		TenantID: r.TenantID.String(), InstallationID: r.InstallationID.String(), RepositoryID: r.ID.String(), ProviderUUID: r.ProviderUUID,
	}
}

// Request signals the backup workflow of the repository row target, starting it when none runs,
// and returns the workflow ID. The request carries the target, and the workflow refuses one that
// is not its own; a request already addressed to another row is an error here.
func Request(ctx context.Context, c client.Client, s Settings, target workflows.BackupTarget, req workflows.BackupRequest) (string, error) {
	if err := target.Validate(); err != nil {
		return "", fmt.Errorf("request backup: %w", err)
	}
	if req.Target == (workflows.BackupTarget{}) {
		req.Target = target
	} else if req.Target != target {
		return "", fmt.Errorf("request backup: the request names %+v but was sent to %+v", req.Target, target)
	}
	if req.RequestedAt.IsZero() {
		req.RequestedAt = time.Now().UTC()
	}
	id := workflows.BackupWorkflowID(target)
	_, err := c.SignalWithStartWorkflow(ctx, id, workflows.BackupRequestSignal, req, client.StartWorkflowOptions{
		ID:                    id,
		TaskQueue:             s.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(target.TenantID),
			workflows.SearchAttrInstallation.ValueSet(target.InstallationID),
			workflows.SearchAttrRepository.ValueSet(target.ProviderUUID),
		),
	}, workflows.BackupRepositoryWorkflowName, workflows.BackupInput{
		Target:           target,
		QuietPeriod:      s.QuietPeriod,
		MaxWait:          s.MaxWait,
		IdleTimeout:      s.IdleTimeout,
		HostTimeout:      s.HostTimeout,
		HeartbeatTimeout: s.HeartbeatTimeout,
		CatchUpDelay:     s.CatchUpDelay,
	})
	if err != nil {
		return "", fmt.Errorf("request backup of %s: %w", id, err)
	}
	return id, nil
}
