// Package gitmirror keeps one bare mirror per repository on a worker's disk and
// fetches into it with go-git. The pack each fetch writes is the backup
// increment (see docs/backup-format.md), so the package reports exactly which
// pack files a fetch added and the full reference map after it.
//
// Storage is always go-git's filesystem storage: in-memory storage needs
// several times the repository size in RAM.
package gitmirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// PackFiles names one pack of a repository and where its two files are.
type PackFiles struct {
	// Name is "pack-<sha1 of the pack>", the base name git uses.
	Name     string
	PackPath string
	IdxPath  string
	// Objects is the number of objects the idx lists.
	Objects int64
}

// Mirror is a bare repository that mirrors one remote repository. A Mirror is
// not meant for concurrent use; Fetch additionally takes an advisory file lock
// so that a retried activity cannot fetch into a mirror that a previous
// attempt is still writing.
type Mirror struct {
	dir         string
	storage     *filesystem.Storage
	cloneEngine CloneEngine
}

// Open opens the bare mirror at dir, creating an empty one when dir does not
// exist or is empty.
func Open(dir string) (*Mirror, error) {
	exists, err := Exists(dir)
	if err != nil {
		return nil, err
	}
	if !exists {
		if _, err := git.PlainInit(dir, true); err != nil {
			return nil, fmt.Errorf("init bare mirror %s: %w", dir, err)
		}
	}
	return &Mirror{dir: dir, storage: openStorage(dir)}, nil
}

func openStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault())
}

// Exists reports whether dir holds a bare repository (as opposed to nothing or
// an empty directory). It tells a worker whether it must hydrate the mirror
// from storage before fetching.
func Exists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, "HEAD"))
	if err == nil {
		if _, err := os.Stat(filepath.Join(dir, "objects")); err != nil {
			return false, fmt.Errorf("mirror %s has HEAD but no objects directory: %w", dir, err)
		}
		return true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("stat mirror %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read mirror dir %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("%s is neither empty nor a bare repository", dir)
	}
	return false, nil
}

// Dir is the mirror's directory.
func (m *Mirror) Dir() string { return m.dir }

// Close releases the pack files go-git keeps open.
func (m *Mirror) Close() error {
	if err := m.storage.Close(); err != nil {
		return fmt.Errorf("close mirror %s: %w", m.dir, err)
	}
	return nil
}

// Refs returns every reference under refs/ and the target of the symbolic
// HEAD ("" when HEAD is missing or detached).
func (m *Mirror) Refs() (RefMap, string, error) {
	return readRefs(m.storage)
}

func readRefs(s *filesystem.Storage) (RefMap, string, error) {
	iter, err := s.IterReferences()
	if err != nil {
		return nil, "", fmt.Errorf("list references: %w", err)
	}
	refs := RefMap{}
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() == plumbing.HashReference && strings.HasPrefix(ref.Name().String(), "refs/") {
			refs[ref.Name().String()] = ref.Hash().String()
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list references: %w", err)
	}
	head := ""
	ref, err := s.Reference(plumbing.HEAD)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
	case err != nil:
		return nil, "", fmt.Errorf("read HEAD: %w", err)
	case ref.Type() == plumbing.SymbolicReference:
		head = ref.Target().String()
	}
	return refs, head, nil
}

// Packs lists the mirror's packs in the order they were written (file
// modification time, then name), which is the order a restore must apply
// them in.
func (m *Mirror) Packs() ([]PackFiles, error) {
	return listPacks(m.dir)
}

func packDir(repoDir string) string { return filepath.Join(repoDir, "objects", "pack") }

func listPacks(repoDir string) ([]PackFiles, error) {
	dir := packDir(repoDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list packs in %s: %w", dir, err)
	}
	type dated struct {
		PackFiles
		modNanos int64
	}
	var packs []dated
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pack")
		if !ok || !strings.HasPrefix(name, "pack-") {
			continue
		}
		idxPath := filepath.Join(dir, name+".idx")
		if _, err := os.Stat(idxPath); err != nil {
			// A pack without its idx is a fetch that died while indexing;
			// git ignores such packs too.
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", e.Name(), err)
		}
		objects, err := IdxObjectCount(idxPath)
		if err != nil {
			return nil, err
		}
		packs = append(packs, dated{
			PackFiles: PackFiles{Name: name, PackPath: filepath.Join(dir, e.Name()), IdxPath: idxPath, Objects: objects},
			modNanos:  info.ModTime().UnixNano(),
		})
	}
	slices.SortFunc(packs, func(a, b dated) int {
		if a.modNanos != b.modNanos {
			if a.modNanos < b.modNanos {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	out := make([]PackFiles, len(packs))
	for i, p := range packs {
		out[i] = p.PackFiles
	}
	return out, nil
}

// IdxObjectCount reads the object count of a version 2 pack index from its
// fan-out table without loading the index.
func IdxObjectCount(idxPath string) (int64, error) {
	f, err := os.Open(idxPath)
	if err != nil {
		return 0, fmt.Errorf("open pack index: %w", err)
	}
	defer f.Close()
	// 4-byte magic, 4-byte version, then 256 cumulative counts; the last is
	// the total.
	header := make([]byte, 8+256*4)
	if _, err := io.ReadFull(f, header); err != nil {
		return 0, fmt.Errorf("read pack index %s: %w", idxPath, err)
	}
	if string(header[:4]) != "\xfftOc" || binary.BigEndian.Uint32(header[4:8]) != 2 {
		return 0, fmt.Errorf("%s is not a version 2 pack index", idxPath)
	}
	return int64(binary.BigEndian.Uint32(header[len(header)-4:])), nil
}

// HasObject reports whether the mirror holds the object (in a pack or loose).
func (m *Mirror) HasObject(oid string) bool {
	if !plumbing.IsHash(oid) {
		return false
	}
	return m.storage.HasEncodedObject(plumbing.NewHash(oid)) == nil
}

// SetRefs writes references into the repository (a restore adds GitSec's pins with it).
func (m *Mirror) SetRefs(refs RefMap) error {
	for name, oid := range refs {
		if err := m.storage.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(name), plumbing.NewHash(oid))); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// DiskUsage sums the sizes of the regular files under dir (a missing dir is 0); files that vanish meanwhile (a
// concurrent fetch renaming its temporary pack) are skipped.
func DiskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("measure %s: %w", dir, err)
	}
	return n, nil
}
