package bitbucket

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// webhookFixtureKeys maps each recorded delivery to the X-Event-Key it arrived with.
var webhookFixtureKeys = map[string]string{
	"webhooks/repo_push.json":                     EventRepoPush,
	"webhooks/repo_push_branch_created.json":      EventRepoPush,
	"webhooks/repo_push_branch_created_main.json": EventRepoPush,
	"webhooks/repo_push_branch_deleted.json":      EventRepoPush,
	"webhooks/repo_push_empty_changes.json":       EventRepoPush,
	"webhooks/repo_push_multiple_changes.json":    EventRepoPush,
	"webhooks/repo_push_tag_created.json":         EventRepoPush,
	"webhooks/repo_push_tag_deleted.json":         EventRepoPush,
	"webhooks/signed/repo_push_signed.json":       EventRepoPush,
	"webhooks/repo_updated.json":                  EventRepoUpdated,
	"webhooks/repo_fork.json":                     EventRepoFork,
	"webhooks/repo_commit_status_created.json":    EventRepoCommitStatusCreated,
	"webhooks/pullrequest_created.json":           EventPullRequestCreated,
	"webhooks/pullrequest_created_from_fork.json": EventPullRequestCreated,
	"webhooks/pullrequest_updated.json":           EventPullRequestUpdated,
	"webhooks/pullrequest_fulfilled.json":         EventPullRequestFulfilled,
	"webhooks/pullrequest_rejected.json":          EventPullRequestRejected,
	"webhooks/pullrequest_approved.json":          EventPullRequestApproved,
	"webhooks/pullrequest_comment_created.json":   EventPullRequestCommentCreated,
	"webhooks/pullrequest_comment_updated.json":   EventPullRequestCommentUpdated,
	"webhooks/pullrequest_comment_deleted.json":   EventPullRequestCommentDeleted,
}

func TestEveryWebhookFixtureDecodes(t *testing.T) {
	for _, rel := range fixtureFiles(t, "webhooks") {
		key, ok := webhookFixtureKeys[rel]
		if !ok {
			t.Errorf("webhook fixture %s has no event key mapping; add it", rel)
			continue
		}
		t.Run(rel, func(t *testing.T) {
			ev, err := DecodeEvent(key, readFixture(t, rel))
			if err != nil {
				t.Fatalf("DecodeEvent(%q): %v", key, err)
			}
			if ev.EventKey() != key {
				t.Errorf("EventKey = %q, want %q", ev.EventKey(), key)
			}
			repo := ev.EventRepository()
			requireUUID(t, "event repository", repo.UUID)
			if repo.FullName == "" {
				t.Errorf("event repository has no full_name")
			}
			if ev.EventActor().DisplayName == "" {
				t.Errorf("event actor has no display_name")
			}
			switch e := ev.(type) {
			case *PushEvent:
				for i, c := range e.Push.Changes {
					if c.Created != (c.Old == nil) || c.Closed != (c.New == nil) {
						t.Errorf("change %d: created=%v old=%v closed=%v new=%v", i, c.Created, c.Old, c.Closed, c.New)
					}
				}
			case *PullRequestEvent:
				// Some fixtures are Atlassian documentation examples (state "OPEN|MERGED|DECLINED"),
				// so only the fields GitSec acts on are checked here.
				pr := e.PullRequest
				if pr.ID <= 0 || pr.Title == "" || pr.Source.Branch.Name == "" || pr.Destination.Branch.Name == "" || pr.UpdatedOn.IsZero() {
					t.Errorf("pull request id/title/branches/updated_on = %d/%q/%q/%q/%v", pr.ID, pr.Title, pr.Source.Branch.Name, pr.Destination.Branch.Name, pr.UpdatedOn)
				}
			case *PullRequestCommentEvent:
				if e.Comment.ID == 0 || e.Comment.CreatedOn.IsZero() || e.PullRequest.ID == 0 {
					t.Errorf("comment id/created_on/pull request = %d/%v/%d", e.Comment.ID, e.Comment.CreatedOn, e.PullRequest.ID)
				}
			case *RepoUpdatedEvent:
				if len(e.Changes) == 0 {
					t.Error("repo:updated without changes")
				}
			case *RepoForkEvent:
				requireUUID(t, "fork", e.Fork.UUID)
			case *CommitStatusEvent:
				if e.CommitStatus.State == "" {
					t.Error("commit status without state")
				}
			default:
				t.Errorf("unexpected event type %T", ev)
			}
		})
	}
}

func decodeFixtureEvent[T Event](t *testing.T, rel string) T {
	t.Helper()
	ev, err := DecodeEvent(webhookFixtureKeys[rel], readFixture(t, rel))
	if err != nil {
		t.Fatalf("decode %s: %v", rel, err)
	}
	typed, ok := ev.(T)
	if !ok {
		t.Fatalf("decode %s: got %T", rel, ev)
	}
	return typed
}

func TestPushEventShapes(t *testing.T) {
	multi := decodeFixtureEvent[*PushEvent](t, "webhooks/repo_push_multiple_changes.json")
	if len(multi.Push.Changes) != 3 {
		t.Fatalf("got %d changes, want 3", len(multi.Push.Changes))
	}
	update, created, tag := multi.Push.Changes[0], multi.Push.Changes[1], multi.Push.Changes[2]
	if update.Old == nil || update.New == nil || update.New.FullName() != "refs/heads/main" || update.Forced || update.Truncated {
		t.Errorf("update change = %+v", update)
	}
	if update.New.Target.Hash != "325d37697849f4b1fe42cb19c20134af08e03a82" || update.New.Target.Type != "commit" {
		t.Errorf("update target = %+v", update.New.Target)
	}
	if !created.Created || !created.Truncated || created.Old != nil || created.New.Type != "branch" {
		t.Errorf("created change = %+v", created)
	}
	if !tag.Created || tag.New.Type != "tag" || !strings.HasPrefix(tag.New.FullName(), "refs/tags/") {
		t.Errorf("tag change = %+v", tag)
	}

	deleted := decodeFixtureEvent[*PushEvent](t, "webhooks/repo_push_branch_deleted.json")
	if c := deleted.Push.Changes[0]; !c.Closed || c.New != nil || c.Old.Name != "develop" {
		t.Errorf("deleted change = %+v", c)
	}

	empty := decodeFixtureEvent[*PushEvent](t, "webhooks/repo_push_empty_changes.json")
	if empty.Push.Changes == nil || len(empty.Push.Changes) != 0 {
		t.Errorf("empty push changes = %#v, want an empty, present list", empty.Push.Changes)
	}
	if empty.Repository.UUID != "{708c9715-0ecc-4a5d-87ed-63c4ba48ea06}" {
		t.Errorf("repository uuid = %q", empty.Repository.UUID)
	}
}

func TestOtherEventShapes(t *testing.T) {
	updated := decodeFixtureEvent[*RepoUpdatedEvent](t, "webhooks/repo_updated.json")
	if got := updated.Changes["full_name"]; got.OldString() != "teamawesome/repository_name" || got.NewString() != "teamawesome/repository" {
		t.Errorf("full_name change = %s -> %s", got.Old, got.New)
	}

	merged := decodeFixtureEvent[*PullRequestEvent](t, "webhooks/pullrequest_fulfilled.json")
	if merged.PullRequest.State != PullRequestMerged || merged.PullRequest.MergeCommit == nil || merged.PullRequest.ClosedBy == nil {
		t.Errorf("fulfilled pull request = %+v", merged.PullRequest)
	}
	declined := decodeFixtureEvent[*PullRequestEvent](t, "webhooks/pullrequest_rejected.json")
	if declined.PullRequest.State != PullRequestDeclined {
		t.Errorf("rejected state = %q", declined.PullRequest.State)
	}
	approved := decodeFixtureEvent[*PullRequestEvent](t, "webhooks/pullrequest_approved.json")
	if approved.Approval == nil || approved.Approval.User == nil || approved.Approval.Date.IsZero() {
		t.Errorf("approval = %+v", approved.Approval)
	}
	fork := decodeFixtureEvent[*PullRequestEvent](t, "webhooks/pullrequest_created_from_fork.json")
	if fork.PullRequest.Source.Repository == nil || fork.PullRequest.Destination.Repository == nil ||
		fork.PullRequest.Source.Repository.UUID == fork.PullRequest.Destination.Repository.UUID {
		t.Errorf("fork pull request source/destination repositories = %+v / %+v", fork.PullRequest.Source.Repository, fork.PullRequest.Destination.Repository)
	}
	deleted := decodeFixtureEvent[*PullRequestCommentEvent](t, "webhooks/pullrequest_comment_deleted.json")
	if !deleted.Comment.Deleted || deleted.Comment.ID != 311512047 {
		t.Errorf("deleted comment = %+v", deleted.Comment)
	}
}

// mutateFixture decodes a fixture into generic JSON, applies edit and re-encodes it, so that
// invalid variants are derived from real payloads instead of being hand-written.
func mutateFixture(t *testing.T, rel string, edit func(map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readFixture(t, rel), &doc); err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	edit(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("encode %s: %v", rel, err)
	}
	return out
}

func TestDecodeEventRejectsIncompletePayloads(t *testing.T) {
	cases := []struct {
		name      string
		key       string
		body      []byte
		wantField string
	}{
		{"push without repository uuid", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			delete(d["repository"].(map[string]any), "uuid")
		}), "repository.uuid"},
		{"push without repository", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			delete(d, "repository")
		}), "repository.uuid"},
		{"push without changes", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			delete(d["push"].(map[string]any), "changes")
		}), "push.changes"},
		{"push with null changes", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			d["push"].(map[string]any)["changes"] = nil
		}), "push.changes"},
		{"push without push", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			delete(d, "push")
		}), "push"},
		{"push change without target hash", EventRepoPush, mutateFixture(t, "webhooks/repo_push.json", func(d map[string]any) {
			change := d["push"].(map[string]any)["changes"].([]any)[0].(map[string]any)
			delete(change["new"].(map[string]any)["target"].(map[string]any), "hash")
		}), "push.changes[0].new.target.hash"},
		{"pull request without id", EventPullRequestCreated, mutateFixture(t, "webhooks/pullrequest_created.json", func(d map[string]any) {
			delete(d["pullrequest"].(map[string]any), "id")
		}), "pullrequest.id"},
		{"comment without id", EventPullRequestCommentCreated, mutateFixture(t, "webhooks/pullrequest_comment_created.json", func(d map[string]any) {
			delete(d["comment"].(map[string]any), "id")
		}), "comment.id"},
		{"repo updated without changes", EventRepoUpdated, mutateFixture(t, "webhooks/repo_updated.json", func(d map[string]any) {
			delete(d, "changes")
		}), "changes"},
		{"null body", EventRepoDeleted, []byte("null"), "repository.uuid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeEvent(tc.key, tc.body)
			var missing *MissingFieldError
			if !errors.As(err, &missing) || missing.Field != tc.wantField {
				t.Fatalf("err = %v, want missing field %s", err, tc.wantField)
			}
			if !errors.Is(err, ErrMalformedEvent) || !strings.Contains(err.Error(), tc.wantField) {
				t.Errorf("err %q does not match ErrMalformedEvent or name the field", err)
			}
		})
	}
}

func TestDecodeEventUnknownAndMalformed(t *testing.T) {
	_, err := DecodeEvent("issue:created", readFixture(t, "webhooks/repo_push.json"))
	var unknown *UnknownEventError
	if !errors.As(err, &unknown) || unknown.Key != "issue:created" || !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown key err = %v", err)
	}
	for _, body := range []string{"", "{", `{"repository": "not an object"}`, `[1,2]`, `{"push":{"changes":"x"},"repository":{"uuid":"{a}"}}`} {
		if _, err := DecodeEvent(EventRepoPush, []byte(body)); !errors.Is(err, ErrMalformedEvent) {
			t.Errorf("DecodeEvent(%q) err = %v, want ErrMalformedEvent", body, err)
		}
	}
	// repo:deleted and repo:created carry only actor and repository; derive one from a fixture.
	body := mutateFixture(t, "webhooks/repo_fork.json", func(d map[string]any) { delete(d, "fork") })
	ev, err := DecodeEvent(EventRepoDeleted, body)
	if err != nil {
		t.Fatalf("repo:deleted: %v", err)
	}
	if _, ok := ev.(*RepoLifecycleEvent); !ok || ev.EventRepository().UUID != "{673a6070-3421-46c9-9d48-90745f7bfe8e}" {
		t.Errorf("repo:deleted decoded as %T %+v", ev, ev.EventRepository())
	}
	if _, err := DecodeEvent(EventRepoTransfer, body); err != nil {
		t.Errorf("repo:transfer: %v", err)
	}
}

// The signed delivery's secret and headers come from fixtures/webhooks/signed/README.md.
const (
	signedFixtureSecret = "Gkvl$k$wyNpQAF42"
	signedFixtureHeader = "sha256=f205c729821c6954aff2afe72b965c34015b4baf96ea8ddc2cc44999c014a035"
	signedFixtureWrong  = "sha256=f205c729821c6954aff2afe72b965c34015b4baf96ea8ddc2cc44999c014a036"
)

func TestVerifySignatureWithRealDelivery(t *testing.T) {
	body := readFixture(t, "webhooks/signed/repo_push_signed.json")
	if err := VerifySignature([]byte(signedFixtureSecret), body, signedFixtureHeader); err != nil {
		t.Fatalf("real signature rejected: %v", err)
	}
	if got := Sign([]byte(signedFixtureSecret), body); got != signedFixtureHeader {
		t.Errorf("Sign = %s, want %s", got, signedFixtureHeader)
	}
	rejected := map[string]struct {
		secret []byte
		body   []byte
		header string
	}{
		"last hex digit changed": {[]byte(signedFixtureSecret), body, signedFixtureWrong},
		"wrong secret":           {[]byte("Gkvl$k$wyNpQAF43"), body, signedFixtureHeader},
		"body changed":           {[]byte(signedFixtureSecret), append(append([]byte(nil), body...), ' '), signedFixtureHeader},
		"missing header":         {[]byte(signedFixtureSecret), body, ""},
		"sha1 header":            {[]byte(signedFixtureSecret), body, "sha1=0123456789abcdef0123456789abcdef01234567"},
		"truncated digest":       {[]byte(signedFixtureSecret), body, signedFixtureHeader[:40]},
		"not hex":                {[]byte(signedFixtureSecret), body, "sha256=" + strings.Repeat("zz", 32)},
		"no secret configured":   {nil, body, signedFixtureHeader},
	}
	for name, tc := range rejected {
		err := VerifySignature(tc.secret, tc.body, tc.header)
		if !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("%s: err = %v, want ErrInvalidSignature", name, err)
		}
		if err != nil && strings.Contains(err.Error(), signedFixtureSecret) {
			t.Errorf("%s: error leaks the secret: %v", name, err)
		}
	}
}

// Current deliveries (the 2025 signed recording) carry repository.workspace, .project and
// .parent (null for a non-fork); older recordings lack them and still decode.
func TestCurrentDeliveryRepositoryShape(t *testing.T) {
	push := decodeFixtureEvent[*PushEvent](t, "webhooks/signed/repo_push_signed.json")
	repo := push.Repository
	if repo.Workspace == nil || repo.Workspace.Slug != "nfalco79" || repo.Workspace.UUID == "" {
		t.Errorf("workspace = %+v", repo.Workspace)
	}
	if repo.Project == nil || repo.Project.Key == "" || repo.Project.UUID == "" {
		t.Errorf("project = %+v", repo.Project)
	}
	if repo.Parent != nil {
		t.Errorf("parent = %+v, want nil for a non-fork", repo.Parent)
	}
	c := push.Push.Changes[0]
	if !c.Created || c.Forced || c.Truncated || len(c.Commits) != 5 {
		t.Errorf("change created/forced/truncated/commits = %v/%v/%v/%d", c.Created, c.Forced, c.Truncated, len(c.Commits))
	}

	// A fork's parent is a mini repository.
	body := mutateFixture(t, "webhooks/signed/repo_push_signed.json", func(d map[string]any) {
		d["repository"].(map[string]any)["parent"] = map[string]any{"type": "repository", "uuid": "{11111111-2222-3333-4444-555555555555}", "full_name": "upstream/test-repos", "name": "test-repos"}
	})
	ev, err := DecodeEvent(EventRepoPush, body)
	if err != nil {
		t.Fatal(err)
	}
	if p := ev.EventRepository().Parent; p == nil || p.FullName != "upstream/test-repos" || p.UUID == "" {
		t.Errorf("fork parent = %+v", p)
	}

	// repo:transfer: no recording exists; the documented previous_owner is an account-like
	// object (the emulator sends the old workspace's owner object).
	body = mutateFixture(t, "webhooks/signed/repo_push_signed.json", func(d map[string]any) {
		delete(d, "push")
		d["previous_owner"] = d["repository"].(map[string]any)["owner"]
	})
	ev, err = DecodeEvent(EventRepoTransfer, body)
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := ev.(*RepoTransferEvent)
	if !ok || tr.PreviousOwner == nil || tr.PreviousOwner.UUID == "" || tr.Repository.Workspace == nil {
		t.Errorf("repo:transfer decoded as %T %+v", ev, ev)
	}
}
