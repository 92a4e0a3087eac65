package workflows

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// OnboardInstallationWorkflowName is the registered name of the discovery workflow.
const OnboardInstallationWorkflowName = "OnboardInstallation"

// OnboardingProgressQuery returns the live OnboardingProgress.
const OnboardingProgressQuery = "progress"

// NoWorkspaceMessage is what the installation says when the account has no workspace.
const NoWorkspaceMessage = "No Bitbucket Workspace"

// OnboardWorkflowID derives the workflow ID from the installation, so a double OAuth callback
// or a second sync request cannot start two discoveries at once.
func OnboardWorkflowID(installationID string) string { return "onboard-" + installationID }

// InstallationRef names an installation; activities load its credentials themselves, so
// workflow inputs never carry tokens.
type InstallationRef struct {
	TenantID       string
	InstallationID string
}

// OnboardInput starts a discovery: the first one after connecting, or a re-sync.
type OnboardInput struct {
	InstallationRef
	Reason string // "connect", "reconnect" or "sync"
}

// Activity names and payloads of onboarding.
const (
	FetchAccountActivity             = "FetchAccount"
	DiscoverWorkspacesActivity       = "DiscoverWorkspaces"
	RegisterWorkspaceHookActivity    = "RegisterWorkspaceWebhook"
	RecordWorkspaceStatusActivity    = "RecordWorkspaceStatus"
	SyncRepositoriesActivity         = "SyncWorkspaceRepositories"
	StartBackupsActivity             = "StartBackups"
	SetInstallationStatusActivity    = "SetInstallationStatus"
	RecordOnboardingProgressActivity = "RecordOnboardingProgress"
)

// AccountInfo is the connected account.
type AccountInfo struct {
	UUID        string
	DisplayName string
}

// WorkspaceInfo is one workspace the account sees, as recorded in Postgres.
type WorkspaceInfo struct {
	ID      string // GitSec's workspace row ID
	UUID    string
	Slug    string
	IsAdmin bool
}

// WorkspaceInput addresses one workspace of an installation.
type WorkspaceInput struct {
	InstallationRef
	WorkspaceID string
	Slug        string
}

// WebhookResult says whether a hook is in place and, if not, why.
type WebhookResult struct {
	Registered bool
	Created    bool
	Reason     string
}

// WorkspaceStatusInput records a workspace's state.
type WorkspaceStatusInput struct {
	WorkspaceInput
	Status string
	Reason string
}

// RepositorySyncResult counts what a workspace listing changed.
type RepositorySyncResult struct {
	Found           int
	Created         int
	DeletedUpstream int64
}

// InstallationStatusInput sets the installation's status.
type InstallationStatusInput struct {
	InstallationRef
	Status  string
	Message string
}

// StartBackupsInput wakes the backup workflows of an installation's included repositories.
type StartBackupsInput struct {
	InstallationRef
	Trigger           domain.TriggerKind
	OnlyNeverBackedUp bool
}

// OnboardingProgress is readable through the "progress" query and mirrored to Postgres.
type OnboardingProgress struct {
	Step               string            `json:"step"`
	WorkspacesTotal    int               `json:"workspaces_total"`
	WorkspacesDone     int               `json:"workspaces_done"`
	RepositoriesFound  int               `json:"repositories_found"`
	WebhooksRegistered int               `json:"webhooks_registered"`
	BackupsStarted     int               `json:"backups_started"`
	WorkspaceReasons   map[string]string `json:"workspace_reasons,omitempty"`
	Done               bool              `json:"done"`
}

// ProgressInput mirrors progress to Postgres.
type ProgressInput struct {
	InstallationRef
	Progress OnboardingProgress
}

// OnboardResult is the workflow's outcome.
type OnboardResult struct {
	Status  string
	Message string
}

// OnboardInstallation discovers the account's workspaces, registers a webhook where the account
// is admin, records every repository and queues the first backups. Each step is an activity
// with its own preset; progress is queryable and mirrored to Postgres.
func OnboardInstallation(ctx workflow.Context, in OnboardInput) (OnboardResult, error) {
	p := &OnboardingProgress{Step: "starting", WorkspaceReasons: map[string]string{}}
	if err := workflow.SetQueryHandler(ctx, OnboardingProgressQuery, func() (OnboardingProgress, error) { return *p, nil }); err != nil {
		return OnboardResult{}, err
	}
	ref := in.InstallationRef
	provider := ProviderActivity(ctx)
	db := DatabaseActivity(ctx)
	step := func(name string) {
		p.Step = name
		// Progress mirroring is best effort: a failure must not fail the onboarding.
		_ = workflow.ExecuteActivity(db, RecordOnboardingProgressActivity, ProgressInput{ref, *p}).Get(ctx, nil)
	}

	res, err := onboard(ctx, ref, p, provider, db, step)
	if err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && (appErr.Type() == domain.ErrTypeCredentialsRevoked || appErr.Type() == domain.ErrTypeForbidden) {
			msg := "Bitbucket rejected GitSec's access; reconnect the account"
			if appErr.Type() == domain.ErrTypeForbidden {
				msg = "Bitbucket denied GitSec's access (permissions changed?); reconnect the account"
			}
			_ = workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, domain.InstallationNeedsReauth, msg}).Get(ctx, nil)
			p.Done = true
			step("needs_reauth")
		}
		return OnboardResult{}, err
	}
	p.Done = true
	step("done")
	return res, nil
}

func onboard(ctx workflow.Context, ref InstallationRef, p *OnboardingProgress, provider, db workflow.Context, step func(string)) (OnboardResult, error) {
	if err := workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, domain.InstallationOnboarding, "discovering workspaces and repositories"}).Get(ctx, nil); err != nil {
		return OnboardResult{}, err
	}
	step("account")
	var account AccountInfo
	if err := workflow.ExecuteActivity(provider, FetchAccountActivity, ref).Get(ctx, &account); err != nil {
		return OnboardResult{}, err
	}

	step("workspaces")
	var workspaces []WorkspaceInfo
	if err := workflow.ExecuteActivity(provider, DiscoverWorkspacesActivity, ref).Get(ctx, &workspaces); err != nil {
		return OnboardResult{}, err
	}
	p.WorkspacesTotal = len(workspaces)
	if len(workspaces) == 0 {
		res := OnboardResult{Status: domain.InstallationNoWorkspace, Message: NoWorkspaceMessage}
		return res, workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, res.Status, res.Message}).Get(ctx, nil)
	}

	step("webhooks")
	for _, ws := range workspaces {
		wsIn := WorkspaceInput{InstallationRef: ref, WorkspaceID: ws.ID, Slug: ws.Slug}
		if !ws.IsAdmin {
			reason := "the connected account is not an administrator of this workspace: no webhook; repositories are backed up on schedule"
			p.WorkspaceReasons[ws.Slug] = reason
			if err := workflow.ExecuteActivity(db, RecordWorkspaceStatusActivity, WorkspaceStatusInput{wsIn, domain.WorkspaceNoAdmin, reason}).Get(ctx, nil); err != nil {
				return OnboardResult{}, err
			}
			continue
		}
		var hook WebhookResult
		if err := workflow.ExecuteActivity(provider, RegisterWorkspaceHookActivity, wsIn).Get(ctx, &hook); err != nil {
			return OnboardResult{}, err
		}
		if hook.Registered {
			p.WebhooksRegistered++
		} else {
			p.WorkspaceReasons[ws.Slug] = hook.Reason
		}
	}

	step("repositories")
	for _, ws := range workspaces {
		var sync RepositorySyncResult
		wsIn := WorkspaceInput{InstallationRef: ref, WorkspaceID: ws.ID, Slug: ws.Slug}
		if err := workflow.ExecuteActivity(provider, SyncRepositoriesActivity, wsIn).Get(ctx, &sync); err != nil {
			return OnboardResult{}, err
		}
		p.RepositoriesFound += sync.Found
		p.WorkspacesDone++
		step("repositories")
	}

	step("backups")
	if err := workflow.ExecuteActivity(provider, StartBackupsActivity, StartBackupsInput{InstallationRef: ref, Trigger: domain.TriggerInitial, OnlyNeverBackedUp: true}).Get(ctx, &p.BackupsStarted); err != nil {
		return OnboardResult{}, err
	}
	// The scheduled sweep keeps the backups current where webhooks are missing or lost.
	if err := workflow.ExecuteActivity(TemporalActivity(ctx), EnsureSweepScheduleActivity, ref).Get(ctx, nil); err != nil {
		return OnboardResult{}, err
	}
	// And the drill schedule proves, weekly by default, that the backups restore.
	if err := ensureDrillSchedule(ctx, ref); err != nil {
		return OnboardResult{}, err
	}
	// And the retention schedule ages the snapshots out by each repository's policy.
	if err := ensureRetentionSchedule(ctx, ref); err != nil {
		return OnboardResult{}, err
	}

	res := OnboardResult{Status: domain.InstallationActive, Message: fmt.Sprintf("%d workspaces, %d repositories, %d webhooks", len(workspaces), p.RepositoriesFound, p.WebhooksRegistered)}
	if len(p.WorkspaceReasons) > 0 {
		res.Status = domain.InstallationActivePartial
		res.Message += fmt.Sprintf("; %d workspaces without webhook (see workspace reasons)", len(p.WorkspaceReasons))
	}
	return res, workflow.ExecuteActivity(db, SetInstallationStatusActivity, InstallationStatusInput{ref, res.Status, res.Message}).Get(ctx, nil)
}
