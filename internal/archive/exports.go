package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Export kinds and the formats of their objects. docs/backup-format.md
// specifies both; readers refuse a format they do not know.
const (
	// ExportPullRequests is every pull request of the repository with its
	// comments, tasks, activity and commits: gzip'd JSON Lines, one
	// PullRequestRecord per line, sorted by id.
	ExportPullRequests = "pull-requests"
	// ExportMetadata is the repository's settings: one gzip'd JSON
	// RepositoryMetadata document.
	ExportMetadata = "metadata"

	PullRequestsFormat = "gitsec-pull-requests/1"
	MetadataFormat     = "gitsec-metadata/1"
)

// Export is one exported object a snapshot references. Objects are
// content-addressed (the key ends in the SHA-256 of the stored bytes) and
// written once, so an unchanged export is the previous snapshot's object.
type Export struct {
	Kind   string   `json:"kind"`
	Key    string   `json:"key"`
	File   FileInfo `json:"file"`
	Format string   `json:"format,omitempty"`
	// Records is how many pull requests (or 1 for metadata) the object holds.
	Records int `json:"records"`
	// States counts the pull requests per state (OPEN, MERGED, ...).
	States map[string]int `json:"states,omitempty"`
	// Complete is false when the run could not fetch everything (rate
	// limits, an outage); Reason says why. The object then holds what the
	// previous export had plus what this run fetched, and the next run
	// catches up from HighWater.
	Complete bool   `json:"complete"`
	Reason   string `json:"reason,omitempty"`
	// HighWater is the newest updated_on up to which every pull request is
	// exported: the next incremental export lists from there (minus an
	// overlap).
	HighWater *time.Time `json:"high_water,omitempty"`
	// Sequence counts incremental exports since the last full
	// reconciliation (0: this export re-listed every pull request).
	Sequence int `json:"sequence"`
	// Run tells what the export step of this snapshot did.
	Run *ExportRun `json:"run,omitempty"`
}

// ExportRun is the work of one export step, for operators and the closing
// numbers of a backup: it does not take part in change detection.
type ExportRun struct {
	// Full says every pull request was listed (first export or a
	// reconciliation); otherwise only those updated since HighWater.
	Full bool `json:"full"`
	// RESTCalls counts HTTP requests to the Bitbucket API, retries included.
	RESTCalls int `json:"rest_calls"`
	// Listed and Fetched count pull requests seen in the list and fetched
	// in detail (comments, tasks, activity, commits).
	Listed  int `json:"listed"`
	Fetched int `json:"fetched"`
	// Drift counts pull requests a reconciliation found that the
	// incremental exports had missed or got out of date.
	Drift int `json:"drift,omitempty"`
	// Missing counts pull requests that were listed but answered 404 when
	// fetched (deleted upstream in between).
	Missing        int   `json:"missing,omitempty"`
	DurationMillis int64 `json:"duration_ms"`
	// Written is false when the object already existed (unchanged export).
	Written bool `json:"written"`
}

var exportKeyPattern = regexp.MustCompile(`^exports/(pull-requests|metadata)/[0-9a-f]{64}\.(jsonl|json)\.gz$`)

// exportObjectKey is where an export's bytes live, relative to the
// repository's prefix.
func exportObjectKey(kind string, sum string) string {
	ext := "json.gz"
	if kind == ExportPullRequests {
		ext = "jsonl.gz"
	}
	return "exports/" + kind + "/" + sum + "." + ext
}

func (e Export) validate() error {
	if e.Kind != ExportPullRequests && e.Kind != ExportMetadata {
		return fmt.Errorf("unknown export kind %q", e.Kind)
	}
	if !exportKeyPattern.MatchString(e.Key) || e.Key != exportObjectKey(e.Kind, e.File.SHA256) {
		return fmt.Errorf("export %s has invalid key %q", e.Kind, e.Key)
	}
	return nil
}

// FindExport returns the manifest's export of a kind, or nil.
func (m *Manifest) FindExport(kind string) *Export {
	for i := range m.Exports {
		if m.Exports[i].Kind == kind {
			return &m.Exports[i]
		}
	}
	return nil
}

// gzipBytes compresses deterministically (no name, no time stamp), so equal
// input gives equal objects and equal keys.
func gzipBytes(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// EncodePullRequests is the stored form of a pull request export: records
// sorted by id, one JSON document per line in the fields' declared order,
// gzip'd. An unchanged set of records encodes to the same bytes.
func EncodePullRequests(records []PullRequestRecord) ([]byte, error) {
	sorted := append([]PullRequestRecord(nil), records...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range sorted {
		if i > 0 && sorted[i].ID == sorted[i-1].ID {
			return nil, fmt.Errorf("pull request %d listed twice", sorted[i].ID)
		}
		if err := enc.Encode(&sorted[i]); err != nil {
			return nil, fmt.Errorf("encode pull request %d: %w", sorted[i].ID, err)
		}
	}
	return gzipBytes(buf.Bytes())
}

// EncodeMetadata is the stored form of a metadata export.
func EncodeMetadata(md *RepositoryMetadata) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(md); err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return gzipBytes(buf.Bytes())
}

// PutExport stores an encoded export object under its content address and
// returns the manifest entry for it (Kind, Key, File, Format). Written is
// false when the object was already stored: the same content, so nothing to
// do.
func (s *Store) PutExport(ctx context.Context, repo RepoKey, kind string, data []byte) (e Export, written bool, err error) {
	sum := sha256.Sum256(data)
	e = Export{Kind: kind, File: FileInfo{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}
	switch kind {
	case ExportPullRequests:
		e.Format = PullRequestsFormat
	case ExportMetadata:
		e.Format = MetadataFormat
	default:
		return Export{}, false, fmt.Errorf("unknown export kind %q", kind)
	}
	e.Key = exportObjectKey(kind, e.File.SHA256)
	full := repo.prefix() + e.Key
	if attrs, err := s.bucket.Attributes(ctx, full); err == nil && attrs.Size == e.File.Size {
		return e, false, nil
	} else if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return Export{}, false, fmt.Errorf("check export %s: %w", e.Key, err)
	}
	// A half-written object (a crash mid-upload) has the wrong size and is
	// written again; the key is the content, so the overwrite is identical.
	if err := s.bucket.WriteAll(ctx, full, data, &blob.WriterOptions{ContentType: "application/gzip"}); err != nil {
		return Export{}, false, fmt.Errorf("store export %s: %w", e.Key, err)
	}
	return e, true, nil
}

// maxExportBytes bounds what a reader decompresses from one export object.
const maxExportBytes = 4 << 30

// OpenExport reads an export object, verifies its size and SHA-256 against the
// manifest entry and returns its decompressed content.
func (s *Store) OpenExport(ctx context.Context, repo RepoKey, e Export) (io.ReadCloser, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	data, err := s.bucket.ReadAll(ctx, repo.prefix()+e.Key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("export %s is missing from storage: %w", e.Key, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("read export %s: %w", e.Key, err)
	}
	h := sha256.Sum256(data)
	if err := checkDigestSum(e.Key, e.File, int64(len(data)), h[:]); err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", e.Key, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(zr, maxExportBytes), zr}, nil
}

func checkDigestSum(key string, want FileInfo, n int64, sum []byte) error {
	if n != want.Size || hex.EncodeToString(sum) != want.SHA256 {
		return fmt.Errorf("%s: %d bytes with SHA-256 %s, manifest says %d bytes with %s: %w",
			key, n, hex.EncodeToString(sum), want.Size, want.SHA256, ErrCorrupt)
	}
	return nil
}

// maxRecordLine bounds one pull request's line (1 MB descriptions and
// comments times many comments still fit).
const maxRecordLine = 512 << 20

// WalkPullRequests decodes a pull request export record by record, in id
// order, without holding the whole export in memory.
func WalkPullRequests(r io.Reader, fn func(*PullRequestRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxRecordLine)
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var rec PullRequestRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("pull request export line %d: %w", line, err)
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read pull request export: %w", err)
	}
	return nil
}

// ErrNoExport: the snapshot has no export of the kind asked for (taken
// before exports existed, or the export step never completed once).
var ErrNoExport = errors.New("snapshot has no such export")

// LoadPullRequests reads every pull request of a snapshot.
func (s *Store) LoadPullRequests(ctx context.Context, m *Manifest) ([]PullRequestRecord, *Export, error) {
	var out []PullRequestRecord
	e, err := s.WalkSnapshotPullRequests(ctx, m, func(r *PullRequestRecord) error {
		out = append(out, *r)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, e, nil
}

// LoadMetadata reads a snapshot's repository metadata.
func (s *Store) LoadMetadata(ctx context.Context, m *Manifest) (*RepositoryMetadata, error) {
	e := m.FindExport(ExportMetadata)
	if e == nil {
		return nil, fmt.Errorf("snapshot %s: metadata: %w", m.ID, ErrNoExport)
	}
	repo, err := NewRepoKey(m.Tenant, m.Repository.UUID)
	if err != nil {
		return nil, err
	}
	rc, err := s.OpenExport(ctx, repo, *e)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var md RepositoryMetadata
	if err := json.NewDecoder(rc).Decode(&md); err != nil {
		return nil, fmt.Errorf("snapshot %s: decode metadata: %w", m.ID, err)
	}
	if md.Format != MetadataFormat {
		return nil, fmt.Errorf("snapshot %s: unsupported metadata format %q (this build reads %s)", m.ID, md.Format, MetadataFormat)
	}
	return &md, nil
}

// LoadDraft reads a staged snapshot's manifest draft (see StageSnapshot).
func (s *Store) LoadDraft(ctx context.Context, repo RepoKey, id string) (*Manifest, error) {
	return s.loadDraft(ctx, repo, id)
}

// StageExports adds export entries to a staged draft, replacing earlier
// entries of the same kinds.
func (s *Store) StageExports(ctx context.Context, repo RepoKey, id string, exports []Export) (*Manifest, error) {
	draft, err := s.loadDraft(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	draft.Exports = mergeExports(draft.Exports, exports)
	if err := s.writeDraft(ctx, repo, draft); err != nil {
		return nil, err
	}
	return draft, nil
}

// StageExportsOnly stages a snapshot whose code is the parent's (same refs,
// HEAD and packs) and whose exports changed: a pull request was commented on
// while nobody pushed. It returns the draft for CommitStaged.
func (s *Store) StageExportsOnly(ctx context.Context, parent *Manifest, trigger Trigger, started time.Time, exports []Export) (*Manifest, error) {
	repo, err := NewRepoKey(parent.Tenant, parent.Repository.UUID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	id, err := NewSnapshotID(now, parent.ID)
	if err != nil {
		return nil, err
	}
	created, _ := SnapshotTime(id)
	if started.IsZero() {
		started = now
	}
	m := &Manifest{
		Format:         FormatVersion,
		ID:             id,
		Tenant:         parent.Tenant,
		Repository:     parent.Repository,
		Created:        created,
		Trigger:        trigger,
		Parent:         parent.ID,
		Head:           parent.Head,
		Refs:           parent.Refs,
		Pins:           parent.Pins,
		Packs:          parent.Packs,
		Exports:        mergeExports(parent.Exports, exports),
		DurationMillis: time.Since(started).Milliseconds(),
	}
	if err := s.writeDraft(ctx, repo, m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Store) writeDraft(ctx context.Context, repo RepoKey, m *Manifest) error {
	data, err := encodeManifest(m)
	if err != nil {
		return err
	}
	if err := s.bucket.WriteAll(ctx, repo.DraftKey(m.ID), data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("stage snapshot %s: %w", m.ID, err)
	}
	return nil
}

// mergeExports replaces base's entries by the kinds in add, keeping the
// order kinds first appeared in.
func mergeExports(base, add []Export) []Export {
	out := append([]Export(nil), base...)
	for _, e := range add {
		replaced := false
		for i := range out {
			if out[i].Kind == e.Kind {
				out[i], replaced = e, true
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}

// ExportsUnchanged reports whether exports reference the objects the latest
// snapshot does and say no less about completeness (a catch-up that completes
// an export is news, a run that could not refresh an unchanged one is not):
// only then is a snapshot over unchanged code not worth writing.
func ExportsUnchanged(latest *Manifest, exports []Export) bool {
	if latest == nil || len(exports) != len(latest.Exports) {
		return false
	}
	for _, e := range exports {
		prev := latest.FindExport(e.Kind)
		if prev == nil || prev.Key != e.Key || (e.Complete && !prev.Complete) {
			return false
		}
	}
	return true
}
