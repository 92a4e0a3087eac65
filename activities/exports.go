package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/repoexport"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Exports runs the export step of backups: pull requests and repository metadata over the
// REST API into export objects of the snapshot. It needs no mirror, so it runs on the shared
// queue; its REST calls spend the installation's budget like every other call.
type Exports struct {
	Store    *store.Store
	Clients  *providerclient.Factory
	Archive  *archive.Store
	Settings repoexport.Settings
	Logger   *slog.Logger
}

// exportLeaseTTL outlives an export step (the activity's start-to-close timeout).
const exportLeaseTTL = time.Hour

// ExportRepositoryData exports the repository's pull requests and metadata and adds them to
// the run's snapshot: to the staged draft when the code changed, else to a new draft over the
// latest snapshot's code when an export object changed (a PR was commented on while nobody
// pushed). When nothing changed it returns the input: the run stays unchanged.
func (a *Exports) ExportRepositoryData(ctx context.Context, in workflows.ExportInput) (workflows.RunBackupResult, error) {
	res := in.Staged
	tenantID, instID, repoID, err := parseTarget(in.Target)
	if err != nil {
		return res, err
	}
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return res, classify("load repository", err)
	}
	if store.BackupsStopped(repo.InstallationStatus) {
		return res, nil
	}
	workspace, slug, ok := strings.Cut(repo.FullName, "/")
	if !ok {
		return res, temporal.NewNonRetryableApplicationError("repository full name "+repo.FullName+" is not workspace/slug", domain.ErrTypeInvalidInput, nil)
	}
	key, err := archive.NewRepoKey(tenantID.String(), repo.ProviderUUID)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	client, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return res, classify("load credentials", err)
	}
	latest, err := a.Archive.LoadManifest(ctx, key, "latest")
	if err != nil && !errors.Is(err, archive.ErrNotFound) {
		return res, fmt.Errorf("load latest snapshot of %s: %w", repo.FullName, err)
	}
	var draft *archive.Manifest
	if in.Staged.DraftKey != "" {
		if draft, err = a.Archive.LoadDraft(ctx, key, in.Staged.SnapshotID); err != nil {
			return res, fmt.Errorf("load staged snapshot %s of %s: %w", in.Staged.SnapshotID, repo.FullName, err)
		}
	}
	if draft == nil && latest == nil {
		// Nothing staged and nothing stored: there is no code to attach exports to.
		return res, nil
	}
	base := draft
	if base == nil {
		base = latest
	}

	hb := startHeartbeat(ctx)
	defer hb.stop()
	// Export objects are written (or found already stored) before the draft names them: no
	// retention sweep of this repository meanwhile.
	releaseLease, err := holdStagingLease(ctx, a.Store, tenantID, repoID, exportLeaseTTL, func() { hb.step("waiting for a retention sweep") })
	if err != nil {
		return res, err
	}
	defer releaseLease()
	hb.step("exporting pull requests and metadata")
	exp := &repoexport.Exporter{Client: client, Archive: a.Archive, Settings: a.Settings, Logger: a.logger()}
	out, err := exp.Run(ctx, repoexport.Request{
		Repo: key, Workspace: workspace, Slug: slug, Previous: latest, Refs: base.Refs, Pins: base.Pins, PullRequests: in.PullRequests,
		Progress: func(done, total int) {
			hb.step(fmt.Sprintf("fetching pull requests (%d of %d)", done, total))
		},
	})
	if err != nil {
		return res, fmt.Errorf("export %s: %w", repo.FullName, err)
	}
	summary := &workflows.ExportSummary{RESTCalls: out.RESTCalls, Complete: true}
	for _, e := range out.Exports {
		if e.Kind == archive.ExportPullRequests {
			summary.PullRequests = e.Records
		}
		if !e.Complete {
			summary.Complete = false
			summary.Reason = strings.TrimPrefix(summary.Reason+"; "+e.Kind+": "+e.Reason, "; ")
		}
	}
	res.Exports = summary

	switch {
	case draft != nil:
		if _, err := a.Archive.StageExports(ctx, key, draft.ID, out.Exports); err != nil {
			return res, fmt.Errorf("add exports to staged snapshot %s: %w", draft.ID, err)
		}
	case archive.ExportsUnchanged(latest, out.Exports):
		// The code and every export are what the latest snapshot has: no snapshot.
	default:
		m, err := a.Archive.StageExportsOnly(ctx, latest, archive.Trigger{Kind: in.Trigger, DeliveryID: in.DeliveryID}, in.Staged.StartedAt, out.Exports)
		if err != nil {
			return res, fmt.Errorf("stage exports of %s: %w", repo.FullName, err)
		}
		res.SnapshotID, res.ParentID, res.DraftKey = m.ID, m.Parent, key.DraftKey(m.ID)
		res.ManifestKey = key.ManifestKey(m.ID)
		res.Refs, res.Packs, res.TotalBytes = m.Totals.Refs, m.Totals.Packs, m.Totals.Bytes
	}
	res.FinishedAt = time.Now().UTC()
	return res, nil
}

func (a *Exports) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}
