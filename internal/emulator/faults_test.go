package emulator

import (
	"net/http"
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
