package gitmirror

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Push sends refs (full names) of the repository to the remote, each to the same name; force
// allows rewinding remote refs. It never pushes anything not named.
func (m *Mirror) Push(ctx context.Context, remoteURL string, auth transport.AuthMethod, refs []string, force bool) error {
	if len(refs) == 0 {
		return nil
	}
	remote := git.NewRemote(m.storage, &config.RemoteConfig{Name: "restore-target", URLs: []string{remoteURL}})
	specs := make([]config.RefSpec, 0, len(refs))
	for _, name := range refs {
		spec := config.RefSpec(name + ":" + name)
		if force {
			spec = "+" + spec
		}
		specs = append(specs, spec)
	}
	err := remote.PushContext(ctx, &git.PushOptions{RemoteName: "restore-target", RefSpecs: specs, Auth: auth, Force: force})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("push to %s: %w", redactURL(remoteURL), err)
	}
	return nil
}

// Contains reports whether the commit oid is in the history of the commit tip (the same
// commit included): a push of tip over oid is then a fast-forward. An object the repository
// does not have is not contained.
func (m *Mirror) Contains(tip, oid string) bool {
	if tip == oid {
		return true
	}
	t, err := object.GetCommit(m.storage, plumbing.NewHash(tip))
	if err != nil {
		return false
	}
	o, err := object.GetCommit(m.storage, plumbing.NewHash(oid))
	if err != nil {
		return false
	}
	ok, err := o.IsAncestor(t)
	return err == nil && ok
}
