package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/prrestore"
	"github.com/gitsec/gitsec/internal/restore"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Restores runs the steps of the Restore workflow. It writes to Bitbucket only through the
// Restore App's client (a *bitbucket.Writer) and only reads backup storage.
type Restores struct {
	Store   *store.Store
	Clients *providerclient.Factory
	Archive *archive.Store
	// ScratchDir holds the repositories hydrated for restores, one per restore, removed after.
	ScratchDir string
	// PublicURL links re-created pull requests to their archived copy.
	PublicURL string
	Logger    *slog.Logger
}

type restoreRef struct {
	tenant, restore, installation uuid.UUID
}

func parseRestore(in workflows.RestoreInput) (restoreRef, error) {
	var r restoreRef
	var err error
	for _, f := range []struct {
		dst  *uuid.UUID
		v, n string
	}{{&r.tenant, in.TenantID, "tenant"}, {&r.restore, in.RestoreID, "restore"}, {&r.installation, in.InstallationID, "installation"}} {
		if *f.dst, err = uuid.Parse(f.v); err != nil {
			return r, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid %s ID %q", f.n, f.v), domain.ErrTypeInvalidInput, nil)
		}
	}
	return r, nil
}

// writer is the Restore App's client; a missing grant or consumer is for a person to fix.
func (a *Restores) writer(ctx context.Context, ref restoreRef) (*bitbucket.Writer, error) {
	w, err := a.Clients.RestoreClient(ctx, ref.tenant, ref.installation)
	switch {
	case errors.Is(err, store.ErrNoGrant):
		return nil, temporal.NewNonRetryableApplicationError(
			"the Restore App is not installed for this installation (or its grant was removed): connect it with POST /api/v1/installations/"+
				ref.installation.String()+"/restore-app/connect", domain.ErrTypeRestoreGrantMissing, nil)
	case errors.Is(err, providerclient.ErrRestoreNotConfigured):
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeMisconfigured, nil)
	case err != nil:
		return nil, classify("restore app client", err)
	}
	return w, nil
}

// restoreError classifies a Bitbucket failure of a restore step, naming the grant when the
// Restore App's tokens were revoked.
func restoreError(what string, err error) error {
	if errors.Is(err, bitbucket.ErrCredentialsRevoked) {
		return temporal.NewNonRetryableApplicationError(what+": Bitbucket revoked the Restore App's grant; connect the Restore App again: "+err.Error(),
			domain.ErrTypeCredentialsRevoked, nil)
	}
	return classify(what, err)
}

// CheckRestoreGrant marks the restore running and proves the Restore App's tokens work (a
// refresh happens here if they expired).
func (a *Restores) CheckRestoreGrant(ctx context.Context, in workflows.RestoreInput) error {
	ref, err := parseRestore(in)
	if err != nil {
		return err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepCheckGrant); err != nil {
		return err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return err
	}
	if _, err := w.CurrentUser(ctx); err != nil {
		return restoreError("check the Restore App's grant", err)
	}
	return nil
}

// PrepareRestoreTarget creates the new repository, or finds the existing one. A repository
// this restore created (an earlier attempt whose answer was lost) is reused; one somebody else
// created under the slug is a conflict.
func (a *Restores) PrepareRestoreTarget(ctx context.Context, in workflows.RestoreInput) (workflows.RestoreTargetInfo, error) {
	ref, err := parseRestore(in)
	if err != nil {
		return workflows.RestoreTargetInfo{}, err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepCreateTarget); err != nil {
		return workflows.RestoreTargetInfo{}, err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return workflows.RestoreTargetInfo{}, err
	}
	t := in.Target
	existing, err := w.GetRepository(ctx, t.Workspace, t.Slug)
	if err != nil && !errors.Is(err, bitbucket.ErrNotFound) {
		return workflows.RestoreTargetInfo{}, restoreError("look up the target "+t.FullName(), err)
	}
	if t.Mode == domain.RestoreTargetExisting {
		if existing == nil {
			return workflows.RestoreTargetInfo{}, temporal.NewNonRetryableApplicationError(
				"the target repository "+t.FullName()+" does not exist (or the Restore App's account cannot see it)", domain.ErrTypeRestoreTargetMissing, nil)
		}
		return workflows.RestoreTargetInfo{UUID: archive.NormalizeUUID(existing.UUID)}, nil
	}
	row, err := a.Store.GetRestore(ctx, ref.tenant, ref.restore)
	if err != nil {
		return workflows.RestoreTargetInfo{}, err
	}
	if existing != nil {
		if row.CreatedRepository != "" && row.CreatedRepository == archive.NormalizeUUID(existing.UUID) {
			return workflows.RestoreTargetInfo{UUID: row.CreatedRepository, Created: true}, nil
		}
		return workflows.RestoreTargetInfo{}, temporal.NewNonRetryableApplicationError(
			"a repository named "+t.FullName()+" exists already and this restore did not create it; restore into it with target mode \"existing\" or choose another slug",
			domain.ErrTypeRestoreTargetConflict, nil)
	}
	created, err := w.CreateRepository(ctx, t.Workspace, t.Slug, bitbucket.CreateRepositoryRequest{
		IsPrivate: t.Private, ProjectKey: t.Project, Description: "Restored by GitSec from snapshot " + in.SnapshotID,
	})
	if err != nil {
		return workflows.RestoreTargetInfo{}, restoreError("create the target "+t.FullName(), err)
	}
	id := archive.NormalizeUUID(created.UUID)
	if err := a.Store.SetRestoreCreatedRepository(ctx, ref.tenant, ref.restore, id); err != nil {
		return workflows.RestoreTargetInfo{}, err
	}
	a.logger().InfoContext(ctx, "restore created the target repository", "restore_id", in.RestoreID, "target", t.FullName())
	return workflows.RestoreTargetInfo{UUID: id, Created: true}, nil
}

func (a *Restores) manifest(ctx context.Context, in workflows.RestoreInput) (*archive.Manifest, error) {
	key, err := archive.NewRepoKey(in.TenantID, in.RepositoryUUID)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	m, err := a.Archive.LoadManifest(ctx, key, in.SnapshotID)
	if errors.Is(err, archive.ErrCorrupt) {
		return nil, temporal.NewNonRetryableApplicationError("snapshot "+in.SnapshotID+": "+err.Error(), domain.ErrTypeSnapshotCorrupt, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", in.SnapshotID, err)
	}
	return m, nil
}

// PushRestore hydrates the snapshot into a scratch repository (every pack's checksum is
// verified while it downloads, before anything is pushed) and pushes the chosen refs with the
// Restore App's token. A retry hydrates again and sends only what the target still lacks.
func (a *Restores) PushRestore(ctx context.Context, in workflows.RestoreInput) (workflows.RestorePushResult, error) {
	var out workflows.RestorePushResult
	ref, err := parseRestore(in)
	if err != nil {
		return out, err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepPush); err != nil {
		return out, err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return out, err
	}
	m, err := a.manifest(ctx, in)
	if err != nil {
		return out, err
	}
	if _, err := restore.ChooseRefs(m, in.Options.Refs); err != nil {
		return out, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	hb := startHeartbeat(ctx)
	defer hb.stop()
	dir := filepath.Join(a.ScratchDir, in.RestoreID)
	// Whatever an earlier attempt left is not trusted: hydrate afresh.
	if err := os.RemoveAll(dir); err != nil {
		return out, fmt.Errorf("clear scratch repository: %w", err)
	}
	defer os.RemoveAll(dir)
	hb.step("hydrate")
	mirror, err := a.Archive.Hydrate(ctx, m, filepath.Join(dir, "repo.git"), func(ev archive.TransferEvent) {
		hb.report(BackupProgress{Step: "hydrate", Transfer: &ev})
	})
	if errors.Is(err, archive.ErrCorrupt) {
		return out, temporal.NewNonRetryableApplicationError("snapshot "+m.ID+" failed its checksum check, nothing was pushed: "+err.Error(), domain.ErrTypeSnapshotCorrupt, nil)
	}
	if err != nil {
		return out, fmt.Errorf("hydrate snapshot %s: %w", m.ID, err)
	}
	defer mirror.Close()
	hb.step("push")
	url := w.CloneURL(in.Target.Workspace, in.Target.Slug)
	var res restore.Result
	err = w.WithPushAuth(ctx, func(auth *githttp.BasicAuth) error {
		var perr error
		res, perr = restore.Push(ctx, mirror, m, url, auth, restore.Options{
			Refs: in.Options.Refs, OnConflict: in.Target.OnConflict,
			Progress: func(p gitmirror.Progress) { hb.report(BackupProgress{Step: "push", Fetch: &p}) },
		})
		return perr
	})
	out = pushResult(m, res)
	if errors.Is(err, restore.ErrConflict) {
		out.Refused = true
		return out, nil
	}
	if errors.Is(err, bitbucket.ErrNotFound) || (err != nil && strings.Contains(err.Error(), "repository not found")) {
		return out, temporal.NewNonRetryableApplicationError("the target repository "+in.Target.FullName()+" is gone (deleted while the restore ran?): "+err.Error(),
			domain.ErrTypeRestoreTargetMissing, nil)
	}
	if err != nil {
		return out, restoreError("push to "+in.Target.FullName(), err)
	}
	a.logger().InfoContext(ctx, "restore pushed", "restore_id", in.RestoreID, "target", in.Target.FullName(),
		"refs", len(res.Wanted), "pushed", len(res.Pushed), "rejected", len(res.Rejected), "bytes", out.Bytes)
	return out, nil
}

func pushResult(m *archive.Manifest, res restore.Result) workflows.RestorePushResult {
	out := workflows.RestorePushResult{Wanted: res.Wanted, Pushed: res.Pushed, Skipped: res.Skipped, Rejected: res.Rejected,
		HeadBranch: strings.TrimPrefix(m.Head, "refs/heads/"), Bytes: m.Totals.Bytes}
	for _, c := range res.Conflicts {
		out.Conflicts = append(out.Conflicts, workflows.RefConflict(c))
	}
	return out
}

// ApplyRestoreMetadata sets the main branch (the snapshot's HEAD, when it was pushed) and,
// when asked, the description and the branch restrictions the backup could read. Settings the
// grant may not change are reported, not fatal.
func (a *Restores) ApplyRestoreMetadata(ctx context.Context, in workflows.RestoreStepInput) (workflows.RestoreMetadataResult, error) {
	out := workflows.RestoreMetadataResult{Applied: []string{}, Skipped: map[string]string{}}
	ref, err := parseRestore(in.Restore)
	if err != nil {
		return out, err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepMetadata); err != nil {
		return out, err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return out, err
	}
	t := in.Restore.Target
	var md *archive.RepositoryMetadata
	if in.Restore.Options.RestoreMetadata {
		m, err := a.manifest(ctx, in.Restore)
		if err != nil {
			return out, err
		}
		md, err = a.Archive.LoadMetadata(ctx, m)
		switch {
		case errors.Is(err, archive.ErrNoExport):
			out.NotInBackup = map[string]string{"metadata": "the snapshot has no metadata export"}
		case errors.Is(err, archive.ErrCorrupt):
			out.Skipped["metadata"] = "the snapshot's metadata export failed its checksum: " + err.Error()
			md = nil
		case err != nil:
			return out, fmt.Errorf("load metadata of snapshot %s: %w", m.ID, err)
		}
	}
	var upd bitbucket.UpdateRepositoryRequest
	head := ""
	if in.Push != nil && in.Push.HeadBranch != "" && pushedOrPresent(in.Push, "refs/heads/"+in.Push.HeadBranch) {
		head = in.Push.HeadBranch
		upd.MainBranch = bitbucket.MainBranchName(head)
	}
	if md != nil {
		desc := md.Description
		upd.Description = &desc
	}
	if upd.MainBranch != nil || upd.Description != nil {
		if _, err := w.UpdateRepository(ctx, t.Workspace, t.Slug, upd); err != nil {
			if errors.Is(err, bitbucket.ErrForbidden) {
				out.Skipped["repository_settings"] = "not permitted: " + err.Error()
			} else {
				return out, restoreError("set the main branch and description", err)
			}
		} else {
			if upd.MainBranch != nil {
				out.Applied = append(out.Applied, "main_branch")
			}
			if upd.Description != nil {
				out.Applied = append(out.Applied, "description")
			}
		}
	}
	if md != nil {
		a.restoreBranchRestrictions(ctx, w, t, md, &out)
	}
	if len(out.Skipped) == 0 {
		out.Skipped = nil
	}
	return out, nil
}

func pushedOrPresent(p *workflows.RestorePushResult, name string) bool {
	for _, r := range p.Pushed {
		if r == name {
			return true
		}
	}
	_, skipped := p.Skipped[name]
	_, rejected := p.Rejected[name]
	return skipped && !rejected
}

// restoreBranchRestrictions re-creates the recorded branch permissions the target lacks (the
// same kind and pattern); a retry finds the ones it made and skips them.
func (a *Restores) restoreBranchRestrictions(ctx context.Context, w *bitbucket.Writer, t workflows.RestoreTarget, md *archive.RepositoryMetadata, out *workflows.RestoreMetadataResult) {
	sec := md.BranchRestrictions
	if sec.Status != "" && sec.Status != archive.SectionOK {
		if out.NotInBackup == nil {
			out.NotInBackup = map[string]string{}
		}
		out.NotInBackup["branch_restrictions"] = "the backup could not read them (" + sec.Status + ")"
		return
	}
	if len(sec.Items) == 0 {
		return
	}
	have, err := w.ListBranchRestrictions(ctx, t.Workspace, t.Slug)
	if err != nil {
		out.Skipped["branch_restrictions"] = "not permitted: " + err.Error()
		return
	}
	exists := map[string]bool{}
	for _, br := range have {
		exists[br.Kind+"\x00"+br.Pattern+"\x00"+br.BranchType] = true
	}
	made, failed := 0, []string{}
	for _, br := range sec.Items {
		if exists[br.Kind+"\x00"+br.Pattern+"\x00"+br.BranchType] {
			continue
		}
		req := bitbucket.CreateBranchRestrictionRequest{Kind: br.Kind, BranchMatchKind: br.BranchMatchKind, BranchType: br.BranchType,
			Pattern: br.Pattern, Value: br.Value}
		for _, u := range br.Users {
			if u != nil && u.UUID != "" {
				req.Users = append(req.Users, bitbucket.User{UUID: u.UUID})
			}
		}
		for _, g := range br.Groups {
			req.Groups = append(req.Groups, map[string]string{"slug": g})
		}
		if _, err := w.CreateBranchRestriction(ctx, t.Workspace, t.Slug, req); err != nil {
			failed = append(failed, br.Kind+" "+br.Pattern+br.BranchType+": "+err.Error())
			continue
		}
		made++
	}
	if made > 0 || len(failed) == 0 {
		out.Applied = append(out.Applied, "branch_restrictions")
	}
	if len(failed) > 0 {
		out.Skipped["branch_restrictions"] = fmt.Sprintf("%d of %d not restored: %s", len(failed), len(sec.Items), strings.Join(failed, "; "))
	}
}

// RecreateRestorePullRequests opens the snapshot's open pull requests in the target. It runs
// once (RestorePullRequestActivity): Bitbucket cannot import pull requests, and opening them
// twice is worse than reporting a failed attempt.
func (a *Restores) RecreateRestorePullRequests(ctx context.Context, in workflows.RestoreStepInput) (workflows.RestorePullRequestsResult, error) {
	var out workflows.RestorePullRequestsResult
	ref, err := parseRestore(in.Restore)
	if err != nil {
		return out, err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepPullRequests); err != nil {
		return out, err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return out, err
	}
	m, err := a.manifest(ctx, in.Restore)
	if err != nil {
		return out, err
	}
	prs, _, err := a.Archive.LoadPullRequests(ctx, m)
	if errors.Is(err, archive.ErrNoExport) {
		out.NeverRestorable = []string{"the snapshot has no pull request export"}
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("load pull requests of snapshot %s: %w", m.ID, err)
	}
	branches := map[string]bool{}
	for _, r := range in.Wanted {
		if name, ok := strings.CutPrefix(r, "refs/heads/"); ok && in.Push != nil {
			if _, rejected := in.Push.Rejected[r]; !rejected {
				branches[name] = true
			}
		}
	}
	rep := prrestore.RecreateOpenPullRequests(ctx, w, prrestore.Target{Workspace: in.Restore.Target.Workspace, Slug: in.Restore.Target.Slug}, prs,
		prrestore.Options{BranchExists: func(name string) bool { return branches[name] }, ArchiveURL: a.archiveURL(in.Restore)})
	out = workflows.RestorePullRequestsResult{Restored: rep.Restored, Failed: rep.Failed, Skipped: rep.Skipped, NeverRestorable: rep.NeverRestorable}
	for _, r := range rep.Results {
		out.Results = append(out.Results, workflows.RestoredPullRequest{OriginalID: r.OriginalID, Title: r.Title, Restored: r.Restored,
			NewID: r.NewID, Reason: r.Reason, Detail: r.Detail})
	}
	return out, nil
}

func (a *Restores) archiveURL(in workflows.RestoreInput) func(int64) string {
	if a.PublicURL == "" {
		return nil
	}
	return func(id int64) string {
		return fmt.Sprintf("%s/api/v1/snapshots/%s/pull-requests/%d", strings.TrimRight(a.PublicURL, "/"), in.SnapshotID, id)
	}
}

// VerifyRestore lists the target's refs and returns the chosen refs whose commit differs from
// the snapshot's.
func (a *Restores) VerifyRestore(ctx context.Context, in workflows.RestoreStepInput) ([]string, error) {
	ref, err := parseRestore(in.Restore)
	if err != nil {
		return nil, err
	}
	if err := a.Store.MarkRestoreRunning(ctx, ref.tenant, ref.restore, domain.RestoreStepVerify); err != nil {
		return nil, err
	}
	w, err := a.writer(ctx, ref)
	if err != nil {
		return nil, err
	}
	m, err := a.manifest(ctx, in.Restore)
	if err != nil {
		return nil, err
	}
	var mismatches []string
	err = w.WithPushAuth(ctx, func(auth *githttp.BasicAuth) error {
		var verr error
		mismatches, verr = restore.Verify(ctx, m, in.Wanted, w.CloneURL(in.Restore.Target.Workspace, in.Restore.Target.Slug), auth)
		return verr
	})
	if err != nil {
		return nil, restoreError("verify "+in.Restore.Target.FullName(), err)
	}
	return mismatches, nil
}

// FinishRestore records the outcome once, with an audit event.
func (a *Restores) FinishRestore(ctx context.Context, out workflows.RestoreOutcome) error {
	tenantID, err := uuid.Parse(out.TenantID)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("invalid tenant ID "+out.TenantID, domain.ErrTypeInvalidInput, nil)
	}
	id, err := uuid.Parse(out.RestoreID)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("invalid restore ID "+out.RestoreID, domain.ErrTypeInvalidInput, nil)
	}
	result, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode restore result: %w", err)
	}
	first, err := a.Store.FinishRestore(ctx, tenantID, id, out.Status, out.Message, result)
	if err != nil || !first {
		return err
	}
	details, _ := json.Marshal(map[string]any{"status": out.Status, "target": out.Target, "refs_pushed": out.RefsPushed,
		"refs_total": out.RefsTotal, "message": out.Message})
	if err := a.Store.RecordAudit(ctx, store.AuditEvent{TenantID: tenantID, Actor: "gitsec", Action: "restore.finished",
		TargetType: "restore", TargetID: out.RestoreID, Details: details}); err != nil {
		return err
	}
	a.logger().InfoContext(ctx, "restore finished", "restore_id", out.RestoreID, "status", out.Status, "target", out.Target,
		"refs_pushed", out.RefsPushed, "refs_total", out.RefsTotal, "duration_ms", out.DurationMS)
	return nil
}

func (a *Restores) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.Default()
	}
	return a.Logger
}
