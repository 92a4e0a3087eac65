package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

const providerBitbucket = "bitbucket"

// audit records a change; failures are logged, never shown to the caller as a failed change.
func (h *handlers) audit(c *gin.Context, tenantID uuid.UUID, action, targetType, targetID string, details any) {
	raw, _ := json.Marshal(details)
	actor := "api_token:" + tokenPrefixOf(c)
	if tokenPrefixOf(c) == "" {
		actor = "oauth_callback"
	}
	if err := h.deps.Store.RecordAudit(c.Request.Context(), store.AuditEvent{
		TenantID: tenantID, Actor: actor, Action: action, TargetType: targetType, TargetID: targetID, Details: raw,
	}); err != nil {
		h.deps.Logger.Error("record audit event", "action", action, "error", err)
	}
}

func (h *handlers) connectBitbucket(c *gin.Context) {
	if h.deps.BitbucketOAuth == nil || h.deps.BitbucketOAuth.ClientID == "" {
		abortError(c, http.StatusServiceUnavailable, "not_configured", "no Bitbucket OAuth consumer is configured (GITSEC_BITBUCKET_CLIENT_ID)")
		return
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	state, nonce, err := h.states.issue(ctx, t.ID)
	if err != nil {
		h.deps.Logger.Error("issue oauth state", "error", err)
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateOAuthState(ctx, t.ID, nonce, providerBitbucket, expires); err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"authorize_url": h.deps.BitbucketOAuth.AuthCodeURL(state),
		"expires_at":    expires.UTC(),
	})
}

// callbackError answers the OAuth callback: JSON for API clients, a short page for browsers.
func callbackError(c *gin.Context, status int, code, message string) {
	if strings.Contains(c.GetHeader("Accept"), "text/html") {
		c.Data(status, "text/html; charset=utf-8", []byte("<!doctype html><title>GitSec</title><h1>Connecting Bitbucket failed</h1><p>"+
			html.EscapeString(message)+"</p>"))
		c.Abort()
		return
	}
	abortError(c, status, code, message)
}

func (h *handlers) bitbucketCallback(c *gin.Context) {
	ctx := c.Request.Context()
	tenantID, nonce, err := h.states.verify(ctx, c.Query("state"))
	if err != nil {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	consumedBy, err := h.deps.Store.ConsumeOAuthState(ctx, nonce, providerBitbucket, time.Now())
	if err != nil || consumedBy != tenantID {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	if e := c.Query("error"); e != "" {
		msg := "Bitbucket authorization was not granted (" + e + ")"
		if d := c.Query("error_description"); d != "" {
			msg += ": " + d
		}
		callbackError(c, http.StatusBadRequest, "access_denied", msg+". Nothing was connected.")
		return
	}
	code := c.Query("code")
	if code == "" {
		callbackError(c, http.StatusBadRequest, "missing_code", "the callback carries no authorization code")
		return
	}
	if h.deps.BitbucketOAuth == nil {
		callbackError(c, http.StatusServiceUnavailable, "not_configured", "no Bitbucket OAuth consumer is configured")
		return
	}
	exCtx := ctx
	if h.deps.OAuthHTTPClient != nil {
		exCtx = context.WithValue(ctx, oauth2.HTTPClient, h.deps.OAuthHTTPClient)
	}
	tok, err := bitbucket.ExchangeCode(exCtx, h.deps.BitbucketOAuth, code)
	if err != nil {
		h.deps.Logger.Warn("oauth code exchange failed", "error", err)
		callbackError(c, http.StatusBadRequest, "oauth_exchange_failed", "Bitbucket did not accept the authorization code (expired or already used); connect again")
		return
	}
	sealed, err := providerclient.SealToken(ctx, h.deps.Box, tok)
	if err != nil {
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "could not store the credentials")
		return
	}
	acct, err := h.connectedAccount(exCtx, tok)
	if err != nil {
		h.deps.Logger.Warn("oauth callback: identify account", "error", err)
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "could not ask Bitbucket which account was connected; nothing was stored, connect again")
		return
	}
	instID, reconnected, err := h.deps.Store.ConnectInstallation(ctx, tenantID, acct, sealed)
	var dup *store.AlreadyConnectedError
	if errors.As(err, &dup) {
		callbackError(c, http.StatusConflict, "already_connected", alreadyConnectedMessage(dup))
		return
	}
	if err != nil {
		h.deps.Logger.Error("oauth callback: record installation", "error", err)
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "could not record the installation")
		return
	}
	action, reason := "installation.connected", "connect"
	if reconnected {
		action, reason = "installation.reconnected", "reconnect"
	}
	h.audit(c, tenantID, action, "installation", instID.String(), gin.H{"provider": providerBitbucket, "account": acct.Name})
	wfID, err := h.startOnboarding(ctx, tenantID, instID, reason)
	if err != nil {
		h.deps.Logger.Error("start onboarding", "installation", instID, "error", err)
		_ = h.deps.Store.SetInstallationStatus(ctx, tenantID, instID, store.InstallationFailed, "could not start discovery; retry with POST /api/v1/installations/"+instID.String()+"/sync")
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "the account is connected but discovery could not start; retry with POST /api/v1/installations/"+instID.String()+"/sync")
		return
	}
	// A reconnect repairs an existing installation (200); a first connect creates one (201).
	created := http.StatusCreated
	if reconnected {
		created = http.StatusOK
	}
	if strings.Contains(c.GetHeader("Accept"), "text/html") {
		c.Data(created, "text/html; charset=utf-8", []byte("<!doctype html><title>GitSec</title><h1>Bitbucket connected</h1><p>Installation "+
			instID.String()+" is discovering workspaces and repositories.</p>"))
		return
	}
	c.JSON(created, gin.H{"installation_id": instID, "status": store.InstallationPending, "workflow_id": wfID, "reconnected": reconnected})
}

// startOnboarding starts discovery with an ID derived from the installation: a second start
// while one runs is refused by Temporal, so two discoveries never race.
func (h *handlers) startOnboarding(ctx context.Context, tenantID, instID uuid.UUID, reason string) (string, error) {
	id := workflows.OnboardWorkflowID(instID.String())
	_, err := h.deps.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                h.deps.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(tenantID.String()),
			workflows.SearchAttrInstallation.ValueSet(instID.String()),
		),
	}, workflows.OnboardInstallationWorkflowName, workflows.OnboardInput{
		InstallationRef: workflows.InstallationRef{TenantID: tenantID.String(), InstallationID: instID.String()},
		Reason:          reason,
	})
	return id, err
}

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
	ctx := c.Request.Context()
	// A discovery still running would register hooks behind the uninstall's back.
	if err := h.deps.Temporal.CancelWorkflow(ctx, workflows.OnboardWorkflowID(inst.ID.String()), ""); err != nil && !isNotFound(err) {
		h.deps.Logger.Warn("cancel onboarding before uninstall", "installation", inst.ID, "error", err)
	}
	id := workflows.UninstallWorkflowID(inst.ID.String())
	_, err := h.deps.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                h.deps.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.SearchAttrTenant.ValueSet(inst.TenantID.String()),
			workflows.SearchAttrInstallation.ValueSet(inst.ID.String()),
		),
	}, workflows.UninstallInstallationWorkflowName, workflows.InstallationRef{TenantID: inst.TenantID.String(), InstallationID: inst.ID.String()})
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
	id, err := h.startOnboarding(c.Request.Context(), inst.TenantID, inst.ID, "sync")
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
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

type bulkRequest struct {
	Include         []string `json:"include"`
	Exclude         []string `json:"exclude"`
	DefaultIncluded *bool    `json:"default_included"`
}

// bulkSetIncluded applies glob patterns over "workspace/slug": includes first, then excludes,
// so an exclude always wins. default_included decides for repositories discovered later.
func (h *handlers) bulkSetIncluded(c *gin.Context) {
	inst, ok := h.installationParam(c)
	if !ok {
		return
	}
	var req bulkRequest
	if !decodeJSON(c, &req) {
		return
	}
	if len(req.Include) == 0 && len(req.Exclude) == 0 && req.DefaultIncluded == nil {
		abortError(c, http.StatusBadRequest, "invalid_field", `give at least one of "include", "exclude" or "default_included"`)
		return
	}
	for _, p := range append(append([]string{}, req.Include...), req.Exclude...) {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			abortError(c, http.StatusBadRequest, "invalid_pattern", fmt.Sprintf("pattern %q is not a valid glob over workspace/slug", p))
			return
		}
	}
	ctx := c.Request.Context()
	names, err := h.deps.Store.RepositoryNames(ctx, inst.TenantID, inst.ID)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list repositories")
		return
	}
	include, exclude := matchAll(names, req.Include), matchAll(names, req.Exclude)
	excluded := map[string]bool{}
	for _, n := range exclude {
		excluded[n] = true
	}
	var onlyInclude []string
	for _, n := range include {
		if !excluded[n] {
			onlyInclude = append(onlyInclude, n)
		}
	}
	result, err := h.applyInclusion(ctx, inst, onlyInclude, exclude, req.DefaultIncluded)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not update the repositories")
		return
	}
	h.audit(c, inst.TenantID, "repositories.bulk_inclusion", "installation", inst.ID.String(), gin.H{
		"include": req.Include, "exclude": req.Exclude, "default_included": req.DefaultIncluded, "result": result,
	})
	c.JSON(http.StatusOK, result)
}

func (h *handlers) applyInclusion(ctx context.Context, inst store.Installation, include, exclude []string, defaultIncluded *bool) (gin.H, error) {
	nIn, err := h.deps.Store.SetIncludedByFullName(ctx, inst.TenantID, inst.ID, include, true)
	if err != nil {
		return nil, err
	}
	nOut, err := h.deps.Store.SetIncludedByFullName(ctx, inst.TenantID, inst.ID, exclude, false)
	if err != nil {
		return nil, err
	}
	result := gin.H{
		"matched_include": len(include), "matched_exclude": len(exclude),
		"changed_to_included": nIn, "changed_to_excluded": nOut,
	}
	if defaultIncluded != nil {
		if err := h.deps.Store.SetInstallationDefaultIncluded(ctx, inst.TenantID, inst.ID, *defaultIncluded); err != nil {
			return nil, err
		}
		result["default_included"] = *defaultIncluded
	}
	return result, nil
}

func matchAll(names, patterns []string) []string {
	var out []string
	for _, n := range names {
		for _, p := range patterns {
			if ok, _ := path.Match(p, n); ok {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}
