package gitmirror

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/gitsec/gitsec/internal/gitref"
)

var (
	packNamePattern = regexp.MustCompile(`^pack-[0-9a-f]{40}$`)
)

// ValidPackName reports whether name is a pack base name as git writes it.
func ValidPackName(name string) bool { return packNamePattern.MatchString(name) }

// Hydrate builds a bare repository at dir from existing pack and idx files
// (moved, not copied, into place) plus a reference map and HEAD target, so a
// lost mirror comes back from backup storage without a clone; a later Fetch
// is incremental. dir must not exist or be empty. The repository is built
// in a sibling directory and renamed into place, so dir never holds half a
// repository.
func Hydrate(dir string, packs []PackFiles, refs RefMap, head string) (*Mirror, error) {
	exists, err := Exists(dir)
	if err != nil {
		return nil, err
	}
	if exists {
		return nil, fmt.Errorf("hydrate %s: a repository already exists there", dir)
	}
	for name, oid := range refs {
		if err := checkRef(name, oid); err != nil {
			return nil, fmt.Errorf("hydrate %s: %w", dir, err)
		}
	}
	if head != "" {
		if err := gitref.Check(head); err != nil {
			return nil, fmt.Errorf("hydrate %s: HEAD target: %w", dir, err)
		}
	}

	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".hydrate-")
	if err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	cleanup := true
	defer func() {
		if cleanup {
			os.RemoveAll(tmp)
		}
	}()

	if _, err := git.PlainInit(tmp, true); err != nil {
		return nil, fmt.Errorf("hydrate %s: init: %w", dir, err)
	}
	for _, p := range packs {
		if !ValidPackName(p.Name) {
			return nil, fmt.Errorf("hydrate %s: invalid pack name %q", dir, p.Name)
		}
		// The idx goes last: git and go-git only see a pack once its idx
		// exists.
		if err := moveFile(p.PackPath, filepath.Join(packDir(tmp), p.Name+".pack")); err != nil {
			return nil, fmt.Errorf("hydrate %s: %w", dir, err)
		}
		if err := moveFile(p.IdxPath, filepath.Join(packDir(tmp), p.Name+".idx")); err != nil {
			return nil, fmt.Errorf("hydrate %s: %w", dir, err)
		}
	}
	if err := writePackedRefs(tmp, refs); err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}

	storage := openStorage(tmp)
	for _, name := range refs.Names() {
		if err := storage.HasEncodedObject(plumbing.NewHash(refs[name])); err != nil {
			storage.Close()
			return nil, fmt.Errorf("hydrate %s: %s points to %s, which no pack contains: %w", dir, name, refs[name], err)
		}
	}
	if head != "" {
		if err := storage.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.ReferenceName(head))); err != nil {
			storage.Close()
			return nil, fmt.Errorf("hydrate %s: set HEAD: %w", dir, err)
		}
	}
	if err := storage.Close(); err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}

	// Exists said dir is absent or an empty directory; Remove fails on
	// anything else.
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("hydrate %s: %w", dir, err)
	}
	cleanup = false
	return Open(dir)
}

// writePackedRefs writes all references into one packed-refs file: thousands of
// loose ref files would cost thousands of small writes. No "peeled" trait is
// claimed because peeled tag values are not known here.
func writePackedRefs(repoDir string, refs RefMap) error {
	var b strings.Builder
	for _, name := range refs.Names() {
		fmt.Fprintf(&b, "%s %s\n", refs[name], name)
	}
	if err := os.WriteFile(filepath.Join(repoDir, "packed-refs"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write packed-refs: %w", err)
	}
	return nil
}

func checkRef(name, oid string) error {
	if err := gitref.Check(name); err != nil {
		return err
	}
	if !gitref.ValidOID(oid) {
		return fmt.Errorf("reference %s has invalid object id %q", name, oid)
	}
	return nil
}

// moveFile renames src to dst, copying when they are on different
// filesystems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil {
		return nil
	}
	var linkErr *os.LinkError
	if !errors.As(err, &linkErr) || !errors.Is(linkErr.Err, syscall.EXDEV) {
		return fmt.Errorf("move %s: %w", filepath.Base(src), err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("move %s: %w", filepath.Base(src), err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return fmt.Errorf("move %s: %w", filepath.Base(src), err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("move %s: %w", filepath.Base(src), err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("move %s: %w", filepath.Base(src), err)
	}
	return os.Remove(src)
}
