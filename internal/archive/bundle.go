package archive

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"

	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitref"
)

// unnamedTipPrefix names, inside a bundle, commits that no reference of their
// snapshot reached; the last bundle of a chain never carries such names.
const unnamedTipPrefix = "refs/gitsec/tips/"

// ExportBundles writes snapshot id ("latest" for the newest) as a chain of
// standard git bundles into dir, one per pack, named 0001.bundle,
// 0002.bundle, ... so that lexical order is fetch order. Each bundle is the
// stored pack behind a "# v2 git bundle" header; the last one carries the
// snapshot's references and HEAD. Stock git restores the chain:
//
//	git clone --mirror 0001.bundle repo.git
//	git -C repo.git fetch --prune ../0002.bundle '+refs/*:refs/*'   # and so on
//
// An empty repository has no pack and yields no bundle. It returns the
// written paths in fetch order.
func (s *Store) ExportBundles(ctx context.Context, repo RepoKey, id, dir string, progress func(TransferEvent)) ([]string, *Manifest, error) {
	if progress == nil {
		progress = func(TransferEvent) {}
	}
	m, err := s.LoadManifest(ctx, repo, id)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("export bundles: %w", err)
	}
	staging, err := os.MkdirTemp(dir, ".gitsec-idx-")
	if err != nil {
		return nil, nil, fmt.Errorf("export bundles: %w", err)
	}
	defer os.RemoveAll(staging)

	manifests := map[string]*Manifest{m.ID: m}
	introducedBy := func(p Pack) (*Manifest, error) {
		if intro, ok := manifests[p.Snapshot]; ok {
			return intro, nil
		}
		intro, err := s.LoadManifest(ctx, repo, p.Snapshot)
		if err != nil {
			return nil, fmt.Errorf("pack %s: the snapshot that introduced it is needed to name its references: %w", p.Name, err)
		}
		manifests[p.Snapshot] = intro
		return intro, nil
	}

	width := max(4, len(strconv.Itoa(len(m.Packs))))
	var indexes []*idxfile.MemoryIndex
	contains := func(oid string) bool {
		h := plumbing.NewHash(oid)
		for _, idx := range indexes {
			if ok, _ := idx.Contains(h); ok {
				return true
			}
		}
		return false
	}
	var paths []string
	for i, p := range m.Packs {
		idxPath := filepath.Join(staging, p.Name+".idx")
		if err := s.downloadFile(ctx, repo.IdxKey(p.Name), p.Idx, idxPath, io.Discard); err != nil {
			return nil, nil, err
		}
		idx, err := gitmirror.ReadPackIndex(idxPath)
		if err != nil {
			return nil, nil, err
		}
		indexes = append(indexes, idx)

		var refs gitmirror.RefMap
		head := ""
		last := i == len(m.Packs)-1
		if last {
			refs, head = m.Refs, m.Head
			for name, oid := range refs {
				if !contains(oid) {
					return nil, nil, fmt.Errorf("snapshot %s: %s points to %s, which none of its packs contains: %w", m.ID, name, oid, ErrCorrupt)
				}
			}
		} else {
			intro, err := introducedBy(p)
			if err != nil {
				return nil, nil, err
			}
			// The state of the introducing snapshot, as far as the packs
			// applied so far can carry it.
			refs = gitmirror.RefMap{}
			for name, oid := range intro.Refs {
				if contains(oid) {
					refs[name] = oid
				}
			}
			for _, tip := range p.UnnamedTips {
				refs[unnamedTipPrefix+tip] = tip
			}
			head = intro.Head
			if len(refs) == 0 {
				return nil, nil, fmt.Errorf("pack %s: no reference reaches it, so it cannot form a bundle", p.Name)
			}
		}

		name := fmt.Sprintf("%0*d.bundle", width, i+1)
		path := filepath.Join(dir, name)
		ev := TransferEvent{Op: "download", Name: name, Size: p.Pack.Size, Index: i + 1, Count: len(m.Packs)}
		progress(ev)
		if err := s.writeBundle(ctx, repo, p, refs, head, path, newMeter(&ev, progress)); err != nil {
			return nil, nil, err
		}
		ev.Done = true
		progress(ev)
		paths = append(paths, path)
	}
	return paths, m, nil
}

// writeBundle writes the v2 bundle header and streams the pack after it,
// through a temporary file so that a bundle that exists is complete.
func (s *Store) writeBundle(ctx context.Context, repo RepoKey, p Pack, refs gitmirror.RefMap, head, path string, progress io.Writer) error {
	// Each header line is "<oid> <name>": a name with a newline or space would forge lines.
	for name := range refs {
		if err := gitref.Check(name); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Base(path), err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bundle-")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	fmt.Fprint(w, "# v2 git bundle\n")
	for _, oid := range p.Prerequisites {
		fmt.Fprintf(w, "-%s\n", oid)
	}
	if oid, ok := refs[head]; ok {
		// git clone picks the branch to check out from HEAD.
		fmt.Fprintf(w, "%s HEAD\n", oid)
	}
	for _, name := range refs.Names() {
		fmt.Fprintf(w, "%s %s\n", refs[name], name)
	}
	fmt.Fprint(w, "\n")
	if err := s.download(ctx, repo.PackKey(p.Name), p.Pack, w, progress); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
