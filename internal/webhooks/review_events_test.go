package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
)

// reviewEvents are the pull request events that change an export without changing code:
// reviews and comment resolution.
var reviewEvents = []string{
	"pullrequest:approved", "pullrequest:unapproved",
	"pullrequest:changes_request_created", "pullrequest:changes_request_removed",
	"pullrequest:comment_resolved", "pullrequest:comment_reopened",
}

// The onboarding hook subscribes to every pull request event that changes an export, and each
// key is one the decoder knows (an unknown one would only be recorded).
func TestOnboardingSubscribesToReviewEvents(t *testing.T) {
	for _, ev := range activities.WebhookEvents {
		if !bitbucket.KnownEventKey(ev) {
			t.Errorf("subscribed event %s is not decoded", ev)
		}
	}
	for _, ev := range reviewEvents {
		if !slices.Contains(activities.WebhookEvents, ev) {
			t.Errorf("onboarding does not subscribe to %s", ev)
		}
	}
}

type hookSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string][][]byte
}

func (h *hookSink) bodies(event string) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[event]
}

// A review or a resolved comment thread, delivered by the emulator to a hook with the
// onboarding's event list, parses into pull request work for that pull request.
func TestReviewDeliveriesMapToPullRequestWork(t *testing.T) {
	sink := &hookSink{got: map[string][][]byte{}}
	sink.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sink.mu.Lock()
		sink.got[r.Header.Get("X-Event-Key")] = append(sink.got[r.Header.Get("X-Event-Key")], b)
		sink.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(sink.srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Seed: &emulator.Seed{
			Users: []emulator.SeedUser{{Username: "alice"}, {Username: "bob"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Members: []string{"bob"},
				Repositories: []emulator.SeedRepository{{Slug: "api", Generate: &emulator.Generate{Commits: 6, PullRequests: 2}}}}},
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = emu.Close()
		cancel()
	})
	call := func(method, path, token string, body any) []byte {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, emu.URL()+path, rd)
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
		return out
	}
	token := func(user string, scopes ...string) string {
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(call(http.MethodPost, "/_emulator/tokens", "", map[string]any{"user": user, "scopes": scopes}), &tr)
		return tr.AccessToken
	}
	alice := token("alice", "account", "repository", "pullrequest", "webhook")
	bob := token("bob", "account", "repository", "pullrequest")
	call(http.MethodPost, "/2.0/workspaces/acme/hooks", alice, map[string]any{
		"description": "GitSec", "url": sink.srv.URL, "active": true, "events": activities.WebhookEvents})

	pr := "/2.0/repositories/acme/api/pullrequests/2"
	call(http.MethodPost, pr+"/approve", bob, nil)
	call(http.MethodDelete, pr+"/approve", bob, nil)
	call(http.MethodPost, pr+"/request-changes", bob, nil)
	call(http.MethodDelete, pr+"/request-changes", bob, nil)
	var cm struct {
		ID int64 `json:"id"`
	}
	_ = json.Unmarshal(call(http.MethodPost, pr+"/comments", bob, map[string]any{"content": map[string]string{"raw": "Why?"}}), &cm)
	cid := strconv.FormatInt(cm.ID, 10)
	call(http.MethodPost, pr+"/comments/"+cid+"/resolve", alice, nil)
	call(http.MethodDelete, pr+"/comments/"+cid+"/resolve", alice, nil)

	deadline := time.Now().Add(10 * time.Second)
	for _, ev := range reviewEvents {
		for len(sink.bodies(ev)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		bodies := sink.bodies(ev)
		if len(bodies) != 1 {
			t.Errorf("%s: %d deliveries, want 1", ev, len(bodies))
			continue
		}
		a, err := Parse(ev, bodies[0])
		if err != nil {
			t.Errorf("%s: %v", ev, err)
			continue
		}
		if a.Kind != KindPullRequest || a.PullRequestID != 2 || a.Event != ev ||
			a.Repository.FullName != "acme/api" || !strings.HasPrefix(a.Repository.UUID, "{") {
			t.Errorf("%s parsed as %+v, want pull request 2 of acme/api", ev, a)
		}
	}
}

// The same mapping for hand-made minimal payloads of every review key, so a change of the
// decoder's event switch cannot quietly turn one into record-only work.
func TestParseReviewEventKeys(t *testing.T) {
	repo := `"repository":{"uuid":"{r}","full_name":"ws/repo"}`
	for _, ev := range reviewEvents {
		body := `{` + repo + `,"pullrequest":{"id":7},"approval":{"date":"2026-01-01T00:00:00+00:00"},` +
			`"changes_request":{"date":"2026-01-01T00:00:00+00:00"},"comment":{"id":9}}`
		a, err := Parse(ev, []byte(body))
		if err != nil || a.Kind != KindPullRequest || a.PullRequestID != 7 || a.Repository.FullName != "ws/repo" {
			t.Errorf("%s: %+v, %v; want pull request 7", ev, a, err)
		}
		// Without the pull request id there is nothing to act on.
		if _, err := Parse(ev, []byte(`{`+repo+`,"pullrequest":{},"comment":{"id":9}}`)); err == nil {
			t.Errorf("%s without pullrequest.id parsed", ev)
		}
	}
}
