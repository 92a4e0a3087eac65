package bitbucket

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Webhook delivery headers Bitbucket sends.
const (
	HeaderEventKey      = "X-Event-Key"
	HeaderRequestUUID   = "X-Request-UUID"
	HeaderHookUUID      = "X-Hook-UUID"
	HeaderAttemptNumber = "X-Attempt-Number"
	HeaderSignature     = "X-Hub-Signature"
)

// Event keys DecodeEvent understands.
const (
	EventRepoPush                  = "repo:push"
	EventRepoFork                  = "repo:fork"
	EventRepoUpdated               = "repo:updated"
	EventRepoCreated               = "repo:created"
	EventRepoDeleted               = "repo:deleted"
	EventRepoTransfer              = "repo:transfer"
	EventRepoCommitStatusCreated   = "repo:commit_status_created"
	EventRepoCommitStatusUpdated   = "repo:commit_status_updated"
	EventPullRequestCreated        = "pullrequest:created"
	EventPullRequestUpdated        = "pullrequest:updated"
	EventPullRequestFulfilled      = "pullrequest:fulfilled"
	EventPullRequestRejected       = "pullrequest:rejected"
	EventPullRequestApproved       = "pullrequest:approved"
	EventPullRequestUnapproved     = "pullrequest:unapproved"
	EventPullRequestChangesRequest = "pullrequest:changes_request_created"
	EventPullRequestChangesRemoved = "pullrequest:changes_request_removed"
	EventPullRequestCommentCreated = "pullrequest:comment_created"
	EventPullRequestCommentUpdated = "pullrequest:comment_updated"
	EventPullRequestCommentDeleted = "pullrequest:comment_deleted"
	// A comment thread resolved or reopened (Atlassian's event list; no recording exists,
	// the payload is taken to be the comment_* one: comment + pullrequest).
	EventPullRequestCommentResolved = "pullrequest:comment_resolved"
	EventPullRequestCommentReopened = "pullrequest:comment_reopened"
)

// Webhook errors, matched with errors.Is.
var (
	ErrInvalidSignature = errors.New("bitbucket webhook: invalid signature")
	ErrUnknownEvent     = errors.New("bitbucket webhook: unknown event key")
	ErrMalformedEvent   = errors.New("bitbucket webhook: malformed payload")
)

const signaturePrefix = "sha256="

// Sign computes the X-Hub-Signature value Bitbucket sends for body: "sha256=" followed by the
// lower-case hex HMAC-SHA256 of the raw bytes keyed with the hook secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return signaturePrefix + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks an X-Hub-Signature header against the raw body, before any JSON
// decoding, in constant time. An empty secret is refused: an unsigned hook cannot be trusted.
func VerifySignature(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no secret configured for this hook", ErrInvalidSignature)
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return fmt.Errorf("%w: missing %s header", ErrInvalidSignature, HeaderSignature)
	}
	if len(header) < len(signaturePrefix) || !strings.EqualFold(header[:len(signaturePrefix)], signaturePrefix) {
		return fmt.Errorf("%w: %s is not a sha256 signature", ErrInvalidSignature, HeaderSignature)
	}
	got, err := hex.DecodeString(header[len(signaturePrefix):])
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: %s is not a hex SHA-256 digest", ErrInvalidSignature, HeaderSignature)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: digest mismatch", ErrInvalidSignature)
	}
	return nil
}

// UnknownEventError reports an X-Event-Key this package does not decode.
type UnknownEventError struct{ Key string }

func (e *UnknownEventError) Error() string {
	return fmt.Sprintf("bitbucket webhook: unknown event key %q", e.Key)
}

// Is makes errors.Is(err, ErrUnknownEvent) true.
func (e *UnknownEventError) Is(target error) bool { return target == ErrUnknownEvent }

// MissingFieldError reports a payload without a field GitSec cannot act without.
type MissingFieldError struct {
	EventKey string
	Field    string
}

func (e *MissingFieldError) Error() string {
	return fmt.Sprintf("bitbucket webhook %s: missing required field %s", e.EventKey, e.Field)
}

// Is makes errors.Is(err, ErrMalformedEvent) true.
func (e *MissingFieldError) Is(target error) bool { return target == ErrMalformedEvent }

// Event is a decoded webhook delivery. Every event names the repository it concerns; its
// repository object is abbreviated (no main branch, size or clone links).
type Event interface {
	EventKey() string
	EventRepository() Repository
	EventActor() User
}

// EventBase holds what every payload carries.
type EventBase struct {
	Key        string     `json:"-"`
	Actor      User       `json:"actor"`
	Repository Repository `json:"repository"`
}

// EventKey is the X-Event-Key the payload was decoded as.
func (b EventBase) EventKey() string { return b.Key }

// EventRepository is the repository the event concerns.
func (b EventBase) EventRepository() Repository { return b.Repository }

// EventActor is the account that caused the event.
func (b EventBase) EventActor() User { return b.Actor }

// PushRef is one side of a pushed ref change.
type PushRef struct {
	Type   string `json:"type"` // "branch" or "tag"
	Name   string `json:"name"`
	Target Commit `json:"target"`
}

// FullName is the git ref name, e.g. refs/heads/main or refs/tags/v1.
func (r PushRef) FullName() string {
	if r.Type == "tag" {
		return "refs/tags/" + r.Name
	}
	return "refs/heads/" + r.Name
}

// PushChange is one ref change of a push. Old is nil on creation, New nil on deletion.
// Commits holds only the newest few; Truncated means more existed. Reconcile from git, never
// from this list.
type PushChange struct {
	Old       *PushRef `json:"old"`
	New       *PushRef `json:"new"`
	Created   bool     `json:"created"`
	Closed    bool     `json:"closed"`
	Forced    bool     `json:"forced"`
	Truncated bool     `json:"truncated"`
	Commits   []Commit `json:"commits"`
}

// PushEvent is repo:push. Changes may be empty (oversize pushes): it still means "something
// changed in this repository".
type PushEvent struct {
	EventBase
	Push struct {
		Changes []PushChange `json:"changes"`
	} `json:"push"`
}

// FieldChange is one entry of repo:updated's changes map; values keep their JSON form because
// they are strings for most fields but objects for links.
type FieldChange struct {
	Old json.RawMessage `json:"old"`
	New json.RawMessage `json:"new"`
}

// OldString and NewString decode string-valued changes (name, full_name, description...).
func (c FieldChange) OldString() string { return rawString(c.Old) }

// NewString is the new value of a string-valued change.
func (c FieldChange) NewString() string { return rawString(c.New) }

func rawString(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return ""
	}
	return s
}

// RepoUpdatedEvent is repo:updated; a full_name change is a rename or move.
type RepoUpdatedEvent struct {
	EventBase
	Changes map[string]FieldChange `json:"changes"`
}

// RepoForkEvent is repo:fork; Fork is the new repository.
type RepoForkEvent struct {
	EventBase
	Fork Repository `json:"fork"`
}

// RepoLifecycleEvent is repo:created and repo:deleted: the repository itself is the news.
type RepoLifecycleEvent struct {
	EventBase
}

// RepoTransferEvent is repo:transfer. The previous owner's field name is documented but not
// verified against a recording; the repository UUID is what GitSec keys on anyway.
type RepoTransferEvent struct {
	EventBase
	PreviousOwner *User `json:"previous_owner,omitempty"`
}

// CommitStatus is the build status carried by repo:commit_status_* events.
type CommitStatus struct {
	Type        string    `json:"type"`
	Key         string    `json:"key"`
	State       string    `json:"state"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	URL         string    `json:"url"`
	Refname     string    `json:"refname"`
	CreatedOn   time.Time `json:"created_on"`
	UpdatedOn   time.Time `json:"updated_on"`
	Links       struct {
		Commit Link `json:"commit"`
		Self   Link `json:"self"`
	} `json:"links"`
}

// CommitStatusEvent is repo:commit_status_created and repo:commit_status_updated.
type CommitStatusEvent struct {
	EventBase
	CommitStatus CommitStatus `json:"commit_status"`
}

// PullRequestEvent is pullrequest:created/updated/fulfilled/rejected and the approval and
// changes-request events, which add Approval or ChangesRequest.
type PullRequestEvent struct {
	EventBase
	PullRequest    PullRequest `json:"pullrequest"`
	Approval       *Approval   `json:"approval,omitempty"`
	ChangesRequest *Approval   `json:"changes_request,omitempty"`
}

// PullRequestCommentEvent is pullrequest:comment_created/updated/deleted/resolved/reopened.
type PullRequestCommentEvent struct {
	EventBase
	PullRequest PullRequest `json:"pullrequest"`
	Comment     Comment     `json:"comment"`
}

// DecodeEvent decodes a delivery body according to its X-Event-Key. Unknown fields are
// ignored; fields GitSec cannot act without (repository.uuid, push.changes, pullrequest.id,
// comment.id...) are reported as *MissingFieldError naming the field. It never panics.
func DecodeEvent(eventKey string, body []byte) (Event, error) {
	switch eventKey {
	case EventRepoPush:
		// Unwrapped so that a failed decode returns a nil interface, not a typed nil.
		ev, err := decodePush(body)
		if err != nil {
			return nil, err
		}
		return ev, nil
	case EventRepoFork:
		ev := &RepoForkEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		if ev.Fork.UUID == "" {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "fork.uuid"}
		}
		return ev, nil
	case EventRepoUpdated:
		ev := &RepoUpdatedEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		if ev.Changes == nil {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "changes"}
		}
		return ev, nil
	case EventRepoCreated, EventRepoDeleted:
		ev := &RepoLifecycleEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		return ev, nil
	case EventRepoTransfer:
		ev := &RepoTransferEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		return ev, nil
	case EventRepoCommitStatusCreated, EventRepoCommitStatusUpdated:
		ev := &CommitStatusEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		if ev.CommitStatus.Key == "" {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "commit_status.key"}
		}
		return ev, nil
	case EventPullRequestCreated, EventPullRequestUpdated, EventPullRequestFulfilled, EventPullRequestRejected,
		EventPullRequestApproved, EventPullRequestUnapproved, EventPullRequestChangesRequest, EventPullRequestChangesRemoved:
		ev := &PullRequestEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		if ev.PullRequest.ID == 0 {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "pullrequest.id"}
		}
		return ev, nil
	case EventPullRequestCommentCreated, EventPullRequestCommentUpdated, EventPullRequestCommentDeleted,
		EventPullRequestCommentResolved, EventPullRequestCommentReopened:
		ev := &PullRequestCommentEvent{}
		if err := decodeInto(eventKey, body, ev, &ev.EventBase); err != nil {
			return nil, err
		}
		if ev.PullRequest.ID == 0 {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "pullrequest.id"}
		}
		if ev.Comment.ID == 0 {
			return nil, &MissingFieldError{EventKey: eventKey, Field: "comment.id"}
		}
		return ev, nil
	}
	return nil, &UnknownEventError{Key: eventKey}
}

// decodeInto unmarshals body into ev and checks the fields every event needs.
func decodeInto(eventKey string, body []byte, ev any, base *EventBase) error {
	if err := json.Unmarshal(body, ev); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformedEvent, eventKey, err)
	}
	base.Key = eventKey
	if base.Repository.UUID == "" {
		return &MissingFieldError{EventKey: eventKey, Field: "repository.uuid"}
	}
	return nil
}

func decodePush(body []byte) (*PushEvent, error) {
	ev := &PushEvent{}
	if err := decodeInto(EventRepoPush, body, ev, &ev.EventBase); err != nil {
		return nil, err
	}
	// changes: [] is legitimate (oversize pushes); an absent or null list is not.
	var probe struct {
		Push *struct {
			Changes json.RawMessage `json:"changes"`
		} `json:"push"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformedEvent, EventRepoPush, err)
	}
	if probe.Push == nil {
		return nil, &MissingFieldError{EventKey: EventRepoPush, Field: "push"}
	}
	if changes := bytes.TrimSpace(probe.Push.Changes); len(changes) == 0 || bytes.Equal(changes, []byte("null")) {
		return nil, &MissingFieldError{EventKey: EventRepoPush, Field: "push.changes"}
	}
	for i, change := range ev.Push.Changes {
		if change.Old == nil && change.New == nil {
			return nil, &MissingFieldError{EventKey: EventRepoPush, Field: fmt.Sprintf("push.changes[%d].old or .new", i)}
		}
		for _, side := range []struct {
			name string
			ref  *PushRef
		}{{"old", change.Old}, {"new", change.New}} {
			ref := side.ref
			if ref == nil {
				continue
			}
			if ref.Name == "" {
				return nil, &MissingFieldError{EventKey: EventRepoPush, Field: fmt.Sprintf("push.changes[%d].%s.name", i, side.name)}
			}
			if ref.Target.Hash == "" {
				return nil, &MissingFieldError{EventKey: EventRepoPush, Field: fmt.Sprintf("push.changes[%d].%s.target.hash", i, side.name)}
			}
		}
	}
	return ev, nil
}
