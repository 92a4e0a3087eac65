package emulator

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/bitbucket"
)

func TestWebhookDropFaultAndInvalidRules(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed(), Faults: []FaultRule{{Target: "webhook", Event: "repo:push", Kind: "drop", Count: 1}}})
	rc := newReceiver(t)
	tok := adminToken(t, s, "alice", "repository", "webhook")
	if st, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/api/hooks", tok,
		[]byte(`{"url":"`+rc.srv.URL+`","events":["repo:push"]}`)); st != http.StatusCreated {
		t.Fatalf("hook: %d %s", st, body)
	}
	for i := 0; i < 2; i++ {
		if st, body := do(t, http.MethodPost, s.URL()+"/_emulator/repositories/acme/api/push", "", []byte(`{"commits":1}`)); st != http.StatusOK {
			t.Fatalf("push: %d %s", st, body)
		}
	}
	waitFor(t, "second push delivered", func() bool { return len(rc.byEvent("repo:push")) == 1 })
	if dropped := countDeliveries(s, func(d Delivery) bool { return d.Dropped == "fault injection" }); dropped != 1 {
		t.Errorf("dropped deliveries = %d, want 1", dropped)
	}
	if st, _ := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(`{"kind":"explode"}`)); st != http.StatusBadRequest {
		t.Errorf("invalid fault kind accepted: %d", st)
	}
	if _, err := Start(t.Context(), Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Faults: []FaultRule{{Kind: "5xx", Status: 200}}}); err == nil {
		t.Errorf("Start accepted an invalid fault rule")
	}
}

// A 4xx fault answers one repository's REST or git requests like Bitbucket would, and leaves
// the others alone.
func TestClientErrorFault(t *testing.T) {
	s := startTest(t, Options{Seed: testSeed(), Faults: []FaultRule{
		{Path: "/2.0/repositories/acme/api", Kind: "4xx"},
		{Path: "/acme/api.git/*", Kind: "4xx", Status: http.StatusUnauthorized, Count: 1},
	}})
	tok := adminToken(t, s, "alice", "repository")
	status, body := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/api", tok, nil)
	if status != http.StatusForbidden || !strings.Contains(string(body), `"type":"error"`) {
		t.Fatalf("REST with a 403 fault: %d %s", status, body)
	}
	if status, body := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/empty", tok, nil); status != http.StatusOK {
		t.Fatalf("another repository: %d %s", status, body)
	}
	status, hdr, _ := doFull(t, http.MethodGet, s.URL()+"/acme/api.git/info/refs?service=git-upload-pack", "", nil)
	if status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("git with a 401 fault: %d, WWW-Authenticate %q", status, hdr.Get("WWW-Authenticate"))
	}
	for _, bad := range []string{`{"kind":"4xx","status":429}`, `{"kind":"4xx","status":500}`} {
		if st, _ := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(bad)); st != http.StatusBadRequest {
			t.Errorf("fault %s accepted: %d", bad, st)
		}
	}
}

// pushHook registers a signed repository hook for repo:push on acme/api pointing at rc.
func pushHook(t *testing.T, s *Server, rc *receiver, secret string) {
	t.Helper()
	tok := adminToken(t, s, "alice", "repository", "webhook")
	if st, body := do(t, http.MethodPost, s.URL()+"/2.0/repositories/acme/api/hooks", tok,
		[]byte(`{"url":"`+rc.srv.URL+`","active":true,"secret":"`+secret+`","events":["repo:push"]}`)); st != http.StatusCreated {
		t.Fatalf("hook: %d %s", st, body)
	}
}

// adminPushMain pushes one commit to acme/api's main and returns the new main hash.
func adminPushMain(t *testing.T, s *Server) string {
	t.Helper()
	st, body := do(t, http.MethodPost, s.URL()+"/_emulator/repositories/acme/api/push", "", []byte(`{"branch":"main","commits":1}`))
	if st != http.StatusOK {
		t.Fatalf("push: %d %s", st, body)
	}
	var out struct {
		Refs map[string]string `json:"refs"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Refs["refs/heads/main"] == "" {
		t.Fatalf("push answer %s: %v", body, err)
	}
	return out.Refs["refs/heads/main"]
}

// pushedHash decodes a repo:push delivery like the production receiver and returns the new
// target of its only change.
func pushedHash(t *testing.T, d delivery, secret string) string {
	t.Helper()
	push := decodeSignedPush(t, d, secret)
	if len(push.Push.Changes) != 1 || push.Push.Changes[0].New == nil {
		t.Fatalf("decoded push %+v", push)
	}
	return push.Push.Changes[0].New.Target.Hash
}

func TestWebhookDuplicateFault(t *testing.T) {
	const secret = "dup-secret"
	s := startTest(t, Options{Seed: testSeed(), Faults: []FaultRule{{Target: "webhook", Event: "repo:*", Kind: "duplicate", Count: 1}}})
	rc := newReceiver(t)
	pushHook(t, s, rc, secret)
	first := adminPushMain(t, s)
	waitFor(t, "both copies", func() bool { return len(rc.byEvent("repo:push")) == 2 })
	got := rc.byEvent("repo:push")
	a, b := got[0], got[1]
	for _, h := range []string{bitbucket.HeaderRequestUUID, bitbucket.HeaderAttemptNumber, bitbucket.HeaderHookUUID, bitbucket.HeaderSignature} {
		if a.header.Get(h) == "" || a.header.Get(h) != b.header.Get(h) {
			t.Errorf("%s differs between the copies: %q / %q", h, a.header.Get(h), b.header.Get(h))
		}
	}
	if a.header.Get(bitbucket.HeaderAttemptNumber) != "1" || string(a.body) != string(b.body) {
		t.Errorf("copies: attempt %s, same body %v", a.header.Get(bitbucket.HeaderAttemptNumber), string(a.body) == string(b.body))
	}
	if pushedHash(t, a, secret) != first || pushedHash(t, b, secret) != first {
		t.Errorf("copies do not name the pushed commit %s", first)
	}
	var logged []Delivery
	for _, d := range s.hooks.deliveries() {
		// The log keeps the brace UUID; the header carries it without braces.
		if strings.Trim(d.RequestUUID, "{}") == a.header.Get(bitbucket.HeaderRequestUUID) {
			logged = append(logged, d)
		}
	}
	if len(logged) != 2 || logged[0].Duplicate || !logged[1].Duplicate || logged[0].Fault != "duplicate" || logged[1].Attempt != 1 {
		t.Errorf("delivery log for the duplicated delivery = %+v", logged)
	}

	// The burst is spent: the next push arrives once.
	second := adminPushMain(t, s)
	waitFor(t, "next push", func() bool { return len(rc.byEvent("repo:push")) == 3 })
	s.hooks.wait(5 * time.Second)
	if got := rc.byEvent("repo:push"); len(got) != 3 || pushedHash(t, got[2], secret) != second {
		t.Errorf("after the burst: %d deliveries", len(got))
	}
}

func TestWebhookReorderFault(t *testing.T) {
	const secret = "reorder-secret"
	// A hold far beyond the test's patience: only the next delivery can release the held one.
	s := startTest(t, Options{Seed: testSeed(), Faults: []FaultRule{{Target: "webhook", Event: "repo:push", Kind: "reorder", Count: 1, Hold: Duration(time.Hour)}}})
	rc := newReceiver(t)
	pushHook(t, s, rc, secret)
	older := adminPushMain(t, s)
	newer := adminPushMain(t, s)
	waitFor(t, "both pushes", func() bool { return len(rc.byEvent("repo:push")) == 2 })
	got := rc.byEvent("repo:push")
	if h0, h1 := pushedHash(t, got[0], secret), pushedHash(t, got[1], secret); h0 != newer || h1 != older {
		t.Errorf("arrival order %s, %s; want the newer push %s before the held older one %s", h0, h1, newer, older)
	}
	if reordered := countDeliveries(s, func(d Delivery) bool { return d.Fault == "reorder" }); reordered != 1 {
		t.Errorf("log shows %d reordered attempts, want 1", reordered)
	}

	// With no later delivery, the held one goes out once the hold passes.
	if st, body := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "",
		[]byte(`{"target":"webhook","kind":"reorder","count":1,"hold":"100ms"}`)); st != http.StatusCreated || !strings.Contains(string(body), `"hold":"100ms"`) {
		t.Fatalf("add reorder rule: %d %s", st, body)
	}
	alone := adminPushMain(t, s)
	waitFor(t, "held delivery after its hold", func() bool { return len(rc.byEvent("repo:push")) == 3 })
	if h := pushedHash(t, rc.byEvent("repo:push")[2], secret); h != alone {
		t.Errorf("held delivery names %s, want %s", h, alone)
	}

	st, body := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(`{"target":"webhook","kind":"explode"}`))
	if st != http.StatusBadRequest || !strings.Contains(string(body), "drop, latency, duplicate or reorder") {
		t.Errorf("invalid webhook kind: %d %s", st, body)
	}
	if st, _ := do(t, http.MethodPost, s.URL()+"/_emulator/faults", "", []byte(`{"target":"webhook","kind":"reorder","hold":"-1s"}`)); st != http.StatusBadRequest {
		t.Errorf("negative hold accepted: %d", st)
	}
}
