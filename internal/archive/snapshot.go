package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

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

// SnapshotMirror backs up a mirror after a fetch: it uploads every pack of the
// mirror that the latest snapshot does not list yet (normally the one pack
// the fetch wrote; more when an earlier run died before its manifest), then
// writes the manifest last. Running it again after a crash at any point
// completes the backup without re-uploading what is already stored.
func (s *Store) SnapshotMirror(ctx context.Context, mirror *gitmirror.Mirror, req SnapshotRequest) (SnapshotResult, error) {
	repo, err := NewRepoKey(req.Tenant, req.Repository.UUID)
	if err != nil {
		return SnapshotResult{}, err
	}
	if !req.Trigger.Kind.Valid() {
		return SnapshotResult{}, fmt.Errorf("invalid trigger kind %q", req.Trigger.Kind)
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

	parent, err := s.LoadManifest(ctx, repo, "latest")
	if errors.Is(err, ErrNotFound) {
		parent = nil
	} else if err != nil {
		return SnapshotResult{}, err
	}
	refs, head, err := mirror.Refs()
	if err != nil {
		return SnapshotResult{}, err
	}
	mirrorPacks, err := mirror.Packs()
	if err != nil {
		return SnapshotResult{}, err
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
	if parent != nil && len(pending) == 0 && refs.Equal(parent.Refs) && head == parent.Head {
		return SnapshotResult{Manifest: parent}, nil
	}

	id, err := NewSnapshotID(now, parentID)
	if err != nil {
		return SnapshotResult{}, err
	}
	created, _ := SnapshotTime(id)
	refTargets := map[string]bool{}
	for _, oid := range refs {
		refTargets[oid] = true
	}
	result := SnapshotResult{Created: true}
	for i, p := range pending {
		entry, uploaded, err := s.PutPack(ctx, repo, p)
		if err != nil {
			return SnapshotResult{}, err
		}
		entry.Snapshot = id
		// The first full clone of a repository depends on nothing and every
		// reference points into it; reading its commits would only cost time.
		if !(parent == nil && len(pending) == 1) {
			links, err := mirror.PackLinks(p)
			if err != nil {
				return SnapshotResult{}, err
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
		Format:         FormatVersion,
		ID:             id,
		Tenant:         repo.Tenant,
		Repository:     req.Repository,
		Created:        created,
		Trigger:        req.Trigger,
		Parent:         parentID,
		Head:           head,
		Refs:           refs,
		Packs:          packs,
		DurationMillis: clock().Sub(req.Started).Milliseconds(),
	}
	n, err := s.CommitSnapshot(ctx, m)
	if err != nil {
		return SnapshotResult{}, err
	}
	result.BytesUploaded += n
	result.Manifest = m
	slog.InfoContext(ctx, "snapshot committed", "repository", repo.String(), "snapshot", id,
		"refs", len(refs), "packs", len(packs), "packs_uploaded", result.PacksUploaded, "bytes_uploaded", result.BytesUploaded)
	return result, nil
}
