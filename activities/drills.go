package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"gocloud.dev/gcerrors"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/schedules"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Drills runs restore drills: a snapshot restored into a scratch repository on this worker and
// checked, never written anywhere but the scratch directory. It also keeps each installation's
// drill schedule.
type Drills struct {
	Store   *store.Store
	Archive *archive.Store
	// ScratchDir holds the drills' temporary repositories, each removed when its drill ends;
	// "" is the system's temp dir.
	ScratchDir string
	// Temporal and TaskQueue create the drill schedules; Every is their interval
	// (GITSEC_DRILL_EVERY, default weekly).
	Temporal  client.Client
	TaskQueue string
	Every     time.Duration
	Logger    *slog.Logger
}

// parseDrill reads the IDs of a drill's input.
func parseDrill(t workflows.BackupTarget, id string) (tenantID, repoID, drillID uuid.UUID, err error) {
	if tenantID, _, repoID, err = parseTarget(t); err != nil {
		return
	}
	if drillID, err = uuid.Parse(id); err != nil {
		err = temporal.NewNonRetryableApplicationError("invalid drill ID "+id, domain.ErrTypeInvalidInput, nil)
	}
	return
}

// StartDrill records the drill as running (the API may have done so already).
func (a *Drills) StartDrill(ctx context.Context, in workflows.DrillInput) error {
	tenantID, repoID, drillID, err := parseDrill(in.Target, in.DrillID)
	if err != nil {
		return err
	}
	err = a.Store.StartDrill(ctx, store.Drill{ID: drillID, TenantID: tenantID, RepositoryID: repoID, SnapshotID: in.SnapshotID,
		WorkflowID: activity.GetInfo(ctx).WorkflowExecution.ID, Trigger: in.Trigger, StartedAt: time.Now()})
	if errors.Is(err, store.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeSnapshotMissing, nil)
	}
	return err
}

// drillRun collects the steps of one drill; the first failed step is the drill's reason.
type drillRun struct {
	ctx    context.Context
	report workflows.DrillReport
}

// step runs fn as the named step. fn returns a failure (the check found the backup wrong: the
// drill fails, nothing is retried), or an error (the drill could not check: retried).
func (r *drillRun) step(name string, fn func() (detail string, failure error, err error)) error {
	if r.failed() {
		r.report.Steps = append(r.report.Steps, workflows.DrillStep{Name: name, Status: domain.DrillStepSkipped, Detail: "an earlier step failed"})
		return nil
	}
	// git fsck of a big repository prints nothing for minutes: heartbeat while any step runs,
	// so only a dead worker misses the heartbeat timeout.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			activity.RecordHeartbeat(r.ctx, name)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	detail, failure, err := fn()
	close(done)
	if err != nil {
		return fmt.Errorf("drill step %s: %w", name, err)
	}
	s := workflows.DrillStep{Name: name, Status: domain.DrillStepPassed, DurationMS: time.Since(start).Milliseconds(), Detail: detail}
	switch {
	case failure != nil:
		s.Status, s.Detail = domain.DrillStepFailed, failure.Error()
		r.report.Reason = name + ": " + failure.Error()
	case strings.HasPrefix(detail, "skipped: "):
		s.Status, s.Detail = domain.DrillStepSkipped, strings.TrimPrefix(detail, "skipped: ")
	}
	r.report.Steps = append(r.report.Steps, s)
	return nil
}

func (r *drillRun) failed() bool { return r.report.Reason != "" }

// RunDrill restores the snapshot into a scratch bare repository (every pack and idx verified
// against the manifest's size and SHA-256), compares git for-each-ref and HEAD with the
// manifest, runs git fsck --strict, and decodes the pull request and metadata exports.
func (a *Drills) RunDrill(ctx context.Context, in workflows.DrillInput) (workflows.DrillReport, error) {
	tenantID, _, repoID, err := parseTarget(in.Target)
	if err != nil {
		return workflows.DrillReport{}, err
	}
	if a.Archive == nil {
		return workflows.DrillReport{}, temporal.NewNonRetryableApplicationError("worker has no backup storage for drills", domain.ErrTypeMisconfigured, nil)
	}
	repo, err := a.Store.GetRepository(ctx, tenantID, repoID)
	if err != nil {
		return workflows.DrillReport{}, classify("load repository", err)
	}
	key, err := archive.NewRepoKey(tenantID.String(), repo.ProviderUUID)
	if err != nil {
		return workflows.DrillReport{}, temporal.NewNonRetryableApplicationError(err.Error(), domain.ErrTypeInvalidInput, nil)
	}
	scratch, err := os.MkdirTemp(a.ScratchDir, "gitsec-drill-")
	if err != nil {
		return workflows.DrillReport{}, fmt.Errorf("drill scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)
	dir := filepath.Join(scratch, "repo.git")

	run := &drillRun{ctx: ctx}
	var m *archive.Manifest
	err = run.step(domain.DrillStepRestore, func() (string, error, error) {
		var err error
		if m, err = a.Archive.LoadManifest(ctx, key, in.SnapshotID); err != nil {
			return checkFailure(err)
		}
		mirror, err := a.Archive.Hydrate(ctx, m, dir, func(ev archive.TransferEvent) { activity.RecordHeartbeat(ctx, ev) })
		if err != nil {
			return checkFailure(err)
		}
		if err := mirror.Close(); err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("%d packs, %d bytes verified", len(m.Packs), m.Totals.Bytes), nil, nil
	})
	if err == nil {
		err = run.step(domain.DrillStepRefs, func() (string, error, error) { return compareRefs(ctx, dir, m) })
	}
	if err == nil {
		err = run.step(domain.DrillStepFsck, func() (string, error, error) {
			if out, err := gitOutput(ctx, dir, "fsck", "--strict", "--no-progress"); err != nil {
				return "", fmt.Errorf("git fsck --strict: %w: %s", err, lastLines(out, 5)), nil
			}
			return "clean", nil, nil
		})
	}
	if err == nil {
		err = run.step(domain.DrillStepPullRequests, func() (string, error, error) {
			n := 0
			e, err := a.Archive.WalkSnapshotPullRequests(ctx, m, func(*archive.PullRequestRecord) error { n++; return nil })
			if errors.Is(err, archive.ErrNoExport) {
				return "skipped: the snapshot has no pull request export", nil, nil
			}
			if err != nil {
				return checkFailure(err)
			}
			if n != e.Records {
				return "", fmt.Errorf("the export decodes to %d pull requests, the manifest says %d", n, e.Records), nil
			}
			return fmt.Sprintf("%d pull requests decoded", n), nil, nil
		})
	}
	if err == nil {
		err = run.step(domain.DrillStepMetadata, func() (string, error, error) {
			md, err := a.Archive.LoadMetadata(ctx, m)
			if errors.Is(err, archive.ErrNoExport) {
				return "skipped: the snapshot has no metadata export", nil, nil
			}
			if err != nil {
				return checkFailure(err)
			}
			return "main branch " + md.MainBranch, nil, nil
		})
	}
	if err != nil {
		return workflows.DrillReport{}, err
	}
	run.report.Passed = !run.failed()
	return run.report, nil
}

// checkFailure sorts an error of reading the backup: storage that could not be reached is worth
// a retry (error); anything else, a checksum mismatch above all, is what the drill is there to
// find (failure).
func checkFailure(err error) (string, error, error) {
	var netErr net.Error
	code := gcerrors.Code(err)
	if !errors.Is(err, archive.ErrCorrupt) && (errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || code == gcerrors.Internal || code == gcerrors.ResourceExhausted || code == gcerrors.DeadlineExceeded) {
		return "", nil, err
	}
	return "", err, nil
}

// compareRefs checks git's view of the restored repository against the manifest.
func compareRefs(ctx context.Context, dir string, m *archive.Manifest) (string, error, error) {
	out, err := gitOutput(ctx, dir, "for-each-ref", "--format=%(refname) %(objectname)")
	if err != nil {
		return "", nil, fmt.Errorf("git for-each-ref: %w: %s", err, lastLines(out, 5))
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, oid, ok := strings.Cut(l, " "); ok {
			got[name] = oid
		}
	}
	var diffs []string
	for name, oid := range m.Refs {
		switch g, ok := got[name]; {
		case !ok:
			diffs = append(diffs, name+" is missing")
		case g != oid:
			diffs = append(diffs, fmt.Sprintf("%s is %s, the manifest says %s", name, g, oid))
		}
	}
	for name := range got {
		if _, ok := m.Refs[name]; !ok {
			diffs = append(diffs, name+" is not in the manifest")
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 5 {
			diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
		}
		return "", errors.New("restored refs differ from the manifest: " + strings.Join(diffs, "; ")), nil
	}
	if len(m.Refs) > 0 {
		head, err := gitOutput(ctx, dir, "symbolic-ref", "HEAD")
		if err != nil {
			return "", nil, fmt.Errorf("git symbolic-ref HEAD: %w", err)
		}
		if strings.TrimSpace(head) != m.Head {
			return "", fmt.Errorf("HEAD is %s, the manifest says %s", strings.TrimSpace(head), m.Head), nil
		}
	}
	return fmt.Sprintf("%d refs equal the manifest, HEAD %s", len(m.Refs), m.Head), nil, nil
}

// gitOutput runs the git CLI on a bare repository and returns stdout, or stderr on failure.
func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	// The drill checks the repository, not the worker's git configuration.
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.String() + stdout.String(), err
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// FinishDrill records the drill's outcome; a failed drill also goes to the audit trail (once,
// however often this is retried).
func (a *Drills) FinishDrill(ctx context.Context, in workflows.FinishDrillInput) error {
	tenantID, repoID, drillID, err := parseDrill(in.Target, in.DrillID)
	if err != nil {
		return err
	}
	steps := make([]store.DrillStep, 0, len(in.Steps))
	for _, s := range in.Steps {
		steps = append(steps, store.DrillStep{Name: s.Name, Status: s.Status, DurationMS: s.DurationMS, Detail: s.Detail})
	}
	finished, err := a.Store.FinishDrill(ctx, tenantID, drillID, in.Status, in.Reason, steps, time.Now())
	if err != nil || !finished || in.Status != domain.DrillFailed {
		return err
	}
	d, err := a.Store.GetDrill(ctx, tenantID, drillID)
	if err != nil {
		return err
	}
	details, _ := json.Marshal(map[string]any{"drill_id": in.DrillID, "snapshot_id": d.SnapshotID, "full_name": d.FullName, "reason": in.Reason})
	if err := a.Store.RecordAudit(ctx, store.AuditEvent{TenantID: tenantID, Actor: "system:drill", Action: "repository.drill_failed",
		TargetType: "repository", TargetID: repoID.String(), Details: details}); err != nil {
		a.Logger.Warn("audit failed drill", "drill", in.DrillID, "error", err)
	}
	a.Logger.Warn("restore drill failed", "repository", d.FullName, "snapshot", d.SnapshotID, "drill", in.DrillID, "reason", in.Reason)
	return nil
}

// ListDrillCandidates pages an installation's included, active repositories that have a
// snapshot, each with its latest snapshot.
func (a *Drills) ListDrillCandidates(ctx context.Context, in workflows.DrillCandidatesInput) (workflows.DrillCandidatesPage, error) {
	tenantID, instID, err := parseRef(in.InstallationRef)
	if err != nil {
		return workflows.DrillCandidatesPage{}, err
	}
	after := uuid.Nil
	if in.After != "" {
		if after, err = uuid.Parse(in.After); err != nil {
			return workflows.DrillCandidatesPage{}, temporal.NewNonRetryableApplicationError("invalid cursor "+in.After, domain.ErrTypeInvalidInput, nil)
		}
	}
	rows, err := a.Store.SweepCandidates(ctx, tenantID, instID, after, in.Limit)
	if err != nil {
		return workflows.DrillCandidatesPage{}, err
	}
	var page workflows.DrillCandidatesPage
	for _, r := range rows {
		if r.LastSnapshotID == nil {
			continue
		}
		page.Repositories = append(page.Repositories, workflows.DrillCandidate{
			Target:   workflows.BackupTarget{TenantID: in.TenantID, InstallationID: in.InstallationID, RepositoryID: r.ID.String(), ProviderUUID: r.ProviderUUID},
			FullName: r.FullName, SnapshotID: *r.LastSnapshotID,
		})
	}
	if len(rows) == in.Limit {
		page.Next = rows[len(rows)-1].ID.String()
	}
	return page, nil
}

func (a *Drills) every() time.Duration {
	if a.Every <= 0 {
		return 7 * 24 * time.Hour
	}
	return a.Every
}

// EnsureDrillSchedule creates the installation's drill schedule, or brings an existing one to
// the configured interval.
func (a *Drills) EnsureDrillSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil || a.TaskQueue == "" {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client or task queue for drill schedules", domain.ErrTypeMisconfigured, nil)
	}
	every := a.every()
	id := workflows.DrillScheduleID(ref.InstallationID)
	attrs := temporal.NewSearchAttributes(
		workflows.SearchAttrTenant.ValueSet(ref.TenantID),
		workflows.SearchAttrInstallation.ValueSet(ref.InstallationID),
	)
	// Jitter spreads installations onboarded together, as for sweeps: drills are heavy.
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}, Jitter: min(every/10, 6*time.Hour)}
	created, err := schedules.Ensure(ctx, a.Temporal, client.ScheduleOptions{
		ID:   id,
		Spec: spec,
		Action: &client.ScheduleWorkflowAction{
			ID: id, Workflow: workflows.DrillInstallationWorkflowName, TaskQueue: a.TaskQueue,
			Args:                  []any{workflows.DrillInstallationInput{InstallationRef: ref}},
			TypedSearchAttributes: attrs,
		},
		// A round still running when the next is due makes that one skip.
		CatchupWindow:         every,
		TypedSearchAttributes: attrs,
		Memo:                  map[string]any{"purpose": "restore the latest snapshot of every included repository into a scratch repository and check it"},
	})
	if err != nil {
		return err
	}
	a.Logger.Info("drill schedule ready", "schedule_id", id, "created", created, "every", every.String())
	return nil
}

// DeleteDrillSchedule deletes the installation's drill schedule; one already gone is fine.
func (a *Drills) DeleteDrillSchedule(ctx context.Context, ref workflows.InstallationRef) error {
	if _, _, err := parseRef(ref); err != nil {
		return err
	}
	if a.Temporal == nil {
		return temporal.NewNonRetryableApplicationError("worker has no Temporal client for drill schedules", domain.ErrTypeMisconfigured, nil)
	}
	id := workflows.DrillScheduleID(ref.InstallationID)
	deleted, err := schedules.Delete(ctx, a.Temporal, id)
	if deleted {
		a.Logger.Info("deleted drill schedule", "schedule_id", id)
	}
	return err
}
