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
}

// Request signals the repository's backup workflow, starting it when none runs, and returns
// the workflow ID.
func Request(ctx context.Context, c client.Client, s Settings, target workflows.BackupTarget, providerUUID string, req workflows.BackupRequest) (string, error) {
	if req.RequestedAt.IsZero() {
		req.RequestedAt = time.Now().UTC()
	}
	id := workflows.BackupWorkflowID(providerUUID)
	_, err := c.SignalWithStartWorkflow(ctx, id, workflows.BackupRequestSignal, req, client.StartWorkflowOptions{
		ID:                    id,
		TaskQueue:             s.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(target.TenantID),
			workflows.SearchAttrInstallation.ValueSet(target.InstallationID),
			workflows.SearchAttrRepository.ValueSet(providerUUID),
		),
	}, workflows.BackupRepositoryWorkflowName, workflows.BackupInput{
		Target:           target,
		QuietPeriod:      s.QuietPeriod,
		MaxWait:          s.MaxWait,
		IdleTimeout:      s.IdleTimeout,
		HostTimeout:      s.HostTimeout,
		HeartbeatTimeout: s.HeartbeatTimeout,
	})
	if err != nil {
		return "", fmt.Errorf("request backup of %s: %w", providerUUID, err)
	}
	return id, nil
}
