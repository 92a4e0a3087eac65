package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// ErrLocked: the storage refused a delete (HTTP 403), as a bucket with S3 Object Lock does for an
// object whose retention date has not passed. Retention records it and tries again on a later
// run; retrying at once cannot succeed.
var ErrLocked = errors.New("storage refused the delete (object lock or missing permission)")

// StoredObject is one object of a repository's prefix that retention may delete: a pack, an
// idx or an export object. Key is the full bucket key.
type StoredObject struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// ListPrunable lists the repository's packs, idx files and export objects (never manifests or
// drafts).
func (s *Store) ListPrunable(ctx context.Context, repo RepoKey) ([]StoredObject, error) {
	var out []StoredObject
	for _, dir := range []string{"packs/", "exports/"} {
		iter := s.bucket.List(&blob.ListOptions{Prefix: repo.prefix() + dir})
		for {
			obj, err := iter.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("list %s of %s: %w", dir, repo, err)
			}
			if !obj.IsDir {
				out = append(out, StoredObject{Key: obj.Key, Size: obj.Size, ModTime: obj.ModTime})
			}
		}
	}
	return out, nil
}

// ReferencedKeys returns every object key that a draft or a manifest of the repository names.
// Drafts are read before manifests: a commit writes its manifest before it deletes the drafts,
// so an object staged by a concurrent backup is seen in at least one of the two listings. A
// manifest that does not load or verify fails the call: deciding what is unreferenced from a
// manifest nobody can read could delete what it needs.
func (s *Store) ReferencedKeys(ctx context.Context, repo RepoKey) (map[string]bool, error) {
	keys := map[string]bool{}
	add := func(m *Manifest) {
		for _, p := range m.Packs {
			keys[repo.PackKey(p.Name)] = true
			keys[repo.IdxKey(p.Name)] = true
		}
		for _, e := range m.Exports {
			keys[repo.prefix()+e.Key] = true
		}
	}
	// A commit deletes drafts while they are listed; some drivers (fileblob) then fail the
	// listing, which is simply taken again.
	for attempt := 1; ; attempt++ {
		drafts, err := s.readDrafts(ctx, repo)
		if gcerrors.Code(errors.Unwrap(err)) == gcerrors.NotFound && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, m := range drafts {
			add(m)
		}
		break
	}
	ids, err := s.ListSnapshots(ctx, repo)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		m, err := s.LoadManifest(ctx, repo, id)
		if errors.Is(err, ErrNotFound) {
			continue // forgotten by a retention run since the listing
		}
		if err != nil {
			return nil, err
		}
		add(m)
	}
	return keys, nil
}

func (s *Store) readDrafts(ctx context.Context, repo RepoKey) ([]*Manifest, error) {
	var out []*Manifest
	iter := s.bucket.List(&blob.ListOptions{Prefix: repo.draftPrefix()})
	for {
		obj, err := iter.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list staged snapshots of %s: %w", repo, err)
		}
		if obj.IsDir || !strings.HasSuffix(obj.Key, ".json") {
			continue
		}
		data, err := s.bucket.ReadAll(ctx, obj.Key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			continue // committed (or abandoned) and removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read staged snapshot %s: %w", obj.Key, err)
		}
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("decode staged snapshot %s: %w", obj.Key, err)
		}
		out = append(out, &m)
	}
}

// DeleteManifest forgets a snapshot: without its manifest it no longer exists. Deleting a
// manifest that is already gone succeeds, so a retention run can be repeated.
func (s *Store) DeleteManifest(ctx context.Context, repo RepoKey, id string) error {
	if !ValidSnapshotID(id) {
		return fmt.Errorf("invalid snapshot id %q", id)
	}
	return s.deleteKey(ctx, repo.ManifestKey(id))
}

// DeleteObject deletes a pack, idx or export object of the repository; keys outside its packs/
// and exports/ are refused. An object already gone is fine.
func (s *Store) DeleteObject(ctx context.Context, repo RepoKey, key string) error {
	rest, ok := strings.CutPrefix(key, repo.prefix())
	if !ok || !(strings.HasPrefix(rest, "packs/") || strings.HasPrefix(rest, "exports/")) || strings.Contains(rest, "..") {
		return fmt.Errorf("refusing to delete %q: not a pack or export object of %s", key, repo)
	}
	return s.deleteKey(ctx, key)
}

func (s *Store) deleteKey(ctx context.Context, key string) error {
	err := s.bucket.Delete(ctx, key)
	switch gcerrors.Code(err) {
	case gcerrors.OK, gcerrors.NotFound:
		return nil
	case gcerrors.PermissionDenied:
		return fmt.Errorf("delete %s: %w: %v", key, ErrLocked, err)
	}
	return fmt.Errorf("delete %s: %w", key, err)
}
