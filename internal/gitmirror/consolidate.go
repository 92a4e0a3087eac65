package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/revlist"
)

// Consolidate replaces the mirror's packs with one self-contained pack of every object reachable
// from roots (the references and pins of the snapshot being staged), so that a snapshot can list
// that one pack instead of the whole chain of incremental packs. Objects only older packs held
// (history that a force-push dropped) leave the mirror; the stored packs of older snapshots keep
// them. The git CLI's pack-objects does the work when git 2.32 or later is installed (it reuses
// the deltas of the existing packs and runs on every core); go-git's encoder otherwise, or when
// the mirror's engine is CloneGoGit.
func (m *Mirror) Consolidate(ctx context.Context, roots []string) (PackFiles, error) {
	if len(roots) == 0 {
		return PackFiles{}, errors.New("consolidate: no references to pack")
	}
	for _, oid := range roots {
		if !plumbing.IsHash(oid) {
			return PackFiles{}, fmt.Errorf("consolidate: %q is not an object id", oid)
		}
	}
	unlock, err := m.lock()
	if err != nil {
		return PackFiles{}, err
	}
	defer unlock()
	before, err := listPacks(m.dir)
	if err != nil {
		return PackFiles{}, err
	}
	var name string
	if gitPath, cliErr := gitBinary(); cliErr == nil && m.cloneEngine != CloneGoGit {
		name, err = m.packObjectsCLI(ctx, gitPath, roots)
	} else {
		name, err = m.packObjectsGoGit(roots)
	}
	if err != nil {
		return PackFiles{}, err
	}
	var consolidated PackFiles
	after, err := listPacks(m.dir)
	if err != nil {
		return PackFiles{}, err
	}
	for _, p := range after {
		if p.Name == name {
			consolidated = p
		}
	}
	if consolidated.Name == "" {
		return PackFiles{}, fmt.Errorf("consolidate: pack %s was not written", name)
	}
	// Newer than every pack it replaces, so that listPacks orders later fetches after it.
	now := time.Now()
	_ = os.Chtimes(consolidated.PackPath, now, now)
	for _, p := range before {
		if p.Name == name {
			continue
		}
		// The idx first: a pack without its idx is ignored by every reader.
		if err := os.Remove(p.IdxPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return PackFiles{}, fmt.Errorf("consolidate: remove %s: %w", p.Name, err)
		}
		if err := os.Remove(p.PackPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return PackFiles{}, fmt.Errorf("consolidate: remove %s: %w", p.Name, err)
		}
		for _, ext := range []string{".rev", ".bitmap", ".keep"} {
			_ = os.Remove(filepath.Join(packDir(m.dir), p.Name+ext))
		}
	}
	// go-git caches the packs it has opened.
	if err := m.storage.Close(); err != nil {
		return PackFiles{}, fmt.Errorf("consolidate: reopen storage: %w", err)
	}
	m.storage = openStorage(m.dir)
	return consolidated, nil
}

func (m *Mirror) packObjectsCLI(ctx context.Context, gitPath string, roots []string) (string, error) {
	cmd := exec.CommandContext(ctx, gitPath,
		"-c", "pack.writeReverseIndex=false", "-c", "gc.auto=0",
		"pack-objects", "--revs", "--delta-base-offset", "--quiet", "--non-empty",
		filepath.Join(packDir(m.dir), "pack"))
	cmd.Dir = m.dir
	cmd.Env = append(cleanGitEnv(), "GIT_DIR="+m.dir)
	cmd.Stdin = strings.NewReader(strings.Join(roots, "\n") + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	killProcessGroupOnCancel(cmd)
	cmd.WaitDelay = 10 * time.Second
	if commandStarted != nil {
		commandStarted(cmd)
	}
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", fmt.Errorf("git pack-objects: %w", ctxErr)
		}
		return "", fmt.Errorf("git pack-objects: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	sum := strings.TrimSpace(stdout.String())
	if !plumbing.IsHash(sum) {
		return "", fmt.Errorf("git pack-objects printed %q, want the pack's checksum", sum)
	}
	return "pack-" + sum, nil
}

func (m *Mirror) packObjectsGoGit(roots []string) (string, error) {
	hashes := make([]plumbing.Hash, len(roots))
	for i, oid := range roots {
		hashes[i] = plumbing.NewHash(oid)
	}
	objects, err := revlist.Objects(m.storage, hashes, nil)
	if err != nil {
		return "", fmt.Errorf("consolidate: list objects: %w", err)
	}
	w, err := m.storage.PackfileWriter()
	if err != nil {
		return "", fmt.Errorf("consolidate: %w", err)
	}
	sum, err := packfile.NewEncoder(w, m.storage, false).Encode(objects, 10)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("consolidate: encode pack: %w", err)
	}
	return "pack-" + sum.String(), nil
}

// Rewritten returns the references of before whose object moved in after to something that does
// not descend from it: a force-push of a branch, or a moved tag (git never moves a tag on its
// own). Deleted references are not listed (the caller sees them by absence). A reference whose
// old object the mirror no longer holds is not judged.
func (m *Mirror) Rewritten(before, after RefMap) []string {
	var out []string
	for name, old := range before {
		now, ok := after[name]
		if !ok || now == old {
			continue
		}
		if strings.HasPrefix(name, "refs/tags/") {
			out = append(out, name)
			continue
		}
		oldC, err := object.GetCommit(m.storage, plumbing.NewHash(old))
		if err != nil {
			continue
		}
		newC, err := object.GetCommit(m.storage, plumbing.NewHash(now))
		if err != nil {
			continue
		}
		if ok, err := oldC.IsAncestor(newC); err == nil && !ok {
			out = append(out, name)
		}
	}
	return out
}
