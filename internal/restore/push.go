// Package restore puts a snapshot's code back into a provider repository: it pushes the chosen
// refs of a repository hydrated from the snapshot (checksums verified by the hydration),
// refuses or forces rewinds, and verifies the target's refs against the snapshot's ref map.
// The Restore workflow (issue 12) runs it with the restore app's write token.
package restore

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/gitmirror"
)

// Conflict modes of a push into an existing repository.
const (
	// OnConflictFail refuses the whole push when a target ref would be rewound.
	OnConflictFail = "fail"
	// OnConflictForce rewinds such refs (force-push).
	OnConflictForce = "force"
)

// Options choose what is pushed.
type Options struct {
	// Refs are branch or tag names, or full ref names; empty means every branch and tag.
	Refs []string
	// OnConflict is OnConflictFail (default) or OnConflictForce.
	OnConflict string
	// Progress, if set, sees the push's progress (bytes written so far).
	Progress func(gitmirror.Progress)
}

// Conflict is a target ref the push would rewind: the target's commit is not in the
// snapshot's history of that ref.
type Conflict struct {
	Ref      string `json:"ref"`
	Target   string `json:"target"`
	Snapshot string `json:"snapshot"`
}

// Result tells what a push did.
type Result struct {
	// Wanted are the snapshot's refs chosen for the restore, whatever happened to them.
	Wanted []string `json:"wanted"`
	// Pushed are the refs the target accepted; Skipped the snapshot's refs left out or
	// already in place, with why.
	Pushed  []string          `json:"pushed"`
	Skipped map[string]string `json:"skipped,omitempty"`
	// Rejected are refs the target refused (a branch restriction), with its reason.
	Rejected map[string]string `json:"rejected,omitempty"`
	// Conflicts are set when OnConflictFail refused the push (nothing was pushed), or list
	// the refs a forced push rewound.
	Conflicts []Conflict `json:"conflicts,omitempty"`
}

// ErrConflict: the push was refused because it would rewind target refs.
var ErrConflict = fmt.Errorf("the target has refs the snapshot would rewind")

// Push sends the chosen refs of the snapshot m, hydrated in mirror, to remoteURL. Refs the
// target already has at the snapshot's commit are not sent again, so a retried push only sends
// what is missing. Only branches and tags are pushed: provider namespaces
// (refs/pull-requests/*) are refused by Bitbucket and GitSec's pins are never pushed. A ref the
// target refuses is reported in Result.Rejected and the others still land; check the outcome
// with Verify.
func Push(ctx context.Context, mirror *gitmirror.Mirror, m *archive.Manifest, remoteURL string, auth transport.AuthMethod, opts Options) (Result, error) {
	res := Result{Skipped: map[string]string{}, Rejected: map[string]string{}}
	want, err := chooseRefs(m, opts.Refs, res.Skipped)
	if err != nil {
		return res, err
	}
	res.Wanted = want
	target, _, err := gitmirror.LsRemote(ctx, remoteURL, auth)
	if err != nil {
		return res, fmt.Errorf("list target refs: %w", err)
	}
	var send []string
	for _, name := range want {
		have, exists := target[name]
		switch {
		case exists && have == m.Refs[name]:
			res.Skipped[name] = "already at the snapshot's commit"
			continue
		case exists && (strings.HasPrefix(name, "refs/tags/") || !mirror.Contains(m.Refs[name], have)):
			res.Conflicts = append(res.Conflicts, Conflict{Ref: name, Target: have, Snapshot: m.Refs[name]})
		}
		send = append(send, name)
	}
	force := opts.OnConflict == OnConflictForce
	if len(res.Conflicts) > 0 && !force {
		return res, fmt.Errorf("%w: %s (restore with on_conflict=force to rewind them)", ErrConflict, conflictNames(res.Conflicts))
	}
	updates, err := mirror.PushRefs(ctx, remoteURL, auth, send, force, opts.Progress)
	if err != nil {
		return res, err
	}
	for _, u := range updates {
		if u.OK {
			res.Pushed = append(res.Pushed, u.Ref)
		} else {
			res.Rejected[u.Ref] = u.Reason
		}
	}
	return res, nil
}

// Verify lists the target's refs and returns the chosen ones whose commit differs from the
// snapshot's (missing ones included), sorted; empty means the target equals the snapshot.
func Verify(ctx context.Context, m *archive.Manifest, refs []string, remoteURL string, auth transport.AuthMethod) ([]string, error) {
	after, _, err := gitmirror.LsRemote(ctx, remoteURL, auth)
	if err != nil {
		return nil, fmt.Errorf("verify target refs: %w", err)
	}
	var mismatches []string
	for _, name := range refs {
		if after[name] != m.Refs[name] {
			mismatches = append(mismatches, name)
		}
	}
	sort.Strings(mismatches)
	return mismatches, nil
}

// ChooseRefs resolves requested names (branch or tag names, or full ref names; none: every
// branch and tag) against the snapshot's refs, so a request can be checked before it runs.
func ChooseRefs(m *archive.Manifest, names []string) ([]string, error) {
	return chooseRefs(m, names, map[string]string{})
}

// chooseRefs resolves the requested names against the snapshot's refs.
func chooseRefs(m *archive.Manifest, names []string, skipped map[string]string) ([]string, error) {
	pushable := func(n string) bool { return strings.HasPrefix(n, "refs/heads/") || strings.HasPrefix(n, "refs/tags/") }
	var out []string
	if len(names) == 0 {
		for name := range m.Refs {
			if pushable(name) {
				out = append(out, name)
			} else {
				skipped[name] = "not a branch or tag"
			}
		}
		sort.Strings(out)
		return out, nil
	}
	seen := map[string]bool{}
	for _, n := range names {
		var full string
		switch {
		case strings.HasPrefix(n, "refs/"):
			full = n
		case m.Refs["refs/heads/"+n] != "":
			full = "refs/heads/" + n
		case m.Refs["refs/tags/"+n] != "":
			full = "refs/tags/" + n
		}
		if full == "" || m.Refs[full] == "" {
			return nil, fmt.Errorf("snapshot %s has no branch or tag %q", m.ID, n)
		}
		if !pushable(full) {
			return nil, fmt.Errorf("ref %q is not a branch or tag: only those can be restored", n)
		}
		if !seen[full] {
			seen[full] = true
			out = append(out, full)
		}
	}
	sort.Strings(out)
	return out, nil
}

func conflictNames(cs []Conflict) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Ref
	}
	return strings.Join(names, ", ")
}
