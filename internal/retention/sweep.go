package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
)

// SweepOptions configure one mark-and-sweep pass over a repository's packs, idx files and
// export objects.
type SweepOptions struct {
	Now time.Time
	// Grace is how long an object must have been found unreferenced, on an earlier pass, before
	// it is deleted. It covers a backup that is between uploading its pack and writing its draft
	// on a worker that does not take the storage lock.
	Grace time.Duration
	// Marked holds the objects earlier passes found unreferenced, with when they were first
	// found (the caller keeps them between passes).
	Marked map[string]time.Time
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
	// BeforeDelete, when set, runs before each delete (the audit record); an error stops the
	// pass before that object is touched.
	BeforeDelete func(archive.StoredObject) error
}

// LockedObject is an object the storage refused to delete (an object lock).
type LockedObject struct {
	archive.StoredObject
	Error string
}

// SweepResult is what a pass found and did.
type SweepResult struct {
	Referenced int
	Deleted    []archive.StoredObject
	// Locked were due but refused by the storage; they stay marked and a later pass retries.
	Locked []LockedObject
	// Pending are unreferenced objects still inside their grace period.
	Pending []archive.StoredObject
	// Marked is the set of marks to keep for the next pass: pending and locked objects.
	Marked       map[string]time.Time
	BytesFreed   int64
	BytesPending int64
}

// Sweep deletes the repository's objects that no manifest or draft references and that an
// earlier pass at least Grace ago already found unreferenced (with Grace 0, at once). It lists
// the objects before the references, so that an object uploaded meanwhile is not considered at
// all, and reads drafts before manifests (see archive.Store.ReferencedKeys). A manifest that
// does not verify stops the pass before anything is deleted. A pass cut short deletes nothing
// still referenced: the next pass lists everything again.
func Sweep(ctx context.Context, st *archive.Store, repo archive.RepoKey, opts SweepOptions) (SweepResult, error) {
	res := SweepResult{Marked: map[string]time.Time{}}
	objects, err := st.ListPrunable(ctx, repo)
	if err != nil {
		return res, err
	}
	referenced, err := st.ReferencedKeys(ctx, repo)
	if err != nil {
		return res, fmt.Errorf("refusing to sweep %s: %w", repo, err)
	}
	res.Referenced = len(referenced)
	for _, obj := range objects {
		if referenced[obj.Key] {
			continue
		}
		first, ok := opts.Marked[obj.Key]
		if !ok || first.After(opts.Now) {
			first = opts.Now
		}
		if opts.Now.Sub(first) < opts.Grace || opts.DryRun {
			res.Marked[obj.Key] = first
			res.Pending = append(res.Pending, obj)
			res.BytesPending += obj.Size
			continue
		}
		if opts.BeforeDelete != nil {
			if err := opts.BeforeDelete(obj); err != nil {
				res.Marked[obj.Key] = first
				return res, err
			}
		}
		if err := st.DeleteObject(ctx, repo, obj.Key); err != nil {
			res.Marked[obj.Key] = first
			if errors.Is(err, archive.ErrLocked) {
				res.Locked = append(res.Locked, LockedObject{StoredObject: obj, Error: err.Error()})
				continue
			}
			return res, err
		}
		res.Deleted = append(res.Deleted, obj)
		res.BytesFreed += obj.Size
	}
	return res, nil
}

// ForgetResult is what Forget did.
type ForgetResult struct {
	Forgotten []string
	// Locked snapshots' manifests were refused by the storage (an object lock); they still
	// exist and a later run tries again.
	Locked []LockedObject
}

// Forget deletes the manifests of the plan's forgotten snapshots, the first half of a retention
// run: once its manifest is gone a snapshot no longer exists, and only then may a sweep free
// what nothing references any more. before, when set, runs before each delete (the audit).
func Forget(ctx context.Context, st *archive.Store, repo archive.RepoKey, plan *Plan, before func(id string) error) (ForgetResult, error) {
	var res ForgetResult
	for _, id := range plan.Forget {
		if before != nil {
			if err := before(id); err != nil {
				return res, err
			}
		}
		if err := st.DeleteManifest(ctx, repo, id); err != nil {
			if errors.Is(err, archive.ErrLocked) {
				res.Locked = append(res.Locked, LockedObject{StoredObject: archive.StoredObject{Key: repo.ManifestKey(id)}, Error: err.Error()})
				continue
			}
			return res, fmt.Errorf("forget snapshot %s of %s: %w", id, repo, err)
		}
		res.Forgotten = append(res.Forgotten, id)
	}
	return res, nil
}
