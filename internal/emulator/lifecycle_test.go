package emulator

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/bitbucket"
)

// decodeOnly decodes the single delivery of event that rc got, as the production receiver
// would.
func decodeOnly[T bitbucket.Event](t *testing.T, rc *receiver, event string) T {
	t.Helper()
	waitFor(t, event, func() bool { return len(rc.byEvent(event)) > 0 })
	got := rc.byEvent(event)
	if len(got) != 1 {
		t.Fatalf("%s delivered %d times to %s, want once", event, len(got), rc.srv.URL)
	}
	ev, err := bitbucket.DecodeEvent(event, got[0].body)
	if err != nil {
		t.Fatalf("DecodeEvent(%s): %v\n%s", event, err, got[0].body)
	}
	typed, ok := ev.(T)
	if !ok {
		t.Fatalf("%s decoded as %T", event, ev)
	}
	return typed
}

// Renaming, transferring and deleting a repository keep its UUID, move what they should and
// emit repo:updated, repo:transfer and repo:deleted that the production decoder reads.
func TestRepositoryRenameTransferDelete(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed()})
	tok := adminToken(t, s, "alice", "account", "repository:admin", "repository:delete", "pullrequest", "webhook")
	events := `["repo:push","repo:updated","repo:transfer","repo:deleted"]`
	acme, labs, own := newReceiver(t), newReceiver(t), newReceiver(t)
	for url, rc := range map[string]*receiver{
		"/2.0/workspaces/acme/hooks":       acme,
		"/2.0/workspaces/acme-labs/hooks":  labs,
		"/2.0/repositories/acme/api/hooks": own,
	} {
		if st, body := do(t, http.MethodPost, s.URL()+url, tok, []byte(`{"url":"`+rc.srv.URL+`","active":true,"events":`+events+`}`)); st != http.StatusCreated {
			t.Fatalf("hook %s: %d %s", url, st, body)
		}
	}
	before := getJSON(t, s.URL()+"/2.0/repositories/acme/api", tok)
	uuid := before["uuid"].(string)
	prsBefore := getJSON(t, s.URL()+"/2.0/repositories/acme/api/pullrequests?state=OPEN&state=MERGED&state=DECLINED", tok)["size"]

	// Rename over REST: new slug and full_name, same UUID, repo:updated with name/full_name.
	if st, body := do(t, http.MethodPut, s.URL()+"/2.0/repositories/acme/api", tok, []byte(`{"name":"api2"}`)); st != http.StatusOK {
		t.Fatalf("rename: %d %s", st, body)
	}
	if st, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/api", tok, nil); st != http.StatusNotFound {
		t.Errorf("old slug after rename: %d, want 404", st)
	}
	if got := getJSON(t, s.URL()+"/2.0/repositories/acme/api2", tok); got["uuid"] != uuid || got["full_name"] != "acme/api2" {
		t.Errorf("renamed repository = %v %v", got["uuid"], got["full_name"])
	}
	updated := decodeOnly[*bitbucket.RepoUpdatedEvent](t, acme, "repo:updated")
	if c := updated.Changes["full_name"]; c.OldString() != "acme/api" || c.NewString() != "acme/api2" {
		t.Errorf("full_name change %s -> %s", c.Old, c.New)
	}
	if c := updated.Changes["name"]; c.OldString() != "api" || c.NewString() != "api2" {
		t.Errorf("name change %s -> %s", c.Old, c.New)
	}
	if _, ok := updated.Changes["links"]; !ok || updated.Repository.UUID != uuid || updated.Repository.FullName != "acme/api2" {
		t.Errorf("repo:updated = %+v", updated)
	}

	// Transfer: refused for an unknown or the same workspace and on a slug collision.
	transfer := s.URL() + "/_emulator/repositories/acme/api2/transfer"
	for body, want := range map[string]int{`{"to":"nowhere"}`: http.StatusNotFound, `{"to":"acme"}`: http.StatusBadRequest, `{}`: http.StatusBadRequest} {
		if st, out := do(t, http.MethodPost, transfer, "", []byte(body)); st != want {
			t.Errorf("transfer %s: %d %s, want %d", body, st, out, want)
		}
	}
	if st, out := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme-labs/api2", tok, nil); st != http.StatusOK {
		t.Fatalf("create colliding repository: %d %s", st, out)
	}
	if st, _ := do(t, http.MethodPost, transfer, "", []byte(`{"to":"acme-labs"}`)); st != http.StatusConflict {
		t.Errorf("transfer onto an existing slug: %d, want 409", st)
	}
	if st, out := do(t, http.MethodDelete, s.URL()+"/2.0/repositories/acme-labs/api2", tok, nil); st != http.StatusNoContent {
		t.Fatalf("delete colliding repository: %d %s", st, out)
	}
	waitFor(t, "the colliding repository's repo:deleted", func() bool { return len(labs.byEvent("repo:deleted")) == 1 })
	labs.mu.Lock()
	labs.got = nil // that repo:deleted is not the one under test
	labs.mu.Unlock()

	st, out := do(t, http.MethodPost, transfer, "", []byte(`{"to":"acme-labs"}`))
	if st != http.StatusOK {
		t.Fatalf("transfer: %d %s", st, out)
	}
	var moved map[string]any
	_ = json.Unmarshal(out, &moved)
	if moved["uuid"] != uuid || moved["full_name"] != "acme-labs/api2" || moved["workspace"].(map[string]any)["slug"] != "acme-labs" {
		t.Errorf("transfer answer uuid/full_name/workspace = %v %v %v", moved["uuid"], moved["full_name"], moved["workspace"])
	}
	if st, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/api2", tok, nil); st != http.StatusNotFound {
		t.Errorf("old workspace after transfer: %d, want 404", st)
	}
	if got := getJSON(t, s.URL()+"/2.0/repositories/acme-labs/api2/pullrequests?state=OPEN&state=MERGED&state=DECLINED", tok)["size"]; got != prsBefore {
		t.Errorf("pull requests after transfer: %v, want %v", got, prsBefore)
	}
	// The git data moved with it.
	readTok := adminToken(t, s, "alice", "repository")
	host := strings.TrimPrefix(s.URL(), "http://")
	runGit(t, "", "clone", "-q", "http://x-token-auth:"+readTok+"@"+host+"/acme-labs/api2.git", filepath.Join(t.TempDir(), "moved"))

	for name, rc := range map[string]*receiver{"new workspace": labs, "repository": own} {
		ev := decodeOnly[*bitbucket.RepoTransferEvent](t, rc, "repo:transfer")
		repo := ev.Repository
		if repo.UUID != uuid || repo.FullName != "acme-labs/api2" || repo.Workspace == nil || repo.Workspace.Slug != "acme-labs" {
			t.Errorf("%s hook: transferred repository uuid/full_name/workspace = %s %s %+v", name, repo.UUID, repo.FullName, repo.Workspace)
		}
		if ev.PreviousOwner == nil || ev.PreviousOwner.Nickname != "acme" || ev.PreviousOwner.UUID == "" {
			t.Errorf("%s hook: previous_owner = %+v", name, ev.PreviousOwner)
		}
	}
	if n := len(acme.byEvent("repo:transfer")); n != 0 {
		t.Errorf("the old workspace's hook got %d repo:transfer deliveries, want none", n)
	}

	// Pushes now reach the new workspace's hooks only.
	if st, body := do(t, http.MethodPost, s.URL()+"/_emulator/repositories/acme-labs/api2/push", "", []byte(`{"commits":1}`)); st != http.StatusOK {
		t.Fatalf("push after transfer: %d %s", st, body)
	}
	push := decodeOnly[*bitbucket.PushEvent](t, labs, "repo:push")
	if push.Repository.FullName != "acme-labs/api2" {
		t.Errorf("push after transfer names %s", push.Repository.FullName)
	}
	s.hooks.wait(5 * time.Second)
	if n := len(acme.byEvent("repo:push")); n != 0 {
		t.Errorf("the old workspace's hook got %d pushes after the transfer", n)
	}

	// Delete: repo:deleted to the workspace and the repository's own hooks.
	if st, body := do(t, http.MethodDelete, s.URL()+"/2.0/repositories/acme-labs/api2", tok, nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d %s", st, body)
	}
	for _, rc := range []*receiver{labs, own} {
		if ev := decodeOnly[*bitbucket.RepoLifecycleEvent](t, rc, "repo:deleted"); ev.Repository.UUID != uuid || ev.EventKey() != "repo:deleted" {
			t.Errorf("repo:deleted = %+v", ev)
		}
	}
}
