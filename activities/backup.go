package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sync/errgroup"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/repoexport"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// PickBackupHost runs on the shared task queue; whichever worker takes it offers its own host
// queue, where the mirror will live.
//
// A repository whose mirror is known to live on a worker goes back to that worker, unless that
// worker just failed to answer (in.Exclude).
func (a *Backups) PickBackupHost(ctx context.Context, in workflows.PickHostInput) (string, error) {
	if a.HostQueue == "" {
		return "", temporal.NewNonRetryableApplicationError("worker has no host task queue", domain.ErrTypeMisconfigured, nil)
	}
	tenantID, _, repoID, err := parseTarget(in.Target)
	if err != nil {
		return "", err
	}
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return "", classify("load repository", err)
	}
	if repo.MirrorHost != "" && repo.MirrorHost != in.Exclude {
		return repo.MirrorHost, nil
	}
	return a.HostQueue, nil
}

func parseTarget(t workflows.BackupTarget) (tenantID, installationID, repoID uuid.UUID, err error) {
	if tenantID, installationID, err = parseRef(workflows.InstallationRef{TenantID: t.TenantID, InstallationID: t.InstallationID}); err != nil {
		return
	}
	if repoID, err = uuid.Parse(t.RepositoryID); err != nil {
		err = temporal.NewNonRetryableApplicationError("invalid repository ID "+t.RepositoryID, domain.ErrTypeInvalidInput, nil)
	}
	return
}

// RunBackup stages and commits a backup in one activity. Executions started before StageBackup
// and CommitSnapshot existed still schedule it.
func (a *Backups) RunBackup(ctx context.Context, in workflows.RunBackupInput) (workflows.RunBackupResult, error) {
	res, err := a.StageBackup(ctx, in)
	if err != nil || res.DraftKey == "" {
		return res, err
	}
	return a.commitStaged(ctx, in.Target, res)
}

// StageBackup is the part of a backup run that needs the mirror, on its host worker: change
// detection with one ls-remote against the last manifest, then fetch into the local mirror
// (hydrated from storage when missing), upload the new packs and store the manifest draft
// (result.DraftKey) for CommitSnapshot. Progress goes to heartbeats.
func (a *Backups) StageBackup(ctx context.Context, in workflows.RunBackupInput) (workflows.RunBackupResult, error) {
	started := time.Now().UTC()
	res := workflows.RunBackupResult{StartedAt: started, Host: a.HostQueue}
	tenantID, instID, repoID, err := parseTarget(in.Target)
	if err != nil {
		return res, err
	}
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return res, classify("load repository", err)
	}
	if !repo.Included || repo.Status != domain.RepositoryActive {
		res.Skipped = fmt.Sprintf("repository is %s (included=%t)", repo.Status, repo.Included)
		res.FinishedAt = time.Now().UTC()
		return res, nil
	}
	// Checked on every run, on whichever worker: a request queued before an uninstall (or
	// routed to a worker that still caches the client) must not back up a removed installation.
	if store.BackupsStopped(repo.InstallationStatus) {
		res.Skipped = "installation is " + repo.InstallationStatus
		res.FinishedAt = time.Now().UTC()
		return res, nil
	}
	log := activity.GetLogger(ctx)
	hb := startHeartbeat(ctx)
	defer hb.stop()
	dir := a.mirrorPath(tenantID, repo.ProviderUUID)
	unhold, err := a.mirrors.hold(ctx, dir, func() { hb.step("waiting for an earlier attempt on this mirror") })
	if err != nil {
		return res, err
	}
	defer unhold()
	client, err := a.Clients.Client(ctx, tenantID, instID)
	if err != nil {
		return res, classify("load credentials", err)
	}
	hb.step("checking for changes")
	check, err := checkUpstream(ctx, a.Store, a.Archive, client, tenantID, repo.ProviderUUID, repo.FullName)
	if err != nil {
		return res, err
	}
	repo.FullName = check.FullName
	latest := check.Latest
	if !check.Changed {
		res.SnapshotID, res.Refs = latest.ID, len(latest.Refs)
		res.FinishedAt = time.Now().UTC()
		log.Info("repository unchanged", "repository", repo.FullName, "snapshot", latest.ID)
		return res, nil
	}
	key := check.Key

	release := a.mirrors.acquire(dir)
	defer release()
	// Room for the clone or fetch: the larger of Bitbucket's size and the stored packs
	// estimates the whole mirror; what is already on disk is not needed twice.
	estimate := repo.SizeBytes
	if latest != nil && latest.Totals.Bytes > estimate {
		estimate = latest.Totals.Bytes
	}
	have, err := gitmirror.DiskUsage(dir)
	if err != nil {
		return res, err
	}
	if err := a.reserveMirrorSpace(dir, estimate-have); err != nil {
		return res, err
	}
	mirror, err := a.openMirror(ctx, dir, latest, hb)
	if err != nil {
		return res, err
	}
	defer mirror.Close()
	hb.step("fetching")
	// Fresh credentials for the fetch: each git operation spends its own unit of the budget.
	err = client.WithGitAuth(ctx, func(auth *githttp.BasicAuth) error {
		_, err := mirror.FetchListed(ctx, check.Listing, auth, func(p gitmirror.Progress) {
			hb.report(BackupProgress{Step: "fetching", Fetch: &p})
		})
		return err
	})
	if err != nil {
		return res, classifyGit("fetch "+repo.FullName, err)
	}
	// From the first upload (or "already stored") until the draft names the packs, a retention
	// sweep of this repository must not run.
	releaseLease, err := holdStagingLease(ctx, a.Store, tenantID, repoID, stagingLeaseTTL, func() { hb.step("waiting for a retention sweep") })
	if err != nil {
		return res, err
	}
	defer releaseLease()
	hb.step("uploading")
	staged, err := a.Archive.StageSnapshot(ctx, mirror, archive.SnapshotRequest{
		Tenant:     tenantID.String(),
		Repository: archive.Repository{Provider: "bitbucket", UUID: repo.ProviderUUID, FullName: repo.FullName},
		Trigger:    archive.Trigger{Kind: in.Trigger, DeliveryID: in.DeliveryID},
		Started:    started,
		// Change detection loaded it a moment ago, under the same mirror hold.
		Latest: latest, LatestLoaded: true,
		Progress: func(ev archive.TransferEvent) { hb.report(BackupProgress{Step: "uploading", Transfer: &ev}) },
		PinCandidates: func(refs gitmirror.RefMap) gitmirror.RefMap {
			return a.pinCandidates(ctx, latest, refs)
		},
		Consolidate: a.Consolidate,
	})
	if err != nil {
		return res, fmt.Errorf("stage snapshot of %s: %w", repo.FullName, err)
	}
	m := staged.Manifest
	res.SnapshotID, res.ParentID = m.ID, m.Parent
	res.ManifestKey = key.ManifestKey(m.ID)
	res.Refs, res.Packs, res.TotalBytes = m.Totals.Refs, m.Totals.Packs, m.Totals.Bytes
	res.PacksUploaded, res.BytesUploaded = staged.PacksUploaded, staged.BytesUploaded
	if staged.Staged {
		res.DraftKey = key.DraftKey(m.ID)
	}
	res.FinishedAt = time.Now().UTC()
	log.Info("backup staged", "repository", repo.FullName, "snapshot", m.ID, "staged", staged.Staged,
		"packs_uploaded", staged.PacksUploaded, "bytes_uploaded", staged.BytesUploaded, "duration_ms", res.FinishedAt.Sub(started).Milliseconds())
	return res, nil
}

// CommitSnapshot writes the manifest of the snapshot StageBackup staged, which makes the
// snapshot exist. It runs on the shared queue (it needs only storage) and is idempotent: a
// retry after the manifest was written succeeds with the same snapshot.
func (a *Backups) CommitSnapshot(ctx context.Context, in workflows.CommitSnapshotInput) (workflows.RunBackupResult, error) {
	return a.commitStaged(ctx, in.Target, in.Staged)
}

func (a *Backups) commitStaged(ctx context.Context, target workflows.BackupTarget, staged workflows.RunBackupResult) (workflows.RunBackupResult, error) {
	res := staged
	tenantID, _, repoID, err := parseTarget(target)
	if err != nil {
		return res, err
	}
	// The storage key comes from the repository row, not from the input, so that a commit can
	// only ever touch the target's own prefix.
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return res, classify("load repository", err)
	}
	if st := repo.InstallationStatus; st == domain.InstallationRemoving || st == domain.InstallationRemoved {
		return res, temporal.NewNonRetryableApplicationError("installation is "+st+": staged snapshot "+staged.SnapshotID+" is not committed",
			domain.ErrTypeInstallationRemoved, nil)
	}
	key, err := archive.NewRepoKey(tenantID.String(), repo.ProviderUUID)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	c, err := a.Archive.CommitStaged(ctx, key, staged.SnapshotID)
	switch {
	case errors.Is(err, archive.ErrStaleDraft):
		return res, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeSnapshotConflict, nil)
	case errors.Is(err, archive.ErrNotFound):
		return res, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeSnapshotMissing, nil)
	case err != nil:
		return res, fmt.Errorf("commit snapshot %s of %s: %w", staged.SnapshotID, repo.FullName, err)
	}
	m := c.Manifest
	res.Changed, res.DraftKey = true, ""
	res.SnapshotID, res.ParentID, res.ManifestKey = m.ID, m.Parent, key.ManifestKey(m.ID)
	res.Refs, res.Packs, res.TotalBytes = m.Totals.Refs, m.Totals.Packs, m.Totals.Bytes
	res.BytesUploaded += c.Bytes
	res.FinishedAt = time.Now().UTC()
	activity.GetLogger(ctx).Info("backup done", "repository", repo.FullName, "snapshot", m.ID,
		"packs_uploaded", res.PacksUploaded, "bytes_uploaded", res.BytesUploaded, "duration_ms", res.FinishedAt.Sub(res.StartedAt).Milliseconds())
	return res, nil
}

// stagingLeaseTTL outlives any staging (the host activity's start-to-close timeout).
const stagingLeaseTTL = 6 * time.Hour

// mirrorPath is where this worker keeps a repository's mirror.
func (a *Backups) mirrorPath(tenantID uuid.UUID, providerUUID string) string {
	return filepath.Join(a.MirrorDir, tenantID.String(), archive.NormalizeUUID(providerUUID))
}

// upstreamCheck is the outcome of one change check: the remote, the latest snapshot (nil when
// there is none) and whether the remote's refs differ from it.
type upstreamCheck struct {
	// FullName is the repository's current workspace/slug (renames upstream are followed).
	FullName string
	Remote   string
	Key      archive.RepoKey
	Latest   *archive.Manifest
	// Listing is the ls-remote itself (the remote's refs and HEAD), handed on to the fetch so
	// that a changed repository is listed once per run.
	Listing *gitmirror.Listing
	Changed bool
}

// checkUpstream compares the remote's refs (one ls-remote, spending one unit of the git budget)
// with the latest snapshot's in arc, and records a rename upstream in st. A repository without
// a snapshot has changed. Backups and the scheduled sweep both decide with it, so they never
// disagree about what "changed" means.
func checkUpstream(ctx context.Context, st *store.Store, arc *archive.Store, client *bitbucket.Client, tenantID uuid.UUID, providerUUID, fullName string) (upstreamCheck, error) {
	var c upstreamCheck
	workspace, slug, ok := strings.Cut(fullName, "/")
	if !ok {
		return c, temporal.NewNonRetryableApplicationError("repository full name "+fullName+" is not workspace/slug", domain.ErrTypeInvalidInput, nil)
	}
	c.Remote = client.CloneURL(workspace, slug)
	key, err := archive.NewRepoKey(tenantID.String(), providerUUID)
	if err != nil {
		return c, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	c.Key = key
	latest, err := arc.LoadManifest(ctx, key, "latest")
	if err != nil && !errors.Is(err, archive.ErrNotFound) {
		return c, fmt.Errorf("load latest manifest of %s: %w", fullName, err)
	}
	c.Latest = latest
	var listing *gitmirror.Listing
	lsRemote := func(remote string) error {
		return client.WithGitAuth(ctx, func(auth *githttp.BasicAuth) (err error) {
			listing, err = gitmirror.ListRemote(ctx, remote, auth)
			return err
		})
	}
	c.FullName = fullName
	err = lsRemote(c.Remote)
	if errors.Is(err, transport.ErrRepositoryNotFound) {
		// Slugs change; the UUID does not. A renamed repository is found again by UUID and
		// followed, instead of being taken for deleted until the next sync.
		renamed, rerr := client.GetRepository(ctx, workspace, providerUUID)
		if rerr == nil && renamed.FullName != "" && renamed.FullName != fullName {
			var project store.Project
			if renamed.Project != nil {
				project = store.Project{Key: renamed.Project.Key, Name: renamed.Project.Name}
			}
			if uerr := st.RenameRepository(ctx, tenantID, providerUUID, renamed.FullName, project); uerr != nil {
				return c, classify("record rename", uerr)
			}
			activity.GetLogger(ctx).Info("repository renamed upstream", "from", fullName, "to", renamed.FullName)
			ws, sl, _ := strings.Cut(renamed.FullName, "/")
			c.FullName, c.Remote = renamed.FullName, client.CloneURL(ws, sl)
			err = lsRemote(c.Remote)
		}
	}
	if err != nil {
		return c, classifyGit("ls-remote "+c.FullName, err)
	}
	c.Listing = listing
	c.Changed = latest == nil || !listing.Refs.Equal(latest.Refs) || (listing.Head != "" && listing.Head != latest.Head)
	return c, nil
}

// openMirror opens the local mirror, or rebuilds it from the latest snapshot when it is missing
// or unreadable, so a new worker never re-clones a repository that has a backup.
func (a *Backups) openMirror(ctx context.Context, dir string, latest *archive.Manifest, hb *heartbeat) (*gitmirror.Mirror, error) {
	exists, err := gitmirror.Exists(dir)
	if err == nil && exists {
		if m, err := gitmirror.Open(dir); err == nil {
			return m, nil
		}
		a.Logger.Warn("local mirror unreadable; rebuilding it from storage", "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("remove broken mirror %s: %w", dir, err)
		}
	}
	if latest == nil {
		return gitmirror.Open(dir)
	}
	hb.step("hydrating mirror from storage")
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	m, err := a.Archive.Hydrate(ctx, latest, dir, func(ev archive.TransferEvent) {
		hb.report(BackupProgress{Step: "hydrating mirror from storage", Transfer: &ev})
	})
	if err != nil {
		return nil, fmt.Errorf("hydrate mirror from snapshot %s: %w", latest.ID, err)
	}
	return m, nil
}

// classifyGit maps git transport errors to the provider error types. Errors come from
// bitbucket.Client.WithGitAuth, which has already retried a 401 after one forced refresh: a 401
// now means the credentials are revoked, while a 403 concerns this repository alone.
func classifyGit(what string, err error) error {
	switch {
	case errors.Is(err, store.ErrInstallationRemoved):
		return classify(what, err)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return temporal.NewNonRetryableApplicationError(what+": repository not found upstream", domain.ErrTypeNotFound, nil)
	case errors.Is(err, bitbucket.ErrForbidden), errors.Is(err, transport.ErrAuthorizationFailed):
		return temporal.NewNonRetryableApplicationError(what+": Bitbucket denied access to this repository (403): "+gitReason(err), domain.ErrTypeForbidden, nil)
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return temporal.NewNonRetryableApplicationError(what+": Bitbucket rejected the credentials even after a token refresh", domain.ErrTypeCredentialsRevoked, nil)
	}
	return classify(what, err)
}

// gitReason is the git server's own message from a transport error ("authorization failed:
// You do not have read access ..."); go-git puts the response body after the sentinel's text.
func gitReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, transport.ErrAuthorizationFailed.Error()); i >= 0 {
		msg = msg[i:]
	}
	return strings.TrimSpace(msg)
}

// RecordBackupOutcome writes a run's result to Postgres for the dashboard.
func (a *Backups) RecordBackupOutcome(ctx context.Context, in workflows.BackupOutcomeInput) error {
	tenantID, instID, repoID, err := parseTarget(in.Target)
	if err != nil {
		return err
	}
	r := in.Result
	a.observeRun(in, repoID)
	if r.Host != "" && in.Failure == "" {
		if err := a.Store.SetMirrorHost(ctx, tenantID, repoID, r.Host); err != nil {
			return classify("record mirror host", err)
		}
	}
	switch {
	case in.Failure != "":
		switch in.ErrorType {
		case domain.ErrTypeInstallationRemoved:
			// Uninstalled while the run was under way: nothing is recorded for it any more.
			return nil
		case domain.ErrTypeNotFound:
			if err := a.Store.MarkRepositoryDeletedUpstream(ctx, tenantID, repoID); err != nil {
				return classify("mark deleted upstream", err)
			}
		case domain.ErrTypeCredentialsRevoked:
			// Only a 401 that survived a forced refresh gets here: the credential itself is dead,
			// for every repository. A 403 (ErrTypeForbidden) is this repository's alone and is
			// recorded on it below, while the installation's other repositories go on.
			if err := a.Store.MarkInstallationNeedsReauth(ctx, tenantID, instID,
				"Bitbucket rejected GitSec's credentials during a backup, even after a token refresh; reconnect the account"); err != nil {
				return classify("mark installation needs_reauth", err)
			}
		}
		reason := in.Reason
		if reason == "" {
			reason = in.Failure
		}
		return classify("record failed backup", a.Store.RecordBackupFailure(ctx, tenantID, repoID, reason, time.Now().UTC()))
	case r.Skipped != "":
		return nil
	}
	var pushedAt *time.Time
	if len(in.PushTimes) > 0 {
		pushedAt = &in.PushTimes[0]
	}
	if r.SnapshotID != "" {
		if err := a.recordSnapshots(ctx, tenantID, repoID, r, pushedAt); err != nil {
			return err
		}
	}
	if !r.Changed {
		if err := a.Store.RecordBackupCheck(ctx, tenantID, repoID, domain.BackupUnchanged, r.FinishedAt); err != nil {
			return classify("record backup check", err)
		}
	}
	// The run's ls-remote saw every push received before it started.
	if !r.StartedAt.IsZero() {
		if err := a.Store.RecordBackedUpThrough(ctx, tenantID, repoID, r.StartedAt); err != nil {
			return classify("record backed-up-through", err)
		}
	}
	return nil
}

// observeRun records the run in the metrics: its result, and for a successful run the freshness
// of the pushes it answers (a run that found nothing new still means those pushes are backed up:
// an earlier snapshot had them).
func (a *Backups) observeRun(in workflows.BackupOutcomeInput, repoID uuid.UUID) {
	r := in.Result
	result := domain.BackupSucceeded
	switch {
	case in.Failure != "":
		result = domain.BackupFailed
	case r.Skipped != "":
		result = "skipped"
	case !r.Changed:
		result = domain.BackupUnchanged
	}
	var d time.Duration
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		d = r.FinishedAt.Sub(r.StartedAt)
	}
	a.Metrics.BackupRun(string(in.Trigger), result, d, r.BytesUploaded)
	if in.Failure != "" || r.Skipped != "" || r.FinishedAt.IsZero() {
		return
	}
	for _, pushed := range in.PushTimes {
		a.Metrics.ObservePushToSnapshot(r.FinishedAt.Sub(pushed))
	}
	if r.Changed {
		a.Metrics.SetLastSnapshot(repoID.String(), r.FinishedAt)
	}
}

// maxSnapshotsReconciled bounds the manifests one outcome reads to recover lost rows.
const maxSnapshotsReconciled = 50

// recordSnapshots writes the row of the run's snapshot (the one it committed, or the latest one
// it found unchanged) from its manifest in storage, together with the rows of its ancestors
// that are missing. Storage is the truth and the rows follow it: a manifest whose row was lost
// (the record failed past its retries, or an attempt committed and died before returning) is
// recorded by the next run, with its own ID, even when upstream has not changed since.
func (a *Backups) recordSnapshots(ctx context.Context, tenantID, repoID uuid.UUID, r workflows.RunBackupResult, pushedAt *time.Time) error {
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return classify("load repository", err)
	}
	if !r.Changed && repo.LastSnapshotID != nil && *repo.LastSnapshotID == r.SnapshotID {
		return nil
	}
	key, err := archive.NewRepoKey(tenantID.String(), repo.ProviderUUID)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	// Newest first, down to the first snapshot that has its row.
	var rows []store.Snapshot
	for id := r.SnapshotID; id != ""; {
		if len(rows) == maxSnapshotsReconciled {
			a.Logger.Warn("older snapshots of the repository lack rows; only the newest are recorded",
				"repository", repo.FullName, "recorded", len(rows), "next", id)
			break
		}
		row, err := a.Store.GetSnapshot(ctx, tenantID, id)
		if err == nil {
			if len(rows) == 0 {
				// The row exists; recording it again still moves the repository's pointer on.
				rows = append(rows, row)
			}
			break
		}
		if !errors.Is(err, store.ErrNotFound) {
			return classify("load snapshot row", err)
		}
		m, err := a.Archive.LoadManifest(ctx, key, id)
		if errors.Is(err, archive.ErrNotFound) {
			if len(rows) > 0 {
				break // an ancestor that retention removed
			}
			return temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeSnapshotMissing, nil)
		}
		if err != nil {
			return fmt.Errorf("load manifest %s of %s: %w", id, repo.FullName, err)
		}
		rows = append(rows, snapshotRow(tenantID, repoID, key, m))
		id = m.Parent
	}
	if len(rows) > 0 && r.Changed && rows[0].ID == r.SnapshotID {
		// The run's own figures are better than what the manifest tells.
		rows[0].BytesUploaded, rows[0].StartedAt, rows[0].FinishedAt = r.BytesUploaded, r.StartedAt, r.FinishedAt
		rows[0].PushedAt = pushedAt
	}
	for i := len(rows) - 1; i >= 0; i-- {
		if err := a.Store.RecordSnapshot(ctx, rows[i]); err != nil {
			return classify("record snapshot", err)
		}
	}
	if !r.Changed && len(rows) > 0 {
		a.Logger.Info("recorded snapshots that storage had and the database lacked", "repository", repo.FullName,
			"snapshot", r.SnapshotID, "rows", len(rows))
	}
	return nil
}

// snapshotRow is the dashboard's row of a manifest. The manifest keeps no run timestamps nor
// upload counts, so the run is taken to have finished when the snapshot was taken and to have
// uploaded the packs the snapshot introduced.
func snapshotRow(tenantID, repoID uuid.UUID, key archive.RepoKey, m *archive.Manifest) store.Snapshot {
	var parent *string
	if m.Parent != "" {
		p := m.Parent
		parent = &p
	}
	var introduced int64
	for _, p := range m.Packs {
		if p.Snapshot == m.ID {
			introduced += p.Pack.Size + p.Idx.Size
		}
	}
	return store.Snapshot{
		ID: m.ID, TenantID: tenantID, RepositoryID: repoID, ManifestKey: key.ManifestKey(m.ID), Trigger: m.Trigger.Kind,
		ParentID: parent, RefsCount: m.Totals.Refs, PacksCount: m.Totals.Packs, BytesUploaded: introduced, TotalBytes: m.Totals.Bytes,
		StartedAt: m.Created.Add(-time.Duration(m.DurationMillis) * time.Millisecond), FinishedAt: m.Created,
	}
}

// StartBackups wakes the backup workflow of every included repository of the installation.
func (a *Backups) StartBackups(ctx context.Context, in workflows.StartBackupsInput) (int, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return 0, err
	}
	if in.OnlyNeverBackedUp {
		// The dashboard shows them as pending until their first run records an outcome.
		if _, err := a.Store.MarkIncludedPendingBackup(ctx, tenantID, instID); err != nil {
			return 0, classify("mark repositories pending backup", err)
		}
	}
	repos, err := a.Store.BackupCandidates(ctx, tenantID, instID)
	if err != nil {
		return 0, classify("list repositories", err)
	}
	// Signals go out a few at a time: one by one, a thousand repositories took half a minute.
	var started atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, r := range repos {
		if in.OnlyNeverBackedUp && r.LastSnapshotID != nil {
			continue
		}
		target := backupqueue.Target(r)
		g.Go(func() error {
			if _, err := backupqueue.Request(gctx, a.Temporal, a.Queue, target, workflows.BackupRequest{Trigger: in.Trigger}); err != nil {
				return err
			}
			activity.RecordHeartbeat(ctx, started.Add(1))
			return nil
		})
	}
	err = g.Wait()
	return int(started.Load()), err
}

// pinCandidates are the source commits of the latest export's pull requests whose branch is
// gone from refs or lives in a fork: StageSnapshot pins those the mirror holds, so the code a
// pull request showed stays restorable. A failure to read the export only delays the pins.
func (a *Backups) pinCandidates(ctx context.Context, latest *archive.Manifest, refs gitmirror.RefMap) gitmirror.RefMap {
	if latest == nil || latest.FindExport(archive.ExportPullRequests) == nil {
		return nil
	}
	recs, _, err := a.Archive.LoadPullRequests(ctx, latest)
	if err != nil {
		a.Logger.Warn("read pull requests for pins; pins wait for the next run", "snapshot", latest.ID, "error", err)
		return nil
	}
	return repoexport.PinCandidates(recs, refs)
}
