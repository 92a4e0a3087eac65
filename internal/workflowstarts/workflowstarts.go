// Package workflowstarts holds the policy for starting the workflows the API triggers: which
// workflow ID, which reuse and conflict policy, which search attributes. Handlers call it and
// never build StartWorkflowOptions themselves, so a start behaves the same from every route.
// Backup requests go through internal/backupqueue, which the workers share.
package workflowstarts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/workflows"
)

// ErrAlreadyRunning reports a start refused because the same workflow is still running.
var ErrAlreadyRunning = errors.New("workflow already running")

// ErrNotRunning reports a cancel of a workflow that is not running (finished or unknown).
var ErrNotRunning = errors.New("workflow not running")

// Starter starts the API's workflows on one Temporal client.
type Starter struct {
	Temporal  client.Client
	TaskQueue string
	Backups   backupqueue.Settings
	Logger    *slog.Logger
}

// StartOnboarding starts discovery with an ID derived from the installation: a second start
// while one runs is refused (ErrAlreadyRunning), so two discoveries never race.
func (s *Starter) StartOnboarding(ctx context.Context, tenantID, instID uuid.UUID, reason string) (string, error) {
	id := workflows.OnboardWorkflowID(instID.String())
	_, err := s.Temporal.ExecuteWorkflow(ctx, s.installationOptions(id, tenantID, instID, enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL),
		workflows.OnboardInstallationWorkflowName, workflows.OnboardInput{
			InstallationRef: workflows.InstallationRef{TenantID: tenantID.String(), InstallationID: instID.String()},
			Reason:          reason,
		})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return id, fmt.Errorf("start onboarding of installation %s: %w", instID, ErrAlreadyRunning)
	}
	if err != nil {
		return id, fmt.Errorf("start onboarding of installation %s: %w", instID, err)
	}
	return id, nil
}

// StartUninstall cancels a running discovery (it would register hooks behind the uninstall's
// back) and starts the uninstall; a second request joins the uninstall already running.
func (s *Starter) StartUninstall(ctx context.Context, tenantID, instID uuid.UUID) (string, error) {
	if err := s.Temporal.CancelWorkflow(ctx, workflows.OnboardWorkflowID(instID.String()), ""); err != nil && !isNotFound(err) {
		s.logger().Warn("cancel onboarding before uninstall", "installation", instID, "error", err)
	}
	id := workflows.UninstallWorkflowID(instID.String())
	_, err := s.Temporal.ExecuteWorkflow(ctx, s.installationOptions(id, tenantID, instID, enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING),
		workflows.UninstallInstallationWorkflowName, workflows.InstallationRef{TenantID: tenantID.String(), InstallationID: instID.String()})
	if err != nil {
		return id, fmt.Errorf("start uninstall of installation %s: %w", instID, err)
	}
	return id, nil
}

// RequestBackup wakes (or starts) the repository's backup workflow and returns its ID.
func (s *Starter) RequestBackup(ctx context.Context, target workflows.BackupTarget, req workflows.BackupRequest) (string, error) {
	return backupqueue.Request(ctx, s.Temporal, s.Backups, target, req)
}

// StartDrill starts a restore drill of one snapshot of the repository row target under a new
// drill ID (the caller's), and returns the workflow ID.
func (s *Starter) StartDrill(ctx context.Context, target workflows.BackupTarget, drillID uuid.UUID, snapshotID string, trigger domain.TriggerKind) (string, error) {
	if err := target.Validate(); err != nil {
		return "", err
	}
	id := workflows.DrillWorkflowID(target.RepositoryID, drillID.String())
	_, err := s.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                s.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowExecutionTimeout: 12 * time.Hour,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(target.TenantID),
			workflows.SearchAttrInstallation.ValueSet(target.InstallationID),
			workflows.SearchAttrRepository.ValueSet(target.ProviderUUID),
		),
	}, workflows.DrillRestoreWorkflowName, workflows.DrillInput{Target: target, DrillID: drillID.String(), SnapshotID: snapshotID, Trigger: trigger})
	if err != nil {
		return id, fmt.Errorf("start drill of snapshot %s: %w", snapshotID, err)
	}
	return id, nil
}

// StartRetention starts a retention run over the installation's repositories now (the
// schedule runs it too); ErrAlreadyRunning while a manual run is under way.
func (s *Starter) StartRetention(ctx context.Context, tenantID, instID uuid.UUID, dryRun bool) (string, error) {
	id := workflows.RetentionManualWorkflowID(instID.String())
	_, err := s.Temporal.ExecuteWorkflow(ctx, s.installationOptions(id, tenantID, instID, enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL),
		workflows.RetentionWorkflowName, workflows.RetentionInput{
			InstallationRef: workflows.InstallationRef{TenantID: tenantID.String(), InstallationID: instID.String()},
			DryRun:          dryRun,
		})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return id, fmt.Errorf("start retention of installation %s: %w", instID, ErrAlreadyRunning)
	}
	if err != nil {
		return id, fmt.Errorf("start retention of installation %s: %w", instID, err)
	}
	return id, nil
}

// installationOptions start a per-installation workflow: a finished one may run again under
// the same ID; conflict decides what a start does while one still runs.
func (s *Starter) installationOptions(id string, tenantID, instID uuid.UUID, conflict enumspb.WorkflowIdConflictPolicy) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                s.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: conflict,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(tenantID.String()),
			workflows.SearchAttrInstallation.ValueSet(instID.String()),
		),
	}
}

func (s *Starter) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

// StartRestore starts the Restore workflow of a restore row; its ID is derived from the row, so
// a retried request cannot start a second run.
func (s *Starter) StartRestore(ctx context.Context, tenantID, instID uuid.UUID, in workflows.RestoreInput) (string, error) {
	id := workflows.RestoreWorkflowID(in.RestoreID)
	_, err := s.Temporal.ExecuteWorkflow(ctx, s.installationOptions(id, tenantID, instID, enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING),
		workflows.RestoreWorkflowName, in)
	if err != nil {
		return id, fmt.Errorf("start restore %s: %w", in.RestoreID, err)
	}
	return id, nil
}

// CancelRestore asks a running restore to stop; it records itself as cancelled. A finished
// one is ErrNotRunning.
func (s *Starter) CancelRestore(ctx context.Context, restoreID string) error {
	err := s.Temporal.CancelWorkflow(ctx, workflows.RestoreWorkflowID(restoreID), "")
	if isNotFound(err) {
		return ErrNotRunning
	}
	if err != nil {
		return fmt.Errorf("cancel restore %s: %w", restoreID, err)
	}
	return nil
}
