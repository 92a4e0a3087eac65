package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/retention"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/workflowstarts"
	"github.com/gitsec/gitsec/workflows"
)

// Retention (docs/retention.md): policies per installation (the default of its repositories)
// and per repository, a dry-run plan computed from storage, manual runs, and legal holds on
// snapshots. Every change is audited.

// RetentionPolicyDoc is a retention policy as the API spells it (the same document the
// database stores): keep_within is a Go duration ("168h") or days ("7d"), "" for none.
type RetentionPolicyDoc struct {
	KeepLast              int    `json:"keep_last"`
	KeepDaily             int    `json:"keep_daily"`
	KeepWeekly            int    `json:"keep_weekly"`
	KeepMonthly           int    `json:"keep_monthly"`
	KeepYearly            int    `json:"keep_yearly"`
	KeepWithin            string `json:"keep_within"`
	KeepBeforeDestructive bool   `json:"keep_before_destructive"`
}

// RetentionPolicyView is an effective policy and where it comes from: repository,
// installation or default.
type RetentionPolicyView struct {
	Policy RetentionPolicyDoc `json:"policy"`
	Source string             `json:"source"`
}

// RepositoryRetention is a repository's effective policy and its last retention run.
type RepositoryRetention struct {
	RepositoryID uuid.UUID          `json:"repository_id"`
	Policy       RetentionPolicyDoc `json:"policy"`
	Source       string             `json:"source"`
	LastRun      *RetentionRunView  `json:"last_run"`
}

// RetentionRunView is the outcome of a repository's last retention run.
type RetentionRunView struct {
	At             time.Time `json:"at"`
	Status         string    `json:"status"`
	Reason         string    `json:"reason"`
	Kept           int       `json:"kept"`
	Forgotten      int       `json:"forgotten"`
	ObjectsDeleted int       `json:"objects_deleted"`
	BytesFreed     int64     `json:"bytes_freed"`
	ObjectsPending int       `json:"objects_pending"`
	BytesPending   int64     `json:"bytes_pending"`
	ObjectsLocked  int       `json:"objects_locked"`
}

// RetentionPlan is what the effective policy would do now (nothing is deleted): the
// snapshots it would forget and keep, newest first, why each kept one is kept, and the bytes
// forgetting them would free.
type RetentionPlan struct {
	RepositoryID uuid.UUID           `json:"repository_id"`
	Source       string              `json:"source"`
	Forget       []string            `json:"forget"`
	Keep         []string            `json:"keep"`
	BytesFreed   int64               `json:"bytes_freed"`
	Decisions    []RetentionDecision `json:"decisions"`
}

// RetentionDecision is one snapshot's fate under the policy.
type RetentionDecision struct {
	SnapshotID string   `json:"snapshot_id"`
	Keep       bool     `json:"keep"`
	Reasons    []string `json:"reasons"`
}

// RetentionRunStarted answers a manual retention run.
type RetentionRunStarted struct {
	WorkflowID     string    `json:"workflow_id"`
	InstallationID uuid.UUID `json:"installation_id"`
	DryRun         bool      `json:"dry_run"`
}

type retentionRunRequest struct {
	DryRun bool `json:"dry_run"`
}

type legalHoldRequest struct {
	Reason string `json:"reason"`
}

func policyDoc(p retention.Policy) RetentionPolicyDoc {
	d := RetentionPolicyDoc{KeepLast: p.KeepLast, KeepDaily: p.KeepDaily, KeepWeekly: p.KeepWeekly, KeepMonthly: p.KeepMonthly,
		KeepYearly: p.KeepYearly, KeepBeforeDestructive: p.KeepBeforeDestructive}
	if p.KeepWithin > 0 {
		d.KeepWithin = p.KeepWithin.String()
	}
	return d
}

// readPolicy decodes and validates a policy body; a bad value is a 400 naming it.
func readPolicy(c *gin.Context) (retention.Policy, json.RawMessage, error) {
	var d RetentionPolicyDoc
	if err := decodeJSON(c, &d); err != nil {
		return retention.Policy{}, nil, err
	}
	p := retention.Policy{KeepLast: d.KeepLast, KeepDaily: d.KeepDaily, KeepWeekly: d.KeepWeekly, KeepMonthly: d.KeepMonthly,
		KeepYearly: d.KeepYearly, KeepBeforeDestructive: d.KeepBeforeDestructive}
	if d.KeepWithin != "" {
		w, err := retention.ParseWithin(d.KeepWithin)
		if err != nil {
			return retention.Policy{}, nil, errInvalid("invalid_retention_policy", err.Error())
		}
		p.KeepWithin = w
	}
	if err := p.Validate(); err != nil {
		return retention.Policy{}, nil, errInvalid("invalid_retention_policy", strings.TrimPrefix(err.Error(), "--"))
	}
	doc, err := json.Marshal(p)
	if err != nil {
		return retention.Policy{}, nil, failed("could not encode the policy", err)
	}
	return p, doc, nil
}

func (h *handlers) getInstallationRetention(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	doc, err := h.deps.Store.InstallationRetentionPolicy(c.Request.Context(), inst.TenantID, inst.ID)
	if err != nil {
		return failed("could not read the retention policy", err)
	}
	p, source, err := retention.Effective(nil, doc)
	if err != nil {
		return failed("the stored retention policy is invalid", err)
	}
	c.JSON(http.StatusOK, RetentionPolicyView{Policy: policyDoc(p), Source: source})
	return nil
}

func (h *handlers) putInstallationRetention(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	p, doc, err := readPolicy(c)
	if err != nil {
		return err
	}
	if err := h.deps.Store.SetInstallationRetentionPolicy(c.Request.Context(), inst.TenantID, inst.ID, doc); err != nil {
		return failed("could not store the retention policy", err)
	}
	h.audit(c, inst.TenantID, domain.AuditRetentionPolicyChange, "installation", inst.ID.String(), gin.H{"policy": policyDoc(p)})
	c.JSON(http.StatusOK, RetentionPolicyView{Policy: policyDoc(p), Source: retention.SourceInstallation})
	return nil
}

func (h *handlers) deleteInstallationRetention(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	if err := h.deps.Store.SetInstallationRetentionPolicy(c.Request.Context(), inst.TenantID, inst.ID, nil); err != nil {
		return failed("could not reset the retention policy", err)
	}
	h.audit(c, inst.TenantID, domain.AuditRetentionPolicyChange, "installation", inst.ID.String(), gin.H{"policy": nil, "source": retention.SourceDefault})
	c.JSON(http.StatusOK, RetentionPolicyView{Policy: policyDoc(retention.DefaultPolicy()), Source: retention.SourceDefault})
	return nil
}

// repositoryPolicy resolves the repository's effective policy.
func (h *handlers) repositoryPolicy(c *gin.Context, r store.Repository) (retention.Policy, string, error) {
	repoDoc, instDoc, err := h.deps.Store.RetentionPolicies(c.Request.Context(), r.TenantID, r.ID)
	if err != nil {
		return retention.Policy{}, "", failed("could not read the retention policy", err)
	}
	p, source, err := retention.Effective(repoDoc, instDoc)
	if err != nil {
		return retention.Policy{}, "", failed("the stored retention policy is invalid", err)
	}
	return p, source, nil
}

func (h *handlers) getRepositoryRetention(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	p, source, err := h.repositoryPolicy(c, r)
	if err != nil {
		return err
	}
	resp := RepositoryRetention{RepositoryID: r.ID, Policy: policyDoc(p), Source: source}
	run, err := h.deps.Store.LastRetentionRun(c.Request.Context(), r.TenantID, r.ID)
	if err != nil {
		return failed("could not read the last retention run", err)
	}
	if run != nil {
		var res workflows.RetentionRepositoryResult
		if err := json.Unmarshal(run.Result, &res); err != nil {
			return failed("could not read the last retention run", err)
		}
		resp.LastRun = &RetentionRunView{At: run.At, Status: res.Status, Reason: res.Reason, Kept: res.Kept, Forgotten: res.Forgotten,
			ObjectsDeleted: res.ObjectsDeleted, BytesFreed: res.BytesFreed, ObjectsPending: res.ObjectsPending,
			BytesPending: res.BytesPending, ObjectsLocked: res.ObjectsLocked}
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

func (h *handlers) putRepositoryRetention(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	p, doc, err := readPolicy(c)
	if err != nil {
		return err
	}
	if err := h.deps.Store.SetRepositoryRetentionPolicy(c.Request.Context(), r.TenantID, r.ID, doc); err != nil {
		return failed("could not store the retention policy", err)
	}
	h.audit(c, r.TenantID, domain.AuditRetentionPolicyChange, "repository", r.ID.String(), gin.H{"full_name": r.FullName, "policy": policyDoc(p)})
	return h.getRepositoryRetention(c)
}

func (h *handlers) deleteRepositoryRetention(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	if err := h.deps.Store.SetRepositoryRetentionPolicy(c.Request.Context(), r.TenantID, r.ID, nil); err != nil {
		return failed("could not reset the retention policy", err)
	}
	h.audit(c, r.TenantID, domain.AuditRetentionPolicyChange, "repository", r.ID.String(), gin.H{"full_name": r.FullName, "policy": nil, "source": "inherited"})
	return h.getRepositoryRetention(c)
}

// getRetentionPlan is a dry run from storage alone, as `gitsec retention plan` does offline,
// with the repository's effective policy and legal holds.
func (h *handlers) getRetentionPlan(c *gin.Context) error {
	r, err := h.loadRepository(c)
	if err != nil {
		return err
	}
	if h.deps.Archive == nil {
		return &apiError{status: http.StatusServiceUnavailable, code: "storage_unavailable", message: "this API server has no backup storage configured"}
	}
	p, source, err := h.repositoryPolicy(c, r)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	holds, err := h.deps.Store.LegalHolds(ctx, r.TenantID, r.ID)
	if err != nil {
		return failed("could not read legal holds", err)
	}
	key, err := archive.NewRepoKey(r.TenantID.String(), r.ProviderUUID)
	if err != nil {
		return failed("invalid repository key", err)
	}
	plan, err := retention.PlanRepository(ctx, h.deps.Archive, key, p, holds)
	if errors.Is(err, archive.ErrInvalidManifest) {
		return errConflict("manifest_invalid", err.Error())
	}
	if err != nil {
		return failed("could not plan retention", err)
	}
	resp := RetentionPlan{RepositoryID: r.ID, Source: source, Forget: plan.Forget, Keep: plan.Keep, BytesFreed: plan.BytesFreed,
		Decisions: make([]RetentionDecision, 0, len(plan.Decisions))}
	for _, d := range plan.Decisions {
		reasons := d.Reasons
		if reasons == nil {
			reasons = []string{}
		}
		resp.Decisions = append(resp.Decisions, RetentionDecision{SnapshotID: d.ID, Keep: d.Keep, Reasons: reasons})
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

func (h *handlers) startRetentionRun(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	var req retentionRunRequest
	if c.Request.ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			return err
		}
	}
	id, err := h.starts.StartRetention(c.Request.Context(), inst.TenantID, inst.ID, req.DryRun)
	if errors.Is(err, workflowstarts.ErrAlreadyRunning) {
		return errConflict("retention_running", "a retention run of installation "+inst.ID.String()+" is already under way (workflow "+id+")")
	}
	if err != nil {
		return failed("could not start the retention run", err)
	}
	h.audit(c, inst.TenantID, "retention.run_requested", "installation", inst.ID.String(), gin.H{"dry_run": req.DryRun, "workflow_id": id})
	c.JSON(http.StatusAccepted, RetentionRunStarted{WorkflowID: id, InstallationID: inst.ID, DryRun: req.DryRun})
	return nil
}

// maxHoldReason bounds a legal hold's reason; it is shown in listings and audit events.
const maxHoldReason = 500

func (h *handlers) setLegalHold(c *gin.Context) error {
	sn, err := h.tenantSnapshot(c)
	if err != nil {
		return err
	}
	var req legalHoldRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	req.Reason = strings.TrimSpace(req.Reason)
	if req.Reason == "" || len(req.Reason) > maxHoldReason {
		return errInvalid("invalid_reason", "a legal hold needs a reason of 1 to 500 characters (who asked for it and why)")
	}
	held, err := h.deps.Store.SetLegalHold(c.Request.Context(), sn.TenantID, sn.ID, req.Reason, actorOf(c))
	if err != nil {
		return failed("could not set the legal hold", err)
	}
	h.audit(c, sn.TenantID, domain.AuditLegalHoldSet, "snapshot", sn.ID, gin.H{"repository_id": sn.RepositoryID.String(), "reason": req.Reason})
	c.JSON(http.StatusOK, SnapshotDetail{Snapshot: snapshotView(held)})
	return nil
}

func (h *handlers) releaseLegalHold(c *gin.Context) error {
	sn, err := h.tenantSnapshot(c)
	if err != nil {
		return err
	}
	released, err := h.deps.Store.ReleaseLegalHold(c.Request.Context(), sn.TenantID, sn.ID)
	if err != nil {
		return failed("could not release the legal hold", err)
	}
	h.audit(c, sn.TenantID, domain.AuditLegalHoldReleased, "snapshot", sn.ID, gin.H{"repository_id": sn.RepositoryID.String()})
	c.JSON(http.StatusOK, SnapshotDetail{Snapshot: snapshotView(released)})
	return nil
}
