package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/restore"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/workflowstarts"
	"github.com/gitsec/gitsec/workflows"
)

// CreateRestoreRequest is the body of POST /api/v1/restores.
type CreateRestoreRequest struct {
	SnapshotID   string               `json:"snapshot_id"`
	RepositoryID string               `json:"repository_id"`
	At           string               `json:"at"`
	Target       RestoreTargetRequest `json:"target"`
	Options      RestoreOptionsInput  `json:"options"`
}

// RestoreTargetRequest is {"mode":"new","workspace","slug","private","project"} or
// {"mode":"existing","repository":"ws/slug","on_conflict":"fail|force"}.
type RestoreTargetRequest struct {
	Mode       string `json:"mode"`
	Workspace  string `json:"workspace"`
	Slug       string `json:"slug"`
	Private    *bool  `json:"private"`
	Project    string `json:"project"`
	Repository string `json:"repository"`
	OnConflict string `json:"on_conflict"`
}

// RestoreOptionsInput chooses what is restored; refs is "all" (the default) or a list of
// branch and tag names.
type RestoreOptionsInput struct {
	Refs                    json.RawMessage `json:"refs"`
	RestoreMetadata         bool            `json:"restore_metadata"`
	RestoreOpenPullRequests bool            `json:"restore_open_pull_requests"`
}

// RestoreView is a restore as the API shows it.
type RestoreView struct {
	ID                uuid.UUID                  `json:"id"`
	Status            string                     `json:"status"`
	Step              string                     `json:"step"`
	Message           string                     `json:"message"`
	SnapshotID        string                     `json:"snapshot_id"`
	RepositoryID      *uuid.UUID                 `json:"repository_id"`
	InstallationID    *uuid.UUID                 `json:"installation_id"`
	Target            string                     `json:"target"`
	TargetMode        string                     `json:"target_mode"`
	Request           json.RawMessage            `json:"request"`
	WorkflowID        string                     `json:"workflow_id"`
	CreatedRepository string                     `json:"created_repository,omitempty"`
	CreatedAt         time.Time                  `json:"created_at"`
	StartedAt         *time.Time                 `json:"started_at"`
	FinishedAt        *time.Time                 `json:"finished_at"`
	Progress          *workflows.RestoreProgress `json:"progress,omitempty"`
	Result            json.RawMessage            `json:"result,omitempty"`
}

// RestoreList is GET /api/v1/restores.
type RestoreList struct {
	Restores []RestoreView `json:"restores"`
}

func restoreView(r store.Restore) RestoreView {
	v := RestoreView{ID: r.ID, Status: r.Status, Step: r.Step, Message: r.StatusMessage, SnapshotID: r.SnapshotID,
		RepositoryID: r.RepositoryID, InstallationID: r.InstallationID, Target: r.Target, TargetMode: r.TargetMode,
		Request: r.Request, WorkflowID: r.WorkflowID, CreatedRepository: r.CreatedRepository, CreatedAt: r.CreatedAt.UTC(),
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
	if len(r.Result) > 2 {
		v.Result = r.Result
	}
	return v
}

// Bitbucket's repository slugs: lower case letters, digits, '-', '_' and '.'.
var restoreSlugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,61}$`)
var workspaceSlugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,61}$`)

func (h *handlers) createRestore(c *gin.Context) error {
	var req CreateRestoreRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	sn, err := h.restoreSnapshot(ctx, t.ID, req)
	if err != nil {
		return err
	}
	repo, err := h.deps.Store.GetRepository(ctx, t.ID, sn.RepositoryID)
	if err != nil {
		return failed("could not read the snapshot's repository", err)
	}
	target, err := restoreTarget(req.Target)
	if err != nil {
		return err
	}
	refs, err := restoreRefs(req.Options.Refs)
	if err != nil {
		return err
	}
	if h.deps.Archive == nil {
		return errNotConfigured("the API has no backup storage configured")
	}
	m, err := h.loadManifest(ctx, sn)
	if err != nil {
		return failed("could not read the snapshot's manifest", err)
	}
	if _, err := restore.ChooseRefs(m, refs); err != nil {
		return errInvalid("invalid_field", "field \"options.refs\": "+err.Error())
	}
	if h.deps.RestoreOAuth == nil || h.deps.RestoreOAuth.ClientID == "" || h.deps.Clients == nil {
		return errNotConfigured("restores into Bitbucket need the Restore App's OAuth consumer (GITSEC_BITBUCKET_RESTORE_CLIENT_ID); download the snapshot instead with GET /api/v1/snapshots/" + sn.ID + "/archive")
	}
	instID := repo.InstallationID
	if _, err := h.deps.Store.AppGrant(ctx, t.ID, instID, domain.AppRestore); errors.Is(err, store.ErrNoGrant) {
		return errConflict("restore_app_not_installed", "the Restore App is not installed for installation "+instID.String()+
			": it is a separate Bitbucket app with write access, installed only to restore. Install it with POST "+restoreConnectRoute(instID.String())+
			" (open the authorize_url it returns, grant access as the installation's account), then ask again")
	} else if err != nil {
		return failed("could not read the Restore App grant", err)
	}
	if err := h.checkRestoreTarget(ctx, t.ID, instID, target); err != nil {
		return err
	}
	raw, _ := json.Marshal(req)
	rid := uuid.New()
	row, err := h.deps.Store.CreateRestore(ctx, store.Restore{ID: rid, TenantID: t.ID, InstallationID: &instID, RepositoryID: &repo.ID, SnapshotID: sn.ID,
		Target: target.FullName(), TargetMode: target.Mode, Request: raw, WorkflowID: workflows.RestoreWorkflowID(rid.String())})
	if errors.Is(err, store.ErrRestoreActive) {
		// A workflow terminated from outside never recorded its end; settle it and try again.
		if active, aerr := h.deps.Store.ActiveRestore(ctx, t.ID, target.FullName()); aerr == nil && h.settleAbandoned(ctx, active, h.describeRestore(ctx, active)) {
			row, err = h.deps.Store.CreateRestore(ctx, store.Restore{ID: rid, TenantID: t.ID, InstallationID: &instID, RepositoryID: &repo.ID, SnapshotID: sn.ID,
				Target: target.FullName(), TargetMode: target.Mode, Request: raw, WorkflowID: workflows.RestoreWorkflowID(rid.String())})
		}
	}
	if errors.Is(err, store.ErrRestoreActive) {
		active, _ := h.deps.Store.ActiveRestore(ctx, t.ID, target.FullName())
		return errConflict("restore_in_progress", "restore "+active.ID.String()+" into "+target.FullName()+" is "+active.Status+
			"; wait for it (GET /api/v1/restores/"+active.ID.String()+") or cancel it before starting another")
	}
	if err != nil {
		return failed("could not record the restore", err)
	}
	in := workflows.RestoreInput{TenantID: t.ID.String(), RestoreID: row.ID.String(), InstallationID: instID.String(), RepositoryID: repo.ID.String(),
		RepositoryUUID: repo.ProviderUUID, SnapshotID: sn.ID, Target: target,
		Options: workflows.RestoreOptions{Refs: refs, RestoreMetadata: req.Options.RestoreMetadata, RestoreOpenPullRequests: req.Options.RestoreOpenPullRequests}}
	if _, err := h.starts.StartRestore(ctx, t.ID, instID, in); err != nil {
		_, _ = h.deps.Store.FinishRestore(context.WithoutCancel(ctx), t.ID, row.ID, domain.RestoreFailed, "the restore workflow could not start; ask again", nil)
		return failed("could not start the restore", err)
	}
	h.audit(c, t.ID, "restore.requested", "restore", row.ID.String(), gin.H{"snapshot_id": sn.ID, "repository": repo.FullName, "target": target.FullName(), "mode": target.Mode})
	c.JSON(http.StatusAccepted, restoreView(row))
	return nil
}

// restoreSnapshot finds the snapshot a request names: by ID, or the repository's latest at or
// before a time. Another tenant's snapshot or repository is not found, as an unknown one is.
func (h *handlers) restoreSnapshot(ctx context.Context, tenantID uuid.UUID, req CreateRestoreRequest) (store.Snapshot, error) {
	switch {
	case req.SnapshotID != "" && (req.RepositoryID != "" || req.At != ""):
		return store.Snapshot{}, errInvalid("invalid_field", "give either \"snapshot_id\" or \"repository_id\" with \"at\", not both")
	case req.SnapshotID != "":
		if !archive.ValidSnapshotID(req.SnapshotID) {
			return store.Snapshot{}, errInvalid("invalid_field", "field \"snapshot_id\": "+quoteValue(req.SnapshotID)+" is not a snapshot ID")
		}
		sn, err := h.deps.Store.GetSnapshot(ctx, tenantID, req.SnapshotID)
		if errors.Is(err, store.ErrNotFound) {
			return sn, errNotFound("snapshot", req.SnapshotID)
		}
		if err != nil {
			return sn, failed("could not read the snapshot", err)
		}
		return sn, nil
	case req.RepositoryID == "" || req.At == "":
		return store.Snapshot{}, errInvalid("missing_field", "name the snapshot: \"snapshot_id\", or \"repository_id\" with \"at\" (RFC 3339) for the latest snapshot at or before that time")
	}
	repoID, err := uuid.Parse(req.RepositoryID)
	if err != nil {
		return store.Snapshot{}, errInvalid("invalid_field", "field \"repository_id\": "+quoteValue(req.RepositoryID)+" is not a repository ID")
	}
	at, err := time.Parse(time.RFC3339, req.At)
	if err != nil {
		return store.Snapshot{}, errInvalid("invalid_field", "field \"at\": "+quoteValue(req.At)+" is not an RFC 3339 time (like 2026-12-01T12:00:00Z)")
	}
	if _, err := h.deps.Store.GetRepository(ctx, tenantID, repoID); errors.Is(err, store.ErrNotFound) {
		return store.Snapshot{}, errNotFound("repository", repoID.String())
	} else if err != nil {
		return store.Snapshot{}, failed("could not read the repository", err)
	}
	sn, err := h.deps.Store.SnapshotAt(ctx, tenantID, repoID, at)
	if errors.Is(err, store.ErrNotFound) {
		return sn, errInvalid("no_snapshot", "repository "+repoID.String()+" has no snapshot at or before "+at.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return sn, failed("could not find the snapshot", err)
	}
	return sn, nil
}

func quoteValue(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func restoreTarget(t RestoreTargetRequest) (workflows.RestoreTarget, error) {
	switch t.Mode {
	case domain.RestoreTargetNew:
		if !workspaceSlugPattern.MatchString(t.Workspace) {
			return workflows.RestoreTarget{}, errInvalid("invalid_field", "field \"target.workspace\": "+quoteValue(t.Workspace)+" is not a workspace slug")
		}
		if !restoreSlugPattern.MatchString(t.Slug) {
			return workflows.RestoreTarget{}, errInvalid("invalid_field", "field \"target.slug\": "+quoteValue(t.Slug)+
				" is not a valid repository slug (lower case letters, digits, '.', '-' and '_', at most 62)")
		}
		if t.OnConflict != "" || t.Repository != "" {
			return workflows.RestoreTarget{}, errInvalid("invalid_field", "\"target.repository\" and \"target.on_conflict\" belong to mode \"existing\"")
		}
		private := true
		if t.Private != nil {
			private = *t.Private
		}
		return workflows.RestoreTarget{Mode: t.Mode, Workspace: t.Workspace, Slug: t.Slug, Private: private, Project: t.Project}, nil
	case domain.RestoreTargetExisting:
		ws, slug, ok := strings.Cut(t.Repository, "/")
		if !ok || !workspaceSlugPattern.MatchString(ws) || !restoreSlugPattern.MatchString(strings.ToLower(slug)) {
			return workflows.RestoreTarget{}, errInvalid("invalid_field", "field \"target.repository\": "+quoteValue(t.Repository)+" is not \"workspace/slug\"")
		}
		onConflict := t.OnConflict
		if onConflict == "" {
			onConflict = domain.OnConflictFail
		}
		if onConflict != domain.OnConflictFail && onConflict != domain.OnConflictForce {
			return workflows.RestoreTarget{}, errInvalid("invalid_field", "field \"target.on_conflict\": "+quoteValue(t.OnConflict)+" is not \"fail\" or \"force\"")
		}
		return workflows.RestoreTarget{Mode: t.Mode, Workspace: ws, Slug: strings.ToLower(slug), OnConflict: onConflict}, nil
	}
	return workflows.RestoreTarget{}, errInvalid("invalid_field", "field \"target.mode\": "+quoteValue(t.Mode)+" is not \"new\" or \"existing\"")
}

func restoreRefs(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `"all"` {
		return nil, nil
	}
	var refs []string
	if err := json.Unmarshal(raw, &refs); err != nil || len(refs) == 0 {
		return nil, errInvalid("invalid_field", "field \"options.refs\" must be \"all\" or a non-empty list of branch and tag names")
	}
	return refs, nil
}

// checkRestoreTarget asks Bitbucket, with the Restore App's grant, whether the target is as the
// mode expects: free for a new repository, present for an existing one.
func (h *handlers) checkRestoreTarget(ctx context.Context, tenantID, instID uuid.UUID, t workflows.RestoreTarget) error {
	w, err := h.deps.Clients.RestoreClient(ctx, tenantID, instID)
	if err != nil {
		return failed("could not use the Restore App grant", err)
	}
	_, err = w.GetRepository(ctx, t.Workspace, t.Slug)
	switch {
	case errors.Is(err, bitbucket.ErrCredentialsRevoked):
		return errConflict("restore_app_revoked", "Bitbucket revoked the Restore App's grant; install it again with POST "+restoreConnectRoute(instID.String()))
	case t.Mode == domain.RestoreTargetNew && err == nil:
		return errInvalid("slug_taken", "repository "+t.FullName()+" exists already: choose another slug, or restore into it with target mode \"existing\"")
	case t.Mode == domain.RestoreTargetNew && errors.Is(err, bitbucket.ErrNotFound):
		return nil
	case t.Mode == domain.RestoreTargetExisting && errors.Is(err, bitbucket.ErrNotFound):
		return errInvalid("target_not_found", "repository "+t.FullName()+" does not exist (or the Restore App's account cannot see it); restore with target mode \"new\" to create it")
	case err != nil:
		return failed("could not check the target repository at Bitbucket", err)
	}
	return nil
}

func (h *handlers) restoreParam(c *gin.Context) (store.Restore, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return store.Restore{}, errNotFound("restore", c.Param("id"))
	}
	r, err := h.deps.Store.GetRestore(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, errNotFound("restore", id.String())
	}
	if err != nil {
		return r, failed("could not read the restore", err)
	}
	return r, nil
}

func (h *handlers) getRestore(c *gin.Context) error {
	r, err := h.restoreParam(c)
	if err != nil {
		return err
	}
	if domain.RestoreFinished(r.Status) || h.deps.Temporal == nil {
		c.JSON(http.StatusOK, restoreView(r))
		return nil
	}
	ctx := c.Request.Context()
	// One describe serves both questions: did the workflow end without recording, and what
	// does the running step's heartbeat say.
	desc := h.describeRestore(ctx, r)
	if h.settleAbandoned(ctx, r, desc) {
		if r, err = h.restoreParam(c); err != nil {
			return err
		}
	}
	v := restoreView(r)
	if !domain.RestoreFinished(r.Status) {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := h.deps.Temporal.QueryWorkflow(qctx, workflows.RestoreWorkflowID(r.ID.String()), "", workflows.RestoreProgressQuery)
		cancel()
		var p workflows.RestoreProgress
		if err == nil && resp.Get(&p) == nil {
			liveTransfer(desc, &p)
			v.Progress = &p
		}
	}
	c.JSON(http.StatusOK, v)
	return nil
}

func (h *handlers) listRestores(c *gin.Context) error {
	limit, err := intQuery(c, "limit", 50, 1, 200)
	if err != nil {
		return err
	}
	var repoID *uuid.UUID
	if s := c.Query("repository_id"); s != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return errInvalid("invalid_parameter", "parameter \"repository_id\": "+quoteValue(s)+" is not a repository ID")
		}
		repoID = &id
	}
	rows, err := h.deps.Store.ListRestores(c.Request.Context(), tenantOf(c).ID, repoID, limit)
	if err != nil {
		return failed("could not list restores", err)
	}
	out := RestoreList{Restores: []RestoreView{}}
	for _, r := range rows {
		out.Restores = append(out.Restores, restoreView(r))
	}
	c.JSON(http.StatusOK, out)
	return nil
}

func (h *handlers) cancelRestore(c *gin.Context) error {
	r, err := h.restoreParam(c)
	if err != nil {
		return err
	}
	if domain.RestoreFinished(r.Status) {
		return errConflict("restore_finished", "restore "+r.ID.String()+" has finished ("+r.Status+"); there is nothing to cancel")
	}
	err = h.starts.CancelRestore(c.Request.Context(), r.ID.String())
	if errors.Is(err, workflowstarts.ErrNotRunning) {
		return errConflict("restore_finished", "restore "+r.ID.String()+" is not running any more")
	}
	if err != nil {
		return failed("could not cancel the restore", err)
	}
	h.audit(c, r.TenantID, "restore.cancel_requested", "restore", r.ID.String(), gin.H{"target": r.Target})
	c.JSON(http.StatusAccepted, restoreView(r))
	return nil
}

// describeRestore asks Temporal about a restore's workflow; nil when it cannot say (not started
// yet, or Temporal unreachable).
func (h *handlers) describeRestore(ctx context.Context, r store.Restore) *workflowservice.DescribeWorkflowExecutionResponse {
	if h.deps.Temporal == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	desc, err := h.deps.Temporal.DescribeWorkflowExecution(dctx, workflows.RestoreWorkflowID(r.ID.String()), "")
	if err != nil {
		return nil
	}
	return desc
}

// settleAbandoned records as failed an unfinished restore whose workflow is closed without
// having recorded its outcome (terminated from the Temporal UI, or its record step failed for
// good), so it stops blocking its target. It reports whether it did. The workflow records its
// outcome before it closes, so closed and unrecorded means abandoned.
func (h *handlers) settleAbandoned(ctx context.Context, r store.Restore, desc *workflowservice.DescribeWorkflowExecutionResponse) bool {
	if desc == nil || desc.WorkflowExecutionInfo == nil || desc.WorkflowExecutionInfo.CloseTime == nil {
		return false
	}
	status := desc.WorkflowExecutionInfo.Status.String()
	done, err := h.deps.Store.FinishRestore(context.WithoutCancel(ctx), r.TenantID, r.ID, domain.RestoreFailed,
		"the restore workflow ended ("+status+") at step "+r.Step+" without recording its outcome; check the target and restore again", nil)
	if err != nil {
		h.deps.Logger.WarnContext(ctx, "settle an abandoned restore", "restore_id", r.ID, "error", err)
		return false
	}
	return done
}

// restoreHeartbeat is what the push step heartbeats (activities.BackupProgress): the hydration's
// download, then the push's progress.
type restoreHeartbeat struct {
	Step  string `json:"step"`
	Fetch *struct {
		Phase string
		Bytes int64
	} `json:"fetch"`
	Transfer *struct {
		Name  string `json:"name"`
		Size  int64  `json:"size"`
		Bytes int64  `json:"bytes"`
	} `json:"transfer"`
}

// liveTransfer fills the bytes moved so far and the sub-step from the running step's latest
// heartbeat, which the workflow itself only learns when the step ends.
func liveTransfer(desc *workflowservice.DescribeWorkflowExecutionResponse, p *workflows.RestoreProgress) {
	if desc == nil {
		return
	}
	for _, pa := range desc.PendingActivities {
		if pa.GetHeartbeatDetails() == nil || len(pa.GetHeartbeatDetails().Payloads) == 0 {
			continue
		}
		var hb restoreHeartbeat
		if json.Unmarshal(pa.GetHeartbeatDetails().Payloads[0].GetData(), &hb) != nil {
			continue
		}
		switch {
		case hb.Fetch != nil:
			p.Detail, p.Bytes = hb.Step+": "+hb.Fetch.Phase, hb.Fetch.Bytes
		case hb.Transfer != nil:
			p.Detail, p.Bytes = hb.Step+": "+hb.Transfer.Name, hb.Transfer.Bytes
		case hb.Step != "":
			p.Detail = hb.Step
		}
	}
}
