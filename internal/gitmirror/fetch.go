package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// mirrorRefSpec maps every remote reference, including provider-specific
// namespaces such as Bitbucket's pull request refs, onto the same local name,
// forcing updates so that force-pushes are mirrored as they are.
const mirrorRefSpec = config.RefSpec("+refs/*:refs/*")

// FetchResult describes what one Fetch changed.
type FetchResult struct {
	// Refs is the mirror's complete reference map after the fetch, and Head
	// the target of the remote's symbolic HEAD ("" for an empty remote).
	Refs RefMap
	Head string
	// NewPacks are the packs this fetch wrote, oldest first; none when the
	// remote had no new objects.
	NewPacks []PackFiles
	// RefsAdded, RefsUpdated and RefsDeleted compare Refs with the mirror's
	// references before the fetch.
	RefsAdded, RefsUpdated, RefsDeleted int
	// Objects is the number of objects in NewPacks and Bytes their pack size.
	Objects int64
	Bytes   int64
}

// Changed reports whether the fetch changed any reference or wrote objects.
func (r FetchResult) Changed() bool {
	return len(r.NewPacks) > 0 || r.RefsAdded+r.RefsUpdated+r.RefsDeleted > 0
}

// Fetch brings the mirror up to date with remoteURL: on an empty mirror that
// is a full mirror clone, later it is an incremental fetch that also mirrors
// force-pushes and deleted references. progress may be nil. It is ListRemote
// followed by FetchListed.
func (m *Mirror) Fetch(ctx context.Context, remoteURL string, auth transport.AuthMethod, progress func(Progress)) (FetchResult, error) {
	l, err := ListRemote(ctx, remoteURL, auth)
	if err != nil {
		return FetchResult{}, err
	}
	return m.FetchListed(ctx, l, auth, progress)
}

// clone fills an empty mirror from a remote that has references, with the git
// CLI when it can (see CloneEngine) and go-git otherwise. The caller holds the
// mirror lock.
func (m *Mirror) clone(ctx context.Context, l *Listing, auth transport.AuthMethod, progress func(Progress)) (FetchResult, error) {
	packsBefore, err := m.Packs()
	if err != nil {
		return FetchResult{}, err
	}
	reporter := newProgressReporter(progress)
	fetched := false
	if m.cloneEngine != CloneGoGit {
		err := m.cliClone(ctx, l.URL, auth, reporter)
		switch {
		case err == nil:
			fetched = true
		case errors.Is(err, errCLIUnsupported) && m.cloneEngine == CloneAuto:
		default:
			return FetchResult{}, err
		}
	}
	if !fetched {
		remote := git.NewRemote(countingStorage{Storage: m.storage, count: reporter.addBytes}, &config.RemoteConfig{
			Name:  "origin",
			URLs:  []string{l.URL},
			Fetch: []config.RefSpec{mirrorRefSpec},
		})
		err = remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs: []config.RefSpec{mirrorRefSpec},
			Auth:     auth,
			Progress: reporter,
			// Tags arrive through refs/*; tag following would only add
			// a second pass over the same references.
			Tags:  git.NoTags,
			Force: true,
			Prune: true,
		})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return FetchResult{}, fmt.Errorf("fetch %s: %w", redactURL(l.URL), err)
		}
	}
	if l.Head != "" {
		if err := m.storage.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.ReferenceName(l.Head))); err != nil {
			return FetchResult{}, fmt.Errorf("set HEAD to %s: %w", l.Head, err)
		}
	}
	after, localHead, err := m.Refs()
	if err != nil {
		return FetchResult{}, err
	}
	packsAfter, err := m.Packs()
	if err != nil {
		return FetchResult{}, err
	}
	result := FetchResult{Refs: after, Head: l.Head, NewPacks: newPacks(packsBefore, packsAfter)}
	if result.Head == "" {
		result.Head = localHead
	}
	result.RefsAdded = len(after)
	return result, result.countNewPacks(reporter)
}

// countNewPacks adds up the objects and bytes of the new packs and reports the end of the fetch.
func (r *FetchResult) countNewPacks(reporter *progressReporter) error {
	for _, p := range r.NewPacks {
		r.Objects += p.Objects
		info, err := os.Stat(p.PackPath)
		if err != nil {
			return fmt.Errorf("stat new pack: %w", err)
		}
		r.Bytes += info.Size()
	}
	reporter.finish(r.Bytes)
	return nil
}

// LsRemote lists the remote's references with a single info/refs request, for
// change detection without a fetch. An empty remote yields an empty map.
func LsRemote(ctx context.Context, remoteURL string, auth transport.AuthMethod) (RefMap, string, error) {
	l, err := ListRemote(ctx, remoteURL, auth)
	if err != nil {
		return nil, "", err
	}
	return l.Refs, l.Head, nil
}

func newPacks(before, after []PackFiles) []PackFiles {
	seen := make(map[string]bool, len(before))
	for _, p := range before {
		seen[p.Name] = true
	}
	var out []PackFiles
	for _, p := range after {
		if !seen[p.Name] {
			out = append(out, p)
		}
	}
	return out
}

// removeTempPacks deletes the temporary files of a fetch that died mid-way;
// go-git renames a pack into place only once it is complete.
func removeTempPacks(repoDir string) error {
	matches, err := filepath.Glob(filepath.Join(packDir(repoDir), "tmp_*"))
	if err != nil {
		return fmt.Errorf("find temporary packs: %w", err)
	}
	for _, path := range matches {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove temporary pack: %w", err)
		}
	}
	return nil
}

// redactURL drops credentials that a caller may have put in a URL so that they
// never reach logs or errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}

// countingStorage is the mirror's storage with the pack writer wrapped, so
// that progress can report bytes received: go-git's sideband only carries the
// server's own counters.
type countingStorage struct {
	*filesystem.Storage
	count func(int)
}

func (s countingStorage) PackfileWriter() (io.WriteCloser, error) {
	w, err := s.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	return countingWriter{WriteCloser: w, count: s.count}, nil
}

type countingWriter struct {
	io.WriteCloser
	count func(int)
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.WriteCloser.Write(p)
	w.count(n)
	return n, err
}
