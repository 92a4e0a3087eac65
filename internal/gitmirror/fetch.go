package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

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
// force-pushes and deleted references. progress may be nil.
func (m *Mirror) Fetch(ctx context.Context, remoteURL string, auth transport.AuthMethod, progress func(Progress)) (FetchResult, error) {
	unlock, err := m.lock()
	if err != nil {
		return FetchResult{}, err
	}
	defer unlock()
	if err := removeTempPacks(m.dir); err != nil {
		return FetchResult{}, err
	}

	before, _, err := m.Refs()
	if err != nil {
		return FetchResult{}, err
	}
	packsBefore, err := m.Packs()
	if err != nil {
		return FetchResult{}, err
	}

	reporter := newProgressReporter(progress)
	remote := git.NewRemote(countingStorage{Storage: m.storage, count: reporter.addBytes}, &config.RemoteConfig{
		Name:  "origin",
		URLs:  []string{remoteURL},
		Fetch: []config.RefSpec{mirrorRefSpec},
	})

	// The advertisement that the fetch itself reads is not exposed by go-git,
	// so the symbolic HEAD comes from one extra info/refs request.
	listed, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	emptyRemote := errors.Is(err, transport.ErrEmptyRemoteRepository)
	if err != nil && !emptyRemote {
		return FetchResult{}, fmt.Errorf("list %s: %w", redactURL(remoteURL), err)
	}
	head := headTarget(listed)

	fetched := false
	if !emptyRemote && len(before) == 0 && m.cloneEngine != CloneGoGit {
		err := m.cliFetch(ctx, remoteURL, auth, reporter)
		switch {
		case err == nil:
			fetched = true
		case errors.Is(err, errCLIUnsupported) && m.cloneEngine == CloneAuto:
		default:
			return FetchResult{}, err
		}
	}
	if !emptyRemote && !fetched {
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
		switch {
		case errors.Is(err, transport.ErrEmptyRemoteRepository):
			emptyRemote = true
		case err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate):
			return FetchResult{}, fmt.Errorf("fetch %s: %w", redactURL(remoteURL), err)
		}
	}
	if emptyRemote {
		// Every branch was deleted (or there never was one): mirror that.
		if err := m.removeAllRefs(); err != nil {
			return FetchResult{}, err
		}
	}
	if head != "" {
		if err := m.storage.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.ReferenceName(head))); err != nil {
			return FetchResult{}, fmt.Errorf("set HEAD to %s: %w", head, err)
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
	result := FetchResult{Refs: after, Head: head, NewPacks: newPacks(packsBefore, packsAfter)}
	if head == "" {
		result.Head = localHead
	}
	result.RefsAdded, result.RefsUpdated, result.RefsDeleted = before.Diff(after)
	for _, p := range result.NewPacks {
		result.Objects += p.Objects
		info, err := os.Stat(p.PackPath)
		if err != nil {
			return FetchResult{}, fmt.Errorf("stat new pack: %w", err)
		}
		result.Bytes += info.Size()
	}
	reporter.finish(result.Bytes)
	return result, nil
}

// LsRemote lists the remote's references with a single info/refs request, for
// change detection without a fetch. An empty remote yields an empty map.
func LsRemote(ctx context.Context, remoteURL string, auth transport.AuthMethod) (RefMap, string, error) {
	remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{remoteURL}})
	listed, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return RefMap{}, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("ls-remote %s: %w", redactURL(remoteURL), err)
	}
	refs := RefMap{}
	for _, ref := range listed {
		if ref.Type() == plumbing.HashReference && strings.HasPrefix(ref.Name().String(), "refs/") {
			refs[ref.Name().String()] = ref.Hash().String()
		}
	}
	return refs, headTarget(listed), nil
}

func headTarget(refs []*plumbing.Reference) string {
	for _, ref := range refs {
		if ref.Name() == plumbing.HEAD && ref.Type() == plumbing.SymbolicReference {
			return ref.Target().String()
		}
	}
	return ""
}

func (m *Mirror) removeAllRefs() error {
	refs, _, err := m.Refs()
	if err != nil {
		return err
	}
	for name := range refs {
		if err := m.storage.RemoveReference(plumbing.ReferenceName(name)); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return nil
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
