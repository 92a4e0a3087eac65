package activities

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// WebhookEvents are the events GitSec's workspace hook subscribes to. Reviews and comment
// resolution change what a pull request export holds (participants, activity, resolutions), so
// they wake a backup like any other pull request change. Re-onboarding updates an existing
// hook's events to this list.
var WebhookEvents = []string{
	"repo:push", "repo:updated", "repo:transfer", "repo:created", "repo:deleted",
	"pullrequest:created", "pullrequest:updated", "pullrequest:fulfilled", "pullrequest:rejected",
	"pullrequest:approved", "pullrequest:unapproved",
	"pullrequest:changes_request_created", "pullrequest:changes_request_removed",
	"pullrequest:comment_created", "pullrequest:comment_updated", "pullrequest:comment_deleted",
	"pullrequest:comment_resolved", "pullrequest:comment_reopened",
}

// WebhookURL is where Bitbucket delivers an installation's events.
func WebhookURL(publicURL, installationID string) string {
	return strings.TrimRight(publicURL, "/") + "/webhooks/bitbucket/" + installationID
}

func webhookDescription(installationID string) string {
	return "GitSec backup (installation " + installationID + ")"
}

// FetchAccount records which Bitbucket account the installation is.
func (a *Onboarding) FetchAccount(ctx context.Context, ref workflows.InstallationRef) (workflows.AccountInfo, error) {
	tenantID, instID, err := parseRef(ref)
	if err != nil {
		return workflows.AccountInfo{}, err
	}
	c, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return workflows.AccountInfo{}, classify("load credentials", err)
	}
	u, err := c.CurrentUser(ctx)
	if err != nil {
		return workflows.AccountInfo{}, classify("get current user", err)
	}
	name := u.Username
	if name == "" {
		name = u.DisplayName
	}
	if err := a.Store.SetInstallationAccount(ctx, tenantID, instID, u.UUID, name); err != nil {
		return workflows.AccountInfo{}, classify("record account", err)
	}
	return workflows.AccountInfo{UUID: u.UUID, DisplayName: name}, nil
}

// DiscoverWorkspaces lists the account's workspaces (with the administrator flag) and records them.
func (a *Onboarding) DiscoverWorkspaces(ctx context.Context, ref workflows.InstallationRef) ([]workflows.WorkspaceInfo, error) {
	tenantID, instID, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	c, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return nil, classify("load credentials", err)
	}
	access, err := c.ListUserWorkspaces(ctx)
	if err != nil {
		return nil, classify("list workspaces", err)
	}
	out := make([]workflows.WorkspaceInfo, 0, len(access))
	seen := make([]string, 0, len(access))
	for _, w := range access {
		id, err := a.Store.UpsertWorkspace(ctx, store.Workspace{
			TenantID: tenantID, InstallationID: instID, ProviderUUID: w.Workspace.UUID,
			Slug: w.Workspace.Slug, Name: w.Workspace.Name, IsAdmin: w.Administrator,
		})
		if err != nil {
			return nil, classify("record workspace", err)
		}
		seen = append(seen, w.Workspace.UUID)
		out = append(out, workflows.WorkspaceInfo{ID: id.String(), UUID: w.Workspace.UUID, Slug: w.Workspace.Slug, IsAdmin: w.Administrator})
	}
	if _, err := a.Store.MarkWorkspacesGone(ctx, tenantID, instID, seen); err != nil {
		return nil, classify("mark workspaces gone", err)
	}
	a.Logger.Info("discovered workspaces", "installation", ref.InstallationID, "count", len(out))
	return out, nil
}

// RegisterWorkspaceWebhook makes sure exactly one GitSec hook for this installation exists on
// the workspace: an existing one (found by URL) gets a fresh secret and the current events,
// otherwise one is created. The secret is stored encrypted and never leaves the activity.
// A 403 (admin right lost since listing) is recorded as the workspace's reason, not a failure.
func (a *Onboarding) RegisterWorkspaceWebhook(ctx context.Context, in workflows.WorkspaceInput) (workflows.WebhookResult, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return workflows.WebhookResult{}, err
	}
	wsID, err := uuid.Parse(in.WorkspaceID)
	if err != nil {
		return workflows.WebhookResult{}, classify("workspace id", store.ErrNotFound)
	}
	c, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return workflows.WebhookResult{}, classify("load credentials", err)
	}
	url := WebhookURL(a.PublicURL, in.InstallationID)
	secretBytes := make([]byte, 32)
	if _, err := rand.Read(secretBytes); err != nil {
		return workflows.WebhookResult{}, fmt.Errorf("generate webhook secret: %w", err)
	}
	secret := hex.EncodeToString(secretBytes)
	sealed, err := a.Box.Encrypt(ctx, []byte(secret))
	if err != nil {
		return workflows.WebhookResult{}, err
	}
	req := bitbucket.HookRequest{Description: webhookDescription(in.InstallationID), URL: url, Active: true, Events: WebhookEvents, Secret: &secret}

	hooks, err := c.ListWorkspaceHooks(ctx, in.Slug)
	if err == nil {
		var existing *bitbucket.Hook
		for i := range hooks {
			if hooks[i].URL == url {
				if existing == nil {
					existing = &hooks[i]
					continue
				}
				// A duplicate (left by an interrupted earlier run) is removed so one hook remains.
				if err := c.DeleteWorkspaceHook(ctx, in.Slug, hooks[i].UUID); err != nil && !errors.Is(err, bitbucket.ErrNotFound) {
					return workflows.WebhookResult{}, classify("delete duplicate webhook", err)
				}
			}
		}
		var hook *bitbucket.Hook
		created := false
		if existing != nil {
			hook, err = c.UpdateWorkspaceHook(ctx, in.Slug, existing.UUID, req)
		} else {
			hook, err = c.CreateWorkspaceHook(ctx, in.Slug, req)
			created = true
		}
		if err == nil {
			if err := a.Store.SetWorkspaceWebhook(ctx, tenantID, wsID, hook.UUID, sealed); err != nil {
				return workflows.WebhookResult{}, classify("record webhook", err)
			}
			activity.GetLogger(ctx).Info("workspace webhook registered", "workspace", in.Slug, "hook_uuid", hook.UUID, "created", created)
			return workflows.WebhookResult{Registered: true, Created: created}, nil
		}
	}
	if errors.Is(err, bitbucket.ErrForbidden) {
		reason := "Bitbucket refused to register the webhook (403): the account is no longer an owner/administrator of this workspace; repositories are backed up on schedule"
		if err := a.Store.MarkWorkspaceNotAdmin(ctx, tenantID, wsID, reason); err != nil {
			return workflows.WebhookResult{}, classify("record workspace status", err)
		}
		return workflows.WebhookResult{Registered: false, Reason: reason}, nil
	}
	return workflows.WebhookResult{}, classify("register webhook on "+in.Slug, err)
}

// RecordWorkspaceStatus stores a workspace's state and reason.
func (a *Onboarding) RecordWorkspaceStatus(ctx context.Context, in workflows.WorkspaceStatusInput) error {
	tenantID, _, err := parseRef(in.InstallationRef)
	if err != nil {
		return err
	}
	wsID, err := uuid.Parse(in.WorkspaceID)
	if err != nil {
		return classify("workspace id", store.ErrNotFound)
	}
	return classify("record workspace status", a.Store.SetWorkspaceStatus(ctx, tenantID, wsID, in.Status, in.Reason))
}

// SyncWorkspaceRepositories lists every repository of the workspace (all pages), upserts them
// by UUID, and flags the ones that disappeared as deleted upstream (their backups are kept).
func (a *Onboarding) SyncWorkspaceRepositories(ctx context.Context, in workflows.WorkspaceInput) (workflows.RepositorySyncResult, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return workflows.RepositorySyncResult{}, err
	}
	wsID, err := uuid.Parse(in.WorkspaceID)
	if err != nil {
		return workflows.RepositorySyncResult{}, classify("workspace id", store.ErrNotFound)
	}
	c, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return workflows.RepositorySyncResult{}, classify("load credentials", err)
	}
	var res workflows.RepositorySyncResult
	var seen []string
	err = c.WalkRepositories(ctx, in.Slug, func(r bitbucket.Repository) error {
		main := ""
		if r.MainBranch != nil {
			main = r.MainBranch.Name
		}
		var projectKey, projectName string
		if r.Project != nil {
			projectKey, projectName = r.Project.Key, r.Project.Name
		}
		_, created, err := a.Store.UpsertRepository(ctx, store.Repository{
			TenantID: tenantID, InstallationID: instID, WorkspaceID: &wsID, ProviderUUID: r.UUID,
			FullName: r.FullName, MainBranch: main, SizeBytes: r.Size, IsPrivate: r.IsPrivate,
			ProjectKey: projectKey, ProjectName: projectName,
		})
		if err != nil {
			return err
		}
		seen = append(seen, r.UUID)
		res.Found++
		if created {
			res.Created++
		}
		if res.Found%100 == 0 {
			activity.RecordHeartbeat(ctx, res.Found)
		}
		return nil
	})
	if err != nil {
		return workflows.RepositorySyncResult{}, classify("list repositories of "+in.Slug, err)
	}
	if res.DeletedUpstream, err = a.Store.MarkRepositoriesDeletedUpstream(ctx, tenantID, instID, wsID, seen); err != nil {
		return workflows.RepositorySyncResult{}, classify("mark deleted repositories", err)
	}
	a.Logger.Info("synced repositories", "installation", in.InstallationID, "workspace", in.Slug,
		"found", res.Found, "created", res.Created, "deleted_upstream", res.DeletedUpstream)
	return res, nil
}

// SetInstallationStatus records the installation's status and message.
func (a *Onboarding) SetInstallationStatus(ctx context.Context, in workflows.InstallationStatusInput) error {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return err
	}
	if err := a.Store.SetInstallationStatus(ctx, tenantID, instID, in.Status, in.Message); err != nil {
		return classify("set installation status", err)
	}
	if in.Status == domain.InstallationRemoved || in.Status == domain.InstallationNeedsReauth {
		a.Clients.Forget(instID)
	}
	return nil
}

// RecordOnboardingProgress mirrors the workflow's progress to Postgres for the API.
func (a *Onboarding) RecordOnboardingProgress(ctx context.Context, in workflows.ProgressInput) error {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(in.Progress)
	if err != nil {
		return err
	}
	return classify("record progress", a.Store.SetInstallationProgress(ctx, tenantID, instID, raw))
}
