package emulator

import (
	"net/http"
	"strings"
	"testing"
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
	dropped := 0
	for _, d := range s.hooks.deliveries() {
		if d.Dropped == "fault injection" {
			dropped++
		}
	}
	if dropped != 1 {
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
