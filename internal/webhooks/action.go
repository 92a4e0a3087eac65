// Package webhooks turns Bitbucket webhook deliveries into GitSec's work. The API's receiver
// verifies a delivery, parses it here into an Action and stores both in the outbox
// (webhook_deliveries) before it answers; the Dispatcher then acts on the row (store updates and
// a backup request to Temporal) and marks it processed. Rows left behind while Temporal (or the
// process) was down are re-driven from the outbox, so an acknowledged delivery is never lost.
package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/workflows"
)

// Kind is what a delivery asks GitSec to do.
type Kind string

// The kinds of work a delivery maps to.
const (
	// KindPush: new commits or ref changes; the repository's backup is woken.
	KindPush Kind = "push"
	// KindPullRequest: a pull request or its comments changed; the PR export is woken (until it
	// exists, the backup).
	KindPullRequest Kind = "pullrequest"
	// KindRepositoryUpdated: rename or settings change; the row follows (same UUID, new name).
	KindRepositoryUpdated Kind = "repository_updated"
	// KindRepositoryCreated: a new repository in a workspace GitSec watches; it is added.
	KindRepositoryCreated Kind = "repository_created"
	// KindRepositoryDeleted: the row is marked deleted upstream; every backup is kept.
	KindRepositoryDeleted Kind = "repository_deleted"
	// KindRepositoryTransferred: the repository moved to another workspace.
	KindRepositoryTransferred Kind = "repository_transferred"
	// KindRecordOnly: an event GitSec subscribes to or receives but does not act on (forks,
	// commit statuses, unknown keys): stored and acknowledged.
	KindRecordOnly Kind = "record_only"
)

// RepositoryRef is the cut-down repository a payload carries: enough to find or add the row.
type RepositoryRef struct {
	UUID          string `json:"uuid"`
	FullName      string `json:"full_name"`
	Name          string `json:"name,omitempty"`
	IsPrivate     bool   `json:"is_private,omitempty"`
	WorkspaceUUID string `json:"workspace_uuid,omitempty"`
	WorkspaceSlug string `json:"workspace_slug,omitempty"`
	// ProjectKey and ProjectName are the payload's project; empty when it carried none (and
	// in actions stored before they were recorded), which keeps the stored project.
	ProjectKey  string `json:"project_key,omitempty"`
	ProjectName string `json:"project_name,omitempty"`
}

// maxPushedRefs bounds the hint carried into Temporal payloads; a bigger push is "something
// changed" all the same.
const maxPushedRefs = 20

// Action is a parsed delivery: what to do and the fields needed to do it. It is stored with
// the delivery as JSON, so fields are only ever added.
type Action struct {
	Kind       Kind                  `json:"kind"`
	Event      string                `json:"event"`
	Repository RepositoryRef         `json:"repository"`
	Refs       []workflows.PushedRef `json:"refs,omitempty"`
	// RefsTruncated: the push changed more refs than Refs holds, or Bitbucket truncated it.
	RefsTruncated bool  `json:"refs_truncated,omitempty"`
	PullRequestID int64 `json:"pull_request_id,omitempty"`
	// PreviousFullName is the name before a rename (repo:updated changes.full_name.old).
	PreviousFullName string `json:"previous_full_name,omitempty"`
}

// JSON is the action as stored with its delivery.
func (a Action) JSON() (json.RawMessage, error) { return json.Marshal(a) }

// ErrMalformed wraps a payload that cannot be acted on (not JSON, or missing what its event
// needs); the receiver answers 400.
var ErrMalformed = errors.New("malformed webhook payload")

// Parse decodes a delivery with the production client's typed decoder. Unknown event keys are
// not an error: they are recorded and acknowledged.
func Parse(eventKey string, body []byte) (Action, error) {
	ev, err := bitbucket.DecodeEvent(eventKey, body)
	if errors.Is(err, bitbucket.ErrUnknownEvent) {
		return Action{Kind: KindRecordOnly, Event: eventKey}, nil
	}
	if err != nil {
		return Action{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	a := Action{Event: eventKey, Repository: repositoryRef(ev.EventRepository())}
	switch e := ev.(type) {
	case *bitbucket.PushEvent:
		a.Kind = KindPush
		for _, c := range e.Push.Changes {
			if c.Truncated {
				a.RefsTruncated = true
			}
			if len(a.Refs) == maxPushedRefs {
				a.RefsTruncated = true
				continue
			}
			a.Refs = append(a.Refs, pushedRef(c))
		}
	case *bitbucket.PullRequestEvent:
		a.Kind, a.PullRequestID = KindPullRequest, e.PullRequest.ID
	case *bitbucket.PullRequestCommentEvent:
		a.Kind, a.PullRequestID = KindPullRequest, e.PullRequest.ID
	case *bitbucket.RepoUpdatedEvent:
		a.Kind = KindRepositoryUpdated
		if c, ok := e.Changes["full_name"]; ok {
			// The change itself names the new name; the repository object beside it has been
			// seen to disagree (Atlassian's own example).
			a.PreviousFullName = c.OldString()
			if n := c.NewString(); n != "" {
				a.Repository.FullName = n
			}
		}
	case *bitbucket.RepoLifecycleEvent:
		a.Kind = KindRepositoryCreated
		if eventKey == bitbucket.EventRepoDeleted {
			a.Kind = KindRepositoryDeleted
		}
	case *bitbucket.RepoTransferEvent:
		a.Kind = KindRepositoryTransferred
	default:
		a.Kind = KindRecordOnly
	}
	if a.Kind != KindRecordOnly && a.Kind != KindRepositoryDeleted && !strings.Contains(a.Repository.FullName, "/") {
		return Action{}, fmt.Errorf("%w: %s: repository.full_name %q is not workspace/slug", ErrMalformed, eventKey, a.Repository.FullName)
	}
	return a, nil
}

func repositoryRef(r bitbucket.Repository) RepositoryRef {
	ref := RepositoryRef{UUID: r.UUID, FullName: r.FullName, Name: r.Name, IsPrivate: r.IsPrivate}
	if r.Workspace != nil {
		ref.WorkspaceUUID, ref.WorkspaceSlug = r.Workspace.UUID, r.Workspace.Slug
	}
	if r.Project != nil {
		ref.ProjectKey, ref.ProjectName = r.Project.Key, r.Project.Name
	}
	if ref.WorkspaceSlug == "" {
		ref.WorkspaceSlug, _, _ = strings.Cut(r.FullName, "/")
	}
	return ref
}

func pushedRef(c bitbucket.PushChange) workflows.PushedRef {
	var p workflows.PushedRef
	if c.Old != nil {
		p.Name, p.Old = c.Old.FullName(), c.Old.Target.Hash
	}
	if c.New != nil {
		p.Name, p.New = c.New.FullName(), c.New.Target.Hash
	}
	p.Forced = c.Forced
	return p
}
