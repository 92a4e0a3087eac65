package gitmirror

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// PackLinks says how one pack hangs off the rest of the repository, which is
// what a git bundle header needs.
type PackLinks struct {
	// Prerequisites are the commits outside the pack that commits or tags
	// inside it point to (parents, tag targets): a bundle made of this pack
	// lists them as prerequisites.
	Prerequisites []string
	// Tips are the commits and tags in the pack that no other commit or tag
	// in the pack points to; every commit and tag of the pack is reachable
	// from them.
	Tips []string
}

// PackLinks reads the commits and tags of one pack of the mirror. Commits are
// read straight from the pack, which also proves the pack self-contained: a
// delta against an object outside it would fail to resolve.
func (m *Mirror) PackLinks(p PackFiles) (PackLinks, error) {
	idx, err := ReadPackIndex(p.IdxPath)
	if err != nil {
		return PackLinks{}, err
	}
	dirFS := osfs.New(filepath.Dir(p.PackPath))
	f, err := dirFS.Open(filepath.Base(p.PackPath))
	if err != nil {
		return PackLinks{}, fmt.Errorf("open pack: %w", err)
	}
	pack := packfile.NewPackfile(idx, dirFS, f, 0)
	defer pack.Close()

	inPack := func(h plumbing.Hash) bool {
		ok, _ := idx.Contains(h)
		return ok
	}
	var heads []plumbing.Hash
	referenced := map[plumbing.Hash]bool{}
	prerequisites := map[plumbing.Hash]bool{}

	commits, err := pack.GetByType(plumbing.CommitObject)
	if err != nil {
		return PackLinks{}, fmt.Errorf("read commits of %s: %w", p.Name, err)
	}
	err = commits.ForEach(func(o plumbing.EncodedObject) error {
		var c object.Commit
		if err := c.Decode(o); err != nil {
			return fmt.Errorf("decode commit %s: %w", o.Hash(), err)
		}
		heads = append(heads, o.Hash())
		for _, parent := range c.ParentHashes {
			if inPack(parent) {
				referenced[parent] = true
			} else {
				prerequisites[parent] = true
			}
		}
		return nil
	})
	if err != nil {
		return PackLinks{}, fmt.Errorf("read commits of %s: %w", p.Name, err)
	}

	tags, err := pack.GetByType(plumbing.TagObject)
	if err != nil {
		return PackLinks{}, fmt.Errorf("read tags of %s: %w", p.Name, err)
	}
	err = tags.ForEach(func(o plumbing.EncodedObject) error {
		var t object.Tag
		if err := t.Decode(o); err != nil {
			return fmt.Errorf("decode tag %s: %w", o.Hash(), err)
		}
		heads = append(heads, o.Hash())
		switch {
		case inPack(t.Target):
			referenced[t.Target] = true
		case t.TargetType == plumbing.CommitObject:
			// git accepts only commits as bundle prerequisites; other
			// outside targets are simply already in the repository.
			prerequisites[t.Target] = true
		}
		return nil
	})
	if err != nil {
		return PackLinks{}, fmt.Errorf("read tags of %s: %w", p.Name, err)
	}

	var links PackLinks
	for _, h := range heads {
		if !referenced[h] {
			links.Tips = append(links.Tips, h.String())
		}
	}
	for h := range prerequisites {
		if _, err := m.storage.EncodedObject(plumbing.CommitObject, h); err != nil {
			return PackLinks{}, fmt.Errorf("pack %s needs commit %s, which the mirror lacks: %w", p.Name, h, err)
		}
		links.Prerequisites = append(links.Prerequisites, h.String())
	}
	slices.Sort(links.Tips)
	slices.Sort(links.Prerequisites)
	return links, nil
}

// ReadPackIndex loads a pack's idx file.
func ReadPackIndex(path string) (*idxfile.MemoryIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open pack index: %w", err)
	}
	defer f.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("decode pack index %s: %w", path, err)
	}
	return idx, nil
}
