package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// Listing is one advertisement of a remote: what a single info/refs request returned. A backup
// run lists once, decides from the listing whether anything changed, and hands the same listing
// to FetchListed, so a changed repository costs the two requests `git fetch` makes (one GET, one
// POST) and an unchanged one the GET alone.
type Listing struct {
	URL string
	// Refs are the advertised references under refs/ (peeled tag lines left out) and Head the
	// target of the symbolic HEAD ("" for an empty remote).
	Refs RefMap
	Head string
	caps *capability.List
}

// ListRemote lists the remote's references with one info/refs request. An empty remote yields
// a listing without references.
func ListRemote(ctx context.Context, remoteURL string, auth transport.AuthMethod) (*Listing, error) {
	sess, err := uploadPackSession(remoteURL, auth)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	l := &Listing{URL: remoteURL, Refs: RefMap{}}
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ls-remote %s: %w", redactURL(remoteURL), err)
	}
	l.caps = ar.Capabilities
	all, err := ar.AllReferences()
	if err != nil {
		return nil, fmt.Errorf("ls-remote %s: %w", redactURL(remoteURL), err)
	}
	for name, ref := range all {
		switch {
		case ref.Type() == plumbing.HashReference && strings.HasPrefix(name.String(), "refs/"):
			l.Refs[name.String()] = ref.Hash().String()
		case name == plumbing.HEAD && ref.Type() == plumbing.SymbolicReference:
			l.Head = ref.Target().String()
		}
	}
	return l, nil
}

func uploadPackSession(remoteURL string, auth transport.AuthMethod) (transport.UploadPackSession, error) {
	ep, err := transport.NewEndpoint(remoteURL)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", redactURL(remoteURL), err)
	}
	c, err := client.NewClient(ep)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", redactURL(remoteURL), err)
	}
	sess, err := c.NewUploadPackSession(ep, auth)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", redactURL(remoteURL), err)
	}
	return sess, nil
}

// FetchListed makes the mirror equal to the listing: it asks only for the advertised objects the
// mirror lacks (with every local tip as a "have", so the pack holds just the new objects), then
// writes the listed references as one packed-refs file. go-git's own fetch rewrites every
// reference as a loose file with a lock on each, which made an incremental backup of a
// repository with 2,800 refs cost seconds for a one-commit change, growing with every run.
//
// An empty mirror is cloned instead (the git CLI's parallel delta resolution wins
// there). The pack comes without the thin-pack capability, so it is self-contained, as the
// backup format requires. A reference that moved upstream after the listing makes the server
// refuse the want; the error is retryable and the next attempt lists again.
func (m *Mirror) FetchListed(ctx context.Context, l *Listing, auth transport.AuthMethod, progress func(Progress)) (FetchResult, error) {
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
	if len(before) == 0 && len(l.Refs) > 0 {
		return m.clone(ctx, l, auth, progress)
	}
	for name, oid := range l.Refs {
		if err := checkRef(name, oid); err != nil {
			return FetchResult{}, fmt.Errorf("remote %s advertised %w", redactURL(l.URL), err)
		}
	}
	packsBefore, err := m.Packs()
	if err != nil {
		return FetchResult{}, err
	}
	reporter := newProgressReporter(progress)
	// The mirror holds everything its references reach (a fetch writes references only after
	// their objects), so only the other listed objects need a lookup, each a few file stats.
	have := map[string]bool{}
	for _, oid := range before {
		have[oid] = true
	}
	var wants []plumbing.Hash
	for _, oid := range l.Refs {
		if !have[oid] {
			have[oid] = true
			if !m.HasObject(oid) {
				wants = append(wants, plumbing.NewHash(oid))
			}
		}
	}
	if len(wants) > 0 {
		if err := m.fetchObjects(ctx, l, auth, wants, before, reporter); err != nil {
			return FetchResult{}, err
		}
		for _, h := range wants {
			if !m.HasObject(h.String()) {
				return FetchResult{}, fmt.Errorf("fetch %s: the pack lacks advertised object %s", redactURL(l.URL), h)
			}
		}
	}
	if err := m.replaceRefs(l.Refs); err != nil {
		return FetchResult{}, err
	}
	head := l.Head
	if head != "" {
		if err := m.storage.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.ReferenceName(head))); err != nil {
			return FetchResult{}, fmt.Errorf("set HEAD to %s: %w", head, err)
		}
	} else if _, head, err = m.Refs(); err != nil {
		return FetchResult{}, err
	}
	packsAfter, err := m.Packs()
	if err != nil {
		return FetchResult{}, err
	}
	result := FetchResult{Refs: maps.Clone(l.Refs), Head: head, NewPacks: newPacks(packsBefore, packsAfter)}
	result.RefsAdded, result.RefsUpdated, result.RefsDeleted = before.Diff(result.Refs)
	return result, result.countNewPacks(reporter)
}

// fetchObjects runs the upload-pack POST for wants and stores the pack the server sends.
func (m *Mirror) fetchObjects(ctx context.Context, l *Listing, auth transport.AuthMethod, wants []plumbing.Hash, local RefMap, reporter *progressReporter) error {
	caps := l.caps
	if caps == nil {
		caps = capability.NewList()
	}
	req := packp.NewUploadPackRequestFromCapabilities(caps)
	// A thin pack would lean on objects outside it; the backup stores packs as they are.
	req.Capabilities.Delete(capability.ThinPack)
	req.Wants = wants
	seen := map[string]bool{}
	for _, oid := range local {
		if !seen[oid] {
			seen[oid] = true
			req.Haves = append(req.Haves, plumbing.NewHash(oid))
		}
	}
	sess, err := uploadPackSession(l.URL, auth)
	if err != nil {
		return err
	}
	defer sess.Close()
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", redactURL(l.URL), err)
	}
	defer resp.Close()
	var t sideband.Type
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		t = sideband.Sideband64k
	case req.Capabilities.Supports(capability.Sideband):
		t = sideband.Sideband
	}
	var pack io.Reader = resp
	if t != 0 {
		d := sideband.NewDemuxer(t, pack)
		d.Progress = reporter
		pack = d
	}
	if err := packfile.UpdateObjectStorage(countingStorage{Storage: m.storage, count: reporter.addBytes}, pack); err != nil {
		return fmt.Errorf("fetch %s: store pack: %w", redactURL(l.URL), err)
	}
	return nil
}

// replaceRefs makes refs the mirror's only references: one packed-refs file written atomically,
// then every loose reference removed (git prefers a loose file over packed-refs, so a leftover
// would shadow the new value; a run that dies in between is repaired by the next, which writes
// the whole map again before anything reads it).
func (m *Mirror) replaceRefs(refs RefMap) error {
	var b strings.Builder
	b.WriteString("# pack-refs with: sorted \n")
	for _, name := range refs.Names() {
		fmt.Fprintf(&b, "%s %s\n", refs[name], name)
	}
	tmp := filepath.Join(m.dir, "packed-refs.gitsec-tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write packed-refs: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "packed-refs")); err != nil {
		return fmt.Errorf("write packed-refs: %w", err)
	}
	refsDir := filepath.Join(m.dir, "refs")
	if err := os.RemoveAll(refsDir); err != nil {
		return fmt.Errorf("remove loose references: %w", err)
	}
	for _, sub := range []string{"heads", "tags"} {
		if err := os.MkdirAll(filepath.Join(refsDir, sub), 0o755); err != nil {
			return fmt.Errorf("recreate refs/%s: %w", sub, err)
		}
	}
	return nil
}
