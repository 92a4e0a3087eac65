package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
	// The storage schemes an operator may configure; linking them all in
	// keeps the choice a matter of URL.
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"

	"github.com/gitsec/gitsec/internal/gitmirror"
)

// sha256MetadataKey stores each object's SHA-256 with it, so that a re-upload
// can tell an intact object from a damaged one of the same size.
const sha256MetadataKey = "sha256"

// Store reads and writes backups in one bucket.
type Store struct {
	bucket *blob.Bucket
}

// Open opens the bucket named by a gocloud.dev URL: file:///path (add
// ?create_dir=1 to create it), s3://bucket?region=..., gs://bucket,
// azblob://container.
func Open(ctx context.Context, storageURL string) (*Store, error) {
	u, err := url.Parse(storageURL)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("invalid storage URL %q: want a URL such as file:///var/lib/gitsec/backups or s3://bucket", storageURL)
	}
	bucket, err := blob.OpenBucket(ctx, storageURL)
	if err != nil {
		// The URL itself is not echoed: it may carry credentials in its query.
		return nil, fmt.Errorf("open %s:// storage: %w", u.Scheme, err)
	}
	return &Store{bucket: bucket}, nil
}

// Close closes the bucket.
func (s *Store) Close() error { return s.bucket.Close() }

// PutPack uploads a pack and its idx unless identical objects are already
// stored (a crashed run or an earlier attempt uploaded them), and returns the
// manifest entry with Snapshot, Prerequisites and UnnamedTips left for the
// caller. uploaded is the number of bytes actually sent. progress, which may
// be nil, follows each file as it is hashed and uploaded.
func (s *Store) PutPack(ctx context.Context, repo RepoKey, p gitmirror.PackFiles, progress func(TransferEvent)) (entry Pack, uploaded int64, err error) {
	if !gitmirror.ValidPackName(p.Name) {
		return Pack{}, 0, fmt.Errorf("invalid pack name %q", p.Name)
	}
	if progress == nil {
		progress = func(TransferEvent) {}
	}
	packInfo, n, err := s.putFile(ctx, repo.PackKey(p.Name), p.PackPath, progress)
	if err != nil {
		return Pack{}, 0, err
	}
	uploaded += n
	// The idx goes second so that a stored idx implies a stored pack.
	idxInfo, n, err := s.putFile(ctx, repo.IdxKey(p.Name), p.IdxPath, progress)
	if err != nil {
		return Pack{}, 0, err
	}
	uploaded += n
	return Pack{Name: p.Name, Pack: packInfo, Idx: idxInfo, Objects: p.Objects}, uploaded, nil
}

func (s *Store) putFile(ctx context.Context, key, path string, progress func(TransferEvent)) (FileInfo, int64, error) {
	ev := TransferEvent{Op: "hash", Name: filepath.Base(path)}
	if info, err := os.Stat(path); err == nil {
		ev.Size = info.Size()
	}
	progress(ev)
	local, err := hashFile(path, newMeter(&ev, progress))
	if err != nil {
		return FileInfo{}, 0, err
	}
	ev = TransferEvent{Op: "upload", Name: ev.Name, Size: local.Size}
	attrs, err := s.bucket.Attributes(ctx, key)
	switch {
	case err == nil:
		stored := attrs.Metadata[sha256MetadataKey]
		if attrs.Size == local.Size && (stored == "" || stored == local.SHA256) {
			ev.Bytes, ev.Done = local.Size, true
			progress(ev)
			return local, 0, nil
		}
	case gcerrors.Code(err) != gcerrors.NotFound:
		return FileInfo{}, 0, fmt.Errorf("stat %s: %w", key, err)
	}

	f, err := os.Open(path)
	if err != nil {
		return FileInfo{}, 0, fmt.Errorf("upload %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	progress(ev)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts the upload when returning early
	w, err := s.bucket.NewWriter(ctx, key, &blob.WriterOptions{
		ContentType: "application/octet-stream",
		Metadata:    map[string]string{sha256MetadataKey: local.SHA256},
	})
	if err != nil {
		return FileInfo{}, 0, fmt.Errorf("upload %s: %w", key, err)
	}
	h := sha256.New()
	m := newMeter(&ev, progress)
	n, err := io.Copy(w, io.TeeReader(f, io.MultiWriter(h, m)))
	if err != nil {
		cancel()
		w.Close()
		return FileInfo{}, 0, fmt.Errorf("upload %s: %w", key, err)
	}
	m.flush()
	if err := w.Close(); err != nil {
		return FileInfo{}, 0, fmt.Errorf("upload %s: %w", key, err)
	}
	if n != local.Size || hex.EncodeToString(h.Sum(nil)) != local.SHA256 {
		return FileInfo{}, 0, fmt.Errorf("upload %s: %s changed while it was uploaded", key, path)
	}
	attrs, err = s.bucket.Attributes(ctx, key)
	if err != nil {
		return FileInfo{}, 0, fmt.Errorf("verify %s: %w", key, err)
	}
	if attrs.Size != local.Size {
		return FileInfo{}, 0, fmt.Errorf("verify %s: stored %d bytes, sent %d: %w", key, attrs.Size, local.Size, ErrCorrupt)
	}
	ev.Done = true
	progress(ev)
	return local, n, nil
}

// hashFile reads path for its size and SHA-256; its bytes also go to progress.
func hashFile(path string, progress io.Writer) (FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileInfo{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(h, progress), f)
	if err != nil {
		return FileInfo{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	return FileInfo{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// CommitSnapshot stores the manifest, which makes the snapshot exist. It must
// be the last write of a backup run. Totals are computed here. It returns the
// manifest's size in bytes, and ErrSnapshotExists when a manifest with the
// same id is already stored.
func (s *Store) CommitSnapshot(ctx context.Context, m *Manifest) (int64, error) {
	data, err := encodeManifest(m)
	if err != nil {
		return 0, err
	}
	repo, err := NewRepoKey(m.Tenant, m.Repository.UUID)
	if err != nil {
		return 0, err
	}
	key := repo.ManifestKey(m.ID)
	err = s.bucket.WriteAll(ctx, key, data, &blob.WriterOptions{
		ContentType: "application/json",
		IfNotExist:  true,
	})
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return 0, fmt.Errorf("commit snapshot %s: %w", m.ID, ErrSnapshotExists)
	}
	if err != nil {
		return 0, fmt.Errorf("commit snapshot %s: %w", m.ID, err)
	}
	return int64(len(data)), nil
}

// encodeManifest fills the manifest's empty lists and totals, validates it and
// encodes it as stored (drafts and manifests alike).
func encodeManifest(m *Manifest) ([]byte, error) {
	if m.Exports == nil {
		m.Exports = []Export{}
	}
	if m.Refs == nil {
		m.Refs = gitmirror.RefMap{}
	}
	if m.Packs == nil {
		m.Packs = []Pack{}
	}
	for i := range m.Packs {
		if m.Packs[i].Prerequisites == nil {
			m.Packs[i].Prerequisites = []string{}
		}
	}
	m.computeTotals()
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(data, '\n'), nil
}

// ListSnapshots returns the ids of a repository's snapshots, newest first.
func (s *Store) ListSnapshots(ctx context.Context, repo RepoKey) ([]string, error) {
	prefix := repo.prefix() + "snapshots/"
	var ids []string
	iter := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := iter.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list snapshots of %s: %w", repo, err)
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, prefix), ".json")
		if ok && ValidSnapshotID(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// RepositoryBytes is the size of everything stored under a repository's prefix: packs, idx
// files, manifests, drafts and exports.
func (s *Store) RepositoryBytes(ctx context.Context, tenant, repoUUID string) (int64, error) {
	repo, err := NewRepoKey(tenant, repoUUID)
	if err != nil {
		return 0, err
	}
	var total int64
	iter := s.bucket.List(&blob.ListOptions{Prefix: repo.prefix()})
	for {
		obj, err := iter.Next(ctx)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return 0, fmt.Errorf("list objects of %s: %w", repo, err)
		}
		total += obj.Size
	}
}

// ManifestBytes is the stored size of one snapshot's manifest.
func (s *Store) ManifestBytes(ctx context.Context, repo RepoKey, id string) (int64, error) {
	if !ValidSnapshotID(id) {
		return 0, fmt.Errorf("invalid snapshot id %q", id)
	}
	attrs, err := s.bucket.Attributes(ctx, repo.ManifestKey(id))
	if gcerrors.Code(err) == gcerrors.NotFound {
		return 0, fmt.Errorf("snapshot %s of repository %s: %w", id, repo, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("stat snapshot %s: %w", id, err)
	}
	return attrs.Size, nil
}

// LoadManifest reads one snapshot's manifest; id "latest" (or "") means the
// newest one. It returns ErrNotFound when there is no such snapshot.
func (s *Store) LoadManifest(ctx context.Context, repo RepoKey, id string) (*Manifest, error) {
	if id == "" || id == "latest" {
		ids, err := s.ListSnapshots(ctx, repo)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("repository %s has no snapshot: %w", repo, ErrNotFound)
		}
		id = ids[0]
	}
	if !ValidSnapshotID(id) {
		return nil, fmt.Errorf("invalid snapshot id %q: want an id such as 20260101T120000.000Z-0123abcd, or latest", id)
	}
	data, err := s.bucket.ReadAll(ctx, repo.ManifestKey(id))
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("snapshot %s of repository %s: %w", id, repo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", id, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode snapshot %s: %w: %v", id, ErrInvalidManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w: %v", id, ErrInvalidManifest, err)
	}
	if m.ID != id || m.Tenant != repo.Tenant || m.Repository.UUID != repo.UUID {
		return nil, fmt.Errorf("snapshot %s is stored under %s but describes %s/%s: %w", id, repo, m.Tenant, m.ID, ErrInvalidManifest)
	}
	return &m, nil
}

// ListTenants returns the tenant ids that have backups.
func (s *Store) ListTenants(ctx context.Context) ([]string, error) {
	return s.listDirs(ctx, "tenants/")
}

// ListRepositories returns the repositories of one tenant that have backups.
func (s *Store) ListRepositories(ctx context.Context, tenant string) ([]RepoKey, error) {
	if _, err := NewRepoKey(tenant, "x"); err != nil {
		return nil, err
	}
	uuids, err := s.listDirs(ctx, "tenants/"+tenant+"/repositories/")
	if err != nil {
		return nil, err
	}
	keys := make([]RepoKey, 0, len(uuids))
	for _, u := range uuids {
		if k, err := NewRepoKey(tenant, u); err == nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (s *Store) listDirs(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	iter := s.bucket.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	for {
		obj, err := iter.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		if obj.IsDir {
			names = append(names, strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), "/"))
		}
	}
	slices.Sort(names)
	return names, nil
}

// TransferEvent reports one file of a transfer: before it moves, about once
// every ProgressInterval while its bytes move, and once it is done. Backups
// send it as their heartbeat details, so it stays small.
type TransferEvent struct {
	// Op is "download", "hash" (reading a local file for its checksum before
	// an upload) or "upload".
	Op string `json:"op"`
	// Name is the file's name (pack-<sha1>.pack, 0001.bundle, ...).
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Bytes is how much of Size has moved so far.
	Bytes int64 `json:"bytes"`
	// Index counts from 1 up to Count.
	Index int  `json:"index"`
	Count int  `json:"count"`
	Done  bool `json:"done"`
}

// ProgressInterval is how often a transfer reports the bytes of the file
// under way.
var ProgressInterval = time.Second

// meter counts the bytes written to it into ev.Bytes and reports ev at most
// once per ProgressInterval: put in a stream, it keeps heartbeats coming
// while one big file moves.
type meter struct {
	ev       *TransferEvent
	report   func(TransferEvent)
	last     time.Time
	reported int64
}

func newMeter(ev *TransferEvent, report func(TransferEvent)) *meter {
	return &meter{ev: ev, report: report, last: time.Now()}
}

func (m *meter) Write(p []byte) (int, error) {
	m.ev.Bytes += int64(len(p))
	if now := time.Now(); now.Sub(m.last) >= ProgressInterval {
		m.last = now
		m.reported = m.ev.Bytes
		m.report(*m.ev)
	}
	return len(p), nil
}

// flush reports the count if it moved since the last report: at the end of
// a stream, so that a writer that buffers (an S3 upload sends its last part
// on Close) does not leave an old count standing while it finishes.
func (m *meter) flush() {
	if m.ev.Bytes != m.reported {
		m.last = time.Now()
		m.reported = m.ev.Bytes
		m.report(*m.ev)
	}
}

// download streams key into w, verifying size and SHA-256 against want; the
// bytes also go to progress.
func (s *Store) download(ctx context.Context, key string, want FileInfo, w, progress io.Writer) error {
	r, err := s.bucket.NewReader(ctx, key, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return fmt.Errorf("download %s: missing from storage: %w", key, ErrCorrupt)
		}
		return fmt.Errorf("download %s: %w", key, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h, progress), r)
	if err != nil {
		return fmt.Errorf("download %s: %w", key, err)
	}
	return checkDigest(key, want, n, h)
}

func checkDigest(key string, want FileInfo, n int64, h hash.Hash) error {
	got := hex.EncodeToString(h.Sum(nil))
	if n != want.Size || got != want.SHA256 {
		return fmt.Errorf("%s: got %d bytes with sha256 %s, manifest says %d bytes with sha256 %s: %w",
			key, n, got, want.Size, want.SHA256, ErrCorrupt)
	}
	return nil
}

func (s *Store) downloadFile(ctx context.Context, key string, want FileInfo, path string, progress io.Writer) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return fmt.Errorf("download %s: %w", key, err)
	}
	if err := s.download(ctx, key, want, f, progress); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("download %s: %w", key, err)
	}
	return nil
}

// DownloadPacks downloads the listed packs and idx files into dir, verifying
// each against the manifest, and returns them ready for gitmirror.Hydrate.
// progress may be nil.
func (s *Store) DownloadPacks(ctx context.Context, repo RepoKey, packs []Pack, dir string, progress func(TransferEvent)) ([]gitmirror.PackFiles, error) {
	if progress == nil {
		progress = func(TransferEvent) {}
	}
	out := make([]gitmirror.PackFiles, 0, len(packs))
	for i, p := range packs {
		if !gitmirror.ValidPackName(p.Name) {
			return nil, fmt.Errorf("invalid pack name %q", p.Name)
		}
		files := gitmirror.PackFiles{
			Name:     p.Name,
			PackPath: filepath.Join(dir, p.Name+".pack"),
			IdxPath:  filepath.Join(dir, p.Name+".idx"),
			Objects:  p.Objects,
		}
		ev := TransferEvent{Op: "download", Name: p.Name, Size: p.Pack.Size + p.Idx.Size, Index: i + 1, Count: len(packs)}
		progress(ev)
		m := newMeter(&ev, progress)
		if err := s.downloadFile(ctx, repo.PackKey(p.Name), p.Pack, files.PackPath, m); err != nil {
			return nil, err
		}
		if err := s.downloadFile(ctx, repo.IdxKey(p.Name), p.Idx, files.IdxPath, m); err != nil {
			return nil, err
		}
		ev.Done = true
		progress(ev)
		out = append(out, files)
	}
	return out, nil
}

// Hydrate rebuilds a bare repository (a worker's lost mirror, or a restore
// target) at dir from a snapshot: packs and idx files are downloaded next to
// dir and moved into place, then the references and HEAD are written.
func (s *Store) Hydrate(ctx context.Context, m *Manifest, dir string, progress func(TransferEvent)) (*gitmirror.Mirror, error) {
	repo, err := NewRepoKey(m.Tenant, m.Repository.UUID)
	if err != nil {
		return nil, err
	}
	if exists, err := gitmirror.Exists(dir); err != nil {
		return nil, err
	} else if exists {
		return nil, fmt.Errorf("%s already holds a repository", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	// Same filesystem as dir, so that moving the packs is a rename.
	staging, err := os.MkdirTemp(parent, ".gitsec-download-")
	if err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	defer os.RemoveAll(staging)
	packs, err := s.DownloadPacks(ctx, repo, m.Packs, staging, progress)
	if err != nil {
		return nil, err
	}
	return gitmirror.Hydrate(dir, packs, m.Refs, m.Head)
}

// Restore writes snapshot id ("latest" for the newest) of a repository as a
// bare repository at dir, which must not exist or be empty. Its references
// and HEAD equal the manifest's.
func (s *Store) Restore(ctx context.Context, repo RepoKey, id, dir string, progress func(TransferEvent)) (*Manifest, error) {
	m, err := s.LoadManifest(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	mirror, err := s.Hydrate(ctx, m, dir, progress)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	if err := mirror.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

// WritePins adds the snapshot's pins (refs/gitsec/pull/<id>/head) to a repository restored
// from it. Restores leave them out unless asked: they are GitSec's references, not the
// repository's.
func WritePins(dir string, m *Manifest) error {
	if len(m.Pins) == 0 {
		return nil
	}
	mirror, err := gitmirror.Open(dir)
	if err != nil {
		return err
	}
	defer mirror.Close()
	for name, oid := range m.Pins {
		if !mirror.HasObject(oid) {
			return fmt.Errorf("pin %s: commit %s is not in the restored packs: %w", name, oid, ErrCorrupt)
		}
	}
	if err := mirror.SetRefs(m.Pins); err != nil {
		return fmt.Errorf("write pins into %s: %w", dir, err)
	}
	return nil
}
