package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/gitsec/gitsec/internal/gitmirror"
)

// SnapshotRequest says whose mirror is being backed up and why.
type SnapshotRequest struct {
	Tenant     string
	Repository Repository
	Trigger    Trigger
	// Started is when the backup run began (before the fetch), for the
	// manifest's duration; zero means now.
	Started time.Time
	// Now overrides the clock for the snapshot id and creation time; zero
	// means time.Now().
	Now time.Time
	// PinCandidates, when set, names the pull request source commits worth
	// pinning given the mirror's refs after the fetch (see Manifest.Pins).
	// Only candidates the mirror holds become pins; earlier pins are kept.
	PinCandidates func(refs gitmirror.RefMap) gitmirror.RefMap
	// Progress, when set, follows every file hashed and uploaded (Index and
	// Count number the packs to store).
	Progress func(TransferEvent)
	// Latest, when set, is the repository's latest snapshot as the caller
	// loaded it for change detection in the same run (LatestLoaded true, Latest
	// nil: there is none yet); it saves listing and reading it again. A stale
	// value cannot fork the history: CommitStaged refuses a draft whose parent
	// is no longer the latest snapshot.
	Latest       *Manifest
	LatestLoaded bool
	// Consolidate says when the snapshot replaces its parent's chain of packs with one fresh
	// full pack; the zero value never consolidates.
	Consolidate ConsolidatePolicy
}

// ConsolidatePolicy bounds a repository's restore chain: a snapshot that would list more than
// MaxPacks packs, or whose packs after the first would add up to more than MaxIncrementalBytes,
// is staged with one fresh full pack instead (0 disables a bound).
type ConsolidatePolicy struct {
	MaxPacks            int
	MaxIncrementalBytes int64
}

// due reports whether a chain of these packs (the parent's plus the new ones) passes a bound.
func (c ConsolidatePolicy) due(parent []Pack, pending []gitmirror.PackFiles) (bool, string) {
	n := len(parent) + len(pending)
	if c.MaxPacks > 0 && n > c.MaxPacks {
		return true, fmt.Sprintf("%d packs > %d", n, c.MaxPacks)
	}
	if c.MaxIncrementalBytes <= 0 || n < 2 {
		return false, ""
	}
	var incremental int64
	for i, p := range parent {
		if i > 0 {
			incremental += p.Pack.Size
		}
	}
	for i, p := range pending {
		if len(parent) == 0 && i == 0 {
			continue
		}
		if fi, err := os.Stat(p.PackPath); err == nil {
			incremental += fi.Size()
		}
	}
	if incremental > c.MaxIncrementalBytes {
		return true, fmt.Sprintf("%d incremental bytes > %d", incremental, c.MaxIncrementalBytes)
	}
	return false, ""
}

// StageResult tells what StageSnapshot did.
type StageResult struct {
	// Manifest is the staged draft, or the latest snapshot when nothing
	// changed.
	Manifest *Manifest
	// Staged is false when the mirror's references, HEAD and packs equal the
	// latest snapshot's, in which case nothing was written.
	Staged bool
	// PacksUploaded and BytesUploaded count what was actually written; packs
	// that a crashed run already stored are reused and not counted.
	PacksUploaded int
	BytesUploaded int64
}

// SnapshotResult tells what SnapshotMirror did.
type SnapshotResult struct {
	// Manifest is the new snapshot, or the latest one when nothing changed.
	Manifest *Manifest
	// Created is false when the mirror's references, HEAD and packs equal the
	// latest snapshot's, in which case nothing was written.
	Created bool
	// PacksUploaded and BytesUploaded count what was actually written,
	// manifest included; packs that a crashed run already stored are reused
	// and not counted.
	PacksUploaded int
	BytesUploaded int64
}

// SnapshotMirror backs up a mirror after a fetch in one go: StageSnapshot,
// then CommitStaged. Running it again after a crash at any point completes
// the backup without re-uploading what is already stored.
func (s *Store) SnapshotMirror(ctx context.Context, mirror *gitmirror.Mirror, req SnapshotRequest) (SnapshotResult, error) {
	staged, err := s.StageSnapshot(ctx, mirror, req)
	if err != nil {
		return SnapshotResult{}, err
	}
	res := SnapshotResult{Manifest: staged.Manifest, PacksUploaded: staged.PacksUploaded, BytesUploaded: staged.BytesUploaded}
	if !staged.Staged {
		return res, nil
	}
	repo, err := NewRepoKey(staged.Manifest.Tenant, staged.Manifest.Repository.UUID)
	if err != nil {
		return SnapshotResult{}, err
	}
	committed, err := s.CommitStaged(ctx, repo, staged.Manifest.ID)
	if err != nil {
		return SnapshotResult{}, err
	}
	res.Manifest, res.Created = committed.Manifest, true
	res.BytesUploaded += committed.Bytes
	return res, nil
}

// StageSnapshot does everything of a backup but the last write: it uploads
// every pack of the mirror that the latest snapshot does not list yet
// (normally the one pack the fetch wrote; more when an earlier run died
// before its manifest) and stores the new snapshot's manifest as a draft
// under staging/. CommitStaged turns the draft into the snapshot; until then
// no reader sees it, and steps in between (exports) may add objects.
func (s *Store) StageSnapshot(ctx context.Context, mirror *gitmirror.Mirror, req SnapshotRequest) (StageResult, error) {
	repo, err := NewRepoKey(req.Tenant, req.Repository.UUID)
	if err != nil {
		return StageResult{}, err
	}
	if !req.Trigger.Kind.Valid() {
		return StageResult{}, fmt.Errorf("invalid trigger kind %q", req.Trigger.Kind)
	}
	req.Repository.UUID = repo.UUID
	clock := time.Now
	if !req.Now.IsZero() {
		clock = func() time.Time { return req.Now }
	}
	now := clock()
	if req.Started.IsZero() {
		req.Started = now
	}

	parent := req.Latest
	if !req.LatestLoaded {
		parent, err = s.LoadManifest(ctx, repo, "latest")
		if errors.Is(err, ErrNotFound) {
			parent = nil
		} else if err != nil {
			return StageResult{}, err
		}
	}
	if parent != nil && (parent.Tenant != repo.Tenant || parent.Repository.UUID != repo.UUID) {
		return StageResult{}, fmt.Errorf("stage snapshot of %s: the latest snapshot handed in belongs to %s/%s", repo, parent.Tenant, parent.Repository.UUID)
	}
	refs, head, err := mirror.Refs()
	if err != nil {
		return StageResult{}, err
	}
	mirrorPacks, err := mirror.Packs()
	if err != nil {
		return StageResult{}, err
	}
	stored := map[string]bool{}
	var packs []Pack
	parentID := ""
	if parent != nil {
		parentID = parent.ID
		packs = append(packs, parent.Packs...)
		for _, p := range parent.Packs {
			stored[p.Name] = true
		}
	}
	var pending []gitmirror.PackFiles
	for _, p := range mirrorPacks {
		if !stored[p.Name] {
			pending = append(pending, p)
		}
	}
	pins := gitmirror.RefMap{}
	if parent != nil {
		for name, oid := range parent.Pins {
			pins[name] = oid
		}
	}
	if req.PinCandidates != nil {
		for name, oid := range req.PinCandidates(refs) {
			if strings.HasPrefix(name, PinRefPrefix) && mirror.HasObject(oid) {
				pins[name] = oid
			}
		}
	}
	var parentPins gitmirror.RefMap
	if parent != nil {
		parentPins = parent.Pins
	}
	if parent != nil && len(pending) == 0 && refs.Equal(parent.Refs) && head == parent.Head && pins.Equal(parentPins) {
		return StageResult{Manifest: parent}, nil
	}

	id, err := NewSnapshotID(now, parentID)
	if err != nil {
		return StageResult{}, err
	}
	created, _ := SnapshotTime(id)
	refTargets := map[string]bool{}
	for _, oid := range refs {
		refTargets[oid] = true
	}
	var rewritten []string
	if parent != nil {
		rewritten = mirror.Rewritten(parent.Refs, refs)
		slices.Sort(rewritten)
	}
	consolidated := false
	if due, why := req.Consolidate.due(packs, pending); parent != nil && due && len(refs) > 0 {
		roots := make([]string, 0, len(refs)+len(pins))
		for _, oid := range refs {
			roots = append(roots, oid)
		}
		for _, oid := range pins {
			roots = append(roots, oid)
		}
		slices.Sort(roots)
		roots = slices.Compact(roots)
		full, err := mirror.Consolidate(ctx, roots)
		if err != nil {
			return StageResult{}, fmt.Errorf("consolidate %s: %w", repo, err)
		}
		slog.InfoContext(ctx, "consolidating the restore chain", "repository", repo.String(), "reason", why,
			"packs_before", len(packs)+len(pending), "pack", full.Name, "objects", full.Objects)
		packs, pending, consolidated = nil, []gitmirror.PackFiles{full}, true
	}
	result := StageResult{Staged: true}
	for i, p := range pending {
		entry, uploaded, err := s.PutPack(ctx, repo, p, func(ev TransferEvent) {
			if req.Progress != nil {
				ev.Index, ev.Count = i+1, len(pending)
				req.Progress(ev)
			}
		})
		if err != nil {
			return StageResult{}, err
		}
		entry.Snapshot = id
		// The first full clone of a repository depends on nothing and every
		// reference points into it; reading its commits would only cost time.
		// A consolidated pack is full too: its only roots besides the
		// references are the pins.
		switch {
		case consolidated:
			for _, oid := range pins {
				if !refTargets[oid] && !slices.Contains(entry.UnnamedTips, oid) {
					entry.UnnamedTips = append(entry.UnnamedTips, oid)
				}
			}
			slices.Sort(entry.UnnamedTips)
		case !(parent == nil && len(pending) == 1):
			links, err := mirror.PackLinks(p)
			if err != nil {
				return StageResult{}, err
			}
			entry.Prerequisites = links.Prerequisites
			for _, tip := range links.Tips {
				if !refTargets[tip] {
					entry.UnnamedTips = append(entry.UnnamedTips, tip)
				}
			}
		}
		packs = append(packs, entry)
		if uploaded > 0 {
			result.PacksUploaded++
			result.BytesUploaded += uploaded
		}
		slog.DebugContext(ctx, "pack stored", "repository", repo.String(), "pack", p.Name,
			"index", i+1, "of", len(pending), "bytes_uploaded", uploaded)
	}

	m := &Manifest{
		Format:       FormatVersion,
		ID:           id,
		Tenant:       repo.Tenant,
		Repository:   req.Repository,
		Created:      created,
		Trigger:      req.Trigger,
		Parent:       parentID,
		Head:         head,
		Refs:         refs,
		Pins:         pins,
		Packs:        packs,
		Rewritten:    rewritten,
		Consolidated: consolidated,
		// The exports stay the parent's until the run's export step replaces them.
		Exports:        exportsOf(parent),
		DurationMillis: clock().Sub(req.Started).Milliseconds(),
	}
	data, err := encodeManifest(m)
	if err != nil {
		return StageResult{}, err
	}
	// A draft may be written again by a retried attempt: plain overwrite.
	if err := s.bucket.WriteAll(ctx, repo.DraftKey(id), data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return StageResult{}, fmt.Errorf("stage snapshot %s: %w", id, err)
	}
	result.Manifest = m
	slog.InfoContext(ctx, "snapshot staged", "repository", repo.String(), "snapshot", id,
		"refs", len(refs), "packs", len(packs), "packs_uploaded", result.PacksUploaded, "bytes_uploaded", result.BytesUploaded)
	return result, nil
}

// CommitResult tells what CommitStaged did.
type CommitResult struct {
	Manifest *Manifest
	// Bytes is the size of the manifest written, 0 when an earlier attempt
	// had written it already.
	Bytes int64
}

// CommitStaged writes the staged draft of snapshot id as its manifest, which
// makes the snapshot exist, then removes the repository's drafts. It is
// idempotent: when the manifest is already there (an earlier attempt wrote
// it), it returns that manifest. It refuses, with ErrStaleDraft, a draft
// whose parent is no longer the latest snapshot: committing it would fork
// the history (an attempt that ran on after Temporal had given up on it
// staged it). ErrNotFound means there is neither a draft nor a snapshot.
func (s *Store) CommitStaged(ctx context.Context, repo RepoKey, id string) (CommitResult, error) {
	if !ValidSnapshotID(id) {
		return CommitResult{}, fmt.Errorf("invalid snapshot id %q", id)
	}
	// One listing answers both questions: was this snapshot committed already (a retry), and is
	// the draft's parent still the latest? Loading the latest manifest (thousands of refs) only
	// to read its id cost a download and a decode on every backup.
	ids, err := s.ListSnapshots(ctx, repo)
	if err != nil {
		return CommitResult{}, err
	}
	if slices.Contains(ids, id) {
		m, err := s.LoadManifest(ctx, repo, id)
		if err != nil {
			return CommitResult{}, err
		}
		s.removeDrafts(ctx, repo)
		return CommitResult{Manifest: m}, nil
	}
	draft, err := s.loadDraft(ctx, repo, id)
	if err != nil {
		return CommitResult{}, err
	}
	switch {
	case len(ids) == 0:
		if draft.Parent != "" {
			return CommitResult{}, fmt.Errorf("commit snapshot %s: its parent %s is gone: %w", id, draft.Parent, ErrStaleDraft)
		}
	case ids[0] != draft.Parent:
		return CommitResult{}, fmt.Errorf("commit snapshot %s: it follows %s, but the latest snapshot is %s: %w",
			id, orFirst(draft.Parent), ids[0], ErrStaleDraft)
	}
	n, err := s.CommitSnapshot(ctx, draft)
	if errors.Is(err, ErrSnapshotExists) {
		// A concurrent attempt won the conditional write: its manifest is
		// this draft.
		m, lerr := s.LoadManifest(ctx, repo, id)
		if lerr != nil {
			return CommitResult{}, lerr
		}
		s.removeDrafts(ctx, repo)
		return CommitResult{Manifest: m}, nil
	}
	if err != nil {
		return CommitResult{}, err
	}
	s.removeDrafts(ctx, repo)
	slog.InfoContext(ctx, "snapshot committed", "repository", repo.String(), "snapshot", id,
		"refs", draft.Totals.Refs, "packs", draft.Totals.Packs, "bytes", draft.Totals.Bytes)
	return CommitResult{Manifest: draft, Bytes: n}, nil
}

func orFirst(parent string) string {
	if parent == "" {
		return "no snapshot"
	}
	return parent
}

func (s *Store) loadDraft(ctx context.Context, repo RepoKey, id string) (*Manifest, error) {
	data, err := s.bucket.ReadAll(ctx, repo.DraftKey(id))
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("snapshot %s of repository %s is neither staged nor committed: %w", id, repo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read staged snapshot %s: %w", id, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode staged snapshot %s: %w", id, err)
	}
	if m.ID != id || m.Tenant != repo.Tenant || m.Repository.UUID != repo.UUID {
		return nil, fmt.Errorf("staged snapshot %s is stored under %s but describes %s/%s", id, repo, m.Tenant, m.ID)
	}
	return &m, nil
}

// removeDrafts deletes every draft of the repository. Only one backup of a
// repository runs at a time, so once its snapshot is committed any other
// draft is a leftover of an abandoned attempt. Failures only leave garbage
// behind, so they are logged, not returned.
func (s *Store) removeDrafts(ctx context.Context, repo RepoKey) {
	iter := s.bucket.List(&blob.ListOptions{Prefix: repo.draftPrefix()})
	for {
		obj, err := iter.Next(ctx)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			slog.WarnContext(ctx, "list staged snapshots", "repository", repo.String(), "error", err)
			return
		}
		if obj.IsDir || !strings.HasSuffix(obj.Key, ".json") {
			continue
		}
		if err := s.bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			slog.WarnContext(ctx, "remove staged snapshot", "key", obj.Key, "error", err)
		}
	}
}

func exportsOf(parent *Manifest) []Export {
	if parent == nil {
		return nil
	}
	out := make([]Export, 0, len(parent.Exports))
	for _, e := range parent.Exports {
		e.Complete = false
		e.Reason = "carried over from snapshot " + parent.ID + ": this run's export step did not replace it"
		e.Run = nil
		out = append(out, e)
	}
	return out
}
