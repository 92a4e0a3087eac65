// Package archive is the backup format in object storage: immutable pack and
// idx files as the fetch wrote them, and one JSON manifest per snapshot,
// written last. docs/backup-format.md is the specification; this package
// writes it, reads it back, restores bare repositories from it and exports
// snapshots as chains of standard git bundles.
package archive

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitref"
)

// PinRefPrefix is GitSec's own reference namespace in a snapshot's pins.
const PinRefPrefix = "refs/gitsec/pull/"

// PinRef is the pin of a pull request's source commit.
func PinRef(id int64) string { return fmt.Sprintf("%s%d/head", PinRefPrefix, id) }

// FormatVersion is written into every manifest; readers refuse other values.
const FormatVersion = "gitsec-backup/1"

// Manifest describes one snapshot of one repository. A snapshot exists only
// once its manifest is stored.
type Manifest struct {
	Format     string     `json:"format"`
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Repository Repository `json:"repository"`
	Created    time.Time  `json:"created"`
	Trigger    Trigger    `json:"trigger"`
	// Parent is the snapshot this one was taken after ("" for the first).
	Parent string `json:"parent,omitempty"`
	// Head is the target of the symbolic HEAD ("" when unknown, e.g. for an
	// empty repository).
	Head string           `json:"head,omitempty"`
	Refs gitmirror.RefMap `json:"refs"`
	// Pins are GitSec's own references (refs/gitsec/pull/<id>/head) to
	// commits the refs no longer reach but a pull request showed: its branch
	// was deleted, or it came from a fork. A restore recreates them only when
	// asked; they never take part in change detection.
	Pins gitmirror.RefMap `json:"pins,omitempty"`
	// Packs are every pack a restore needs, in the order to apply them.
	Packs []Pack `json:"packs"`
	// Consolidated: Packs is one fresh full pack written by this snapshot instead of the
	// parent's chain (see ConsolidatePolicy).
	Consolidated bool `json:"consolidated,omitempty"`
	// Rewritten are references of the parent that this snapshot moved to an object not
	// descending from the old one (force-pushed branches, moved tags). With the references
	// missing from Refs (deleted) they make the parent "the last before a destructive change",
	// which retention can keep.
	Rewritten []string `json:"rewritten,omitempty"`
	Exports   []Export `json:"exports"`
	Totals    Totals   `json:"totals"`
	// DurationMillis is how long the backup run took, fetch included.
	DurationMillis int64 `json:"duration_ms"`
}

// Repository identifies the backed-up repository. UUID is the provider's
// stable id (Bitbucket's without braces, lower case); FullName is
// "workspace/slug" at the time of the snapshot and may change later.
type Repository struct {
	Provider string `json:"provider"`
	UUID     string `json:"uuid"`
	FullName string `json:"full_name"`
}

// Trigger records what started the backup run; DeliveryID is the webhook
// delivery (X-Request-UUID) when there was one.
type Trigger struct {
	Kind       domain.TriggerKind `json:"kind"`
	DeliveryID string             `json:"delivery_id,omitempty"`
}

// FileInfo is the size and SHA-256 (hex) of one stored object.
type FileInfo struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Pack is one pack in a manifest.
type Pack struct {
	// Name is "pack-<sha1>"; the objects are packs/<Name>.pack and .idx.
	Name    string   `json:"name"`
	Pack    FileInfo `json:"pack"`
	Idx     FileInfo `json:"idx"`
	Objects int64    `json:"objects"`
	// Snapshot is the snapshot that introduced the pack; a bundle export
	// takes the references of the bundle made from this pack from it.
	Snapshot string `json:"snapshot"`
	// Prerequisites are the commits outside the pack that its commits and
	// tags point to: the prerequisites of the bundle made from this pack.
	Prerequisites []string `json:"prerequisites"`
	// UnnamedTips are commits or tags of the pack that no reference of the
	// introducing snapshot reaches (a later fetch in the same run moved the
	// branch on); a bundle export gives them refs/gitsec/tips/<oid> names.
	UnnamedTips []string `json:"unnamed_tips,omitempty"`
}

// Totals summarise a manifest for listings.
type Totals struct {
	Refs  int `json:"refs"`
	Packs int `json:"packs"`
	// Bytes is the stored size of every pack, idx and export the snapshot
	// needs.
	Bytes int64 `json:"bytes"`
}

func (m *Manifest) computeTotals() {
	m.Totals = Totals{Refs: len(m.Refs), Packs: len(m.Packs)}
	for _, p := range m.Packs {
		m.Totals.Bytes += p.Pack.Size + p.Idx.Size
	}
	for _, e := range m.Exports {
		m.Totals.Bytes += e.File.Size
	}
}

// Validate checks a manifest before it is written and after it is read, so
// that nothing downstream trusts malformed names or ids.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("unsupported backup format %q (this build reads %s)", m.Format, FormatVersion)
	}
	if !ValidSnapshotID(m.ID) {
		return fmt.Errorf("invalid snapshot id %q", m.ID)
	}
	if m.Parent != "" && !ValidSnapshotID(m.Parent) {
		return fmt.Errorf("invalid parent snapshot id %q", m.Parent)
	}
	if _, err := NewRepoKey(m.Tenant, m.Repository.UUID); err != nil {
		return err
	}
	if !m.Trigger.Kind.Valid() {
		return fmt.Errorf("invalid trigger kind %q", m.Trigger.Kind)
	}
	if m.Head != "" {
		if err := gitref.Check(m.Head); err != nil {
			return fmt.Errorf("HEAD target: %w", err)
		}
	}
	for name, oid := range m.Refs {
		if err := gitref.Check(name); err != nil {
			return err
		}
		if !gitref.ValidOID(oid) {
			return fmt.Errorf("reference %s has invalid object id %q", name, oid)
		}
	}
	for name, oid := range m.Pins {
		if err := gitref.Check(name); err != nil || !strings.HasPrefix(name, PinRefPrefix) {
			return fmt.Errorf("invalid pin %q", name)
		}
		if !gitref.ValidOID(oid) {
			return fmt.Errorf("pin %s has invalid object id %q", name, oid)
		}
	}
	for _, name := range m.Rewritten {
		if err := gitref.Check(name); err != nil {
			return fmt.Errorf("rewritten reference: %w", err)
		}
	}
	if m.Consolidated && (len(m.Packs) != 1 || m.Packs[0].Snapshot != m.ID || len(m.Packs[0].Prerequisites) > 0) {
		return fmt.Errorf("consolidated snapshot %s must list exactly one pack of its own, without prerequisites", m.ID)
	}
	kinds := map[string]bool{}
	for _, e := range m.Exports {
		if err := e.validate(); err != nil {
			return err
		}
		if kinds[e.Kind] {
			return fmt.Errorf("export %s listed twice", e.Kind)
		}
		kinds[e.Kind] = true
	}
	seen := map[string]bool{}
	for _, p := range m.Packs {
		if !gitmirror.ValidPackName(p.Name) {
			return fmt.Errorf("invalid pack name %q", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("pack %s listed twice", p.Name)
		}
		seen[p.Name] = true
		if !ValidSnapshotID(p.Snapshot) {
			return fmt.Errorf("pack %s has invalid snapshot id %q", p.Name, p.Snapshot)
		}
		for _, oid := range append(append([]string{}, p.Prerequisites...), p.UnnamedTips...) {
			if !gitref.ValidOID(oid) {
				return fmt.Errorf("pack %s lists invalid object id %q", p.Name, oid)
			}
		}
	}
	return nil
}

var (
	snapshotIDPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}$`)
)

// snapshotTimeLayout makes ids sort lexically in time order: fixed width,
// most significant field first, UTC.
const snapshotTimeLayout = "20060102T150405.000Z"

// ValidSnapshotID reports whether id has the form of a snapshot id.
func ValidSnapshotID(id string) bool { return snapshotIDPattern.MatchString(id) }

// SnapshotTime is the creation time encoded in a snapshot id.
func SnapshotTime(id string) (time.Time, error) {
	if !ValidSnapshotID(id) {
		return time.Time{}, fmt.Errorf("invalid snapshot id %q", id)
	}
	return time.Parse(snapshotTimeLayout, id[:len(snapshotTimeLayout)])
}

// NewSnapshotID returns an id for a snapshot taken at now after parent ("" for
// none). The time part never sorts before the parent's, even when the clocks
// of two workers disagree, so lexical order stays history order.
func NewSnapshotID(now time.Time, parent string) (string, error) {
	t := now.UTC().Truncate(time.Millisecond)
	if parent != "" {
		pt, err := SnapshotTime(parent)
		if err != nil {
			return "", err
		}
		if !t.After(pt) {
			t = pt.Add(time.Millisecond)
		}
	}
	var random [4]byte
	if _, err := rand.Read(random[:]); err != nil {
		return "", fmt.Errorf("snapshot id: %w", err)
	}
	return t.Format(snapshotTimeLayout) + "-" + hex.EncodeToString(random[:]), nil
}

// RepoKey addresses one repository of one tenant in storage.
type RepoKey struct {
	Tenant string
	UUID   string
}

var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// NormalizeUUID turns a provider UUID such as Bitbucket's
// "{1b2c...}" into the form used in storage keys: no braces, lower case.
func NormalizeUUID(uuid string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(uuid), "{"), "}"))
}

// NewRepoKey validates a tenant id and repository UUID (braces allowed).
func NewRepoKey(tenant, repoUUID string) (RepoKey, error) {
	if !tenantPattern.MatchString(tenant) || strings.Contains(tenant, "..") {
		return RepoKey{}, fmt.Errorf("invalid tenant id %q", tenant)
	}
	uuid := NormalizeUUID(repoUUID)
	if !tenantPattern.MatchString(uuid) || strings.Contains(uuid, "..") {
		return RepoKey{}, fmt.Errorf("invalid repository uuid %q", repoUUID)
	}
	return RepoKey{Tenant: tenant, UUID: uuid}, nil
}

func (k RepoKey) prefix() string {
	return "tenants/" + k.Tenant + "/repositories/" + k.UUID + "/"
}

// PackKey is the storage key of a pack file; IdxKey of its index.
func (k RepoKey) PackKey(name string) string { return k.prefix() + "packs/" + name + ".pack" }

// IdxKey is the storage key of a pack's idx file.
func (k RepoKey) IdxKey(name string) string { return k.prefix() + "packs/" + name + ".idx" }

// ManifestKey is the storage key of a snapshot manifest.
func (k RepoKey) ManifestKey(id string) string { return k.prefix() + "snapshots/" + id + ".json" }

// DraftKey is the storage key of a staged snapshot's manifest draft: written
// by StageSnapshot, turned into the manifest by CommitStaged. Readers of
// snapshots never look under staging/.
func (k RepoKey) DraftKey(id string) string { return k.draftPrefix() + id + ".json" }

func (k RepoKey) draftPrefix() string { return k.prefix() + "staging/" }

// ExportPrefix is where a repository's export objects live.
func (k RepoKey) ExportPrefix() string { return k.prefix() + "exports/" }

func (k RepoKey) String() string { return k.Tenant + "/" + k.UUID }

// Errors callers branch on.
var (
	// ErrNotFound: no such snapshot (or no snapshot at all for "latest").
	ErrNotFound = errors.New("snapshot not found")
	// ErrSnapshotExists: a manifest with that id is already stored.
	ErrSnapshotExists = errors.New("snapshot already exists")
	// ErrStaleDraft: a staged snapshot no longer follows the latest one, so
	// committing it would fork the history.
	ErrStaleDraft = errors.New("staged snapshot no longer follows the latest snapshot")
	// ErrInvalidManifest: a stored manifest does not decode or verify (bad
	// format, names or ids, or it contradicts the manifests around it).
	ErrInvalidManifest = errors.New("manifest does not verify")
	// ErrCorrupt: a stored object does not match the size or SHA-256 the
	// manifest records.
	ErrCorrupt = errors.New("stored object does not match the manifest")
)
