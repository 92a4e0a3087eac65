package api_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/store"
)

// createToken issues a token through the API and returns it and its ID.
func (f *fixture) createToken(t *testing.T, auth, name string) (token, id string) {
	t.Helper()
	status, body := f.do(t, "POST", "/api/v1/tokens", auth, `{"name":"`+name+`"}`)
	if status != 201 {
		t.Fatalf("create token %q = %d %v", name, status, body)
	}
	return body["token"].(string), body["id"].(string)
}

func (f *fixture) auditEvents(t *testing.T, auth string) []any {
	t.Helper()
	status, body := f.do(t, "GET", "/api/v1/audit-events", auth, "")
	if status != 200 {
		t.Fatalf("audit events = %d %v", status, body)
	}
	return body["audit_events"].([]any)
}

// listTokens returns the caller's tokens by name and fails if the listing carries a secret.
func (f *fixture) listTokens(t *testing.T, auth string, secrets ...string) map[string]map[string]any {
	t.Helper()
	status, body := f.do(t, "GET", "/api/v1/tokens", auth, "")
	if status != 200 {
		t.Fatalf("list tokens = %d %v", status, body)
	}
	raw, _ := json.Marshal(body)
	for _, s := range secrets {
		sum := apitoken.Hash(s)
		for _, leak := range []string{s, s[len(apitoken.Prefix):], hex.EncodeToString(sum), base64.StdEncoding.EncodeToString(sum), base64.RawURLEncoding.EncodeToString(sum)} {
			if strings.Contains(string(raw), leak) {
				t.Fatalf("token listing holds a secret or its hash: %s", raw)
			}
		}
	}
	out := map[string]map[string]any{}
	for _, v := range body["tokens"].([]any) {
		tok := v.(map[string]any)
		if _, ok := tok["token"]; ok {
			t.Fatalf("listing has a token field: %v", tok)
		}
		out[tok["name"].(string)] = tok
	}
	return out
}

func TestListTokensShowsMetadataNeverSecrets(t *testing.T) {
	f := newFixture(t)
	ci, ciID := f.createToken(t, f.tokenA, "ci")
	f.do(t, "GET", "/api/v1/me", f.tokenA, "")

	toks := f.listTokens(t, f.tokenA, f.tokenA, ci, f.tokenB)
	if len(toks) != 2 || toks["test"] == nil || toks["ci"] == nil {
		t.Fatalf("tenant A's tokens = %v", toks)
	}
	if toks["ci"]["id"] != ciID || toks["ci"]["display_prefix"] != apitoken.DisplayPrefix(ci) || toks["ci"]["created_at"] == nil {
		t.Fatalf("ci token = %v", toks["ci"])
	}
	if toks["ci"]["last_used_at"] != nil {
		t.Fatalf("unused token has last_used_at %v", toks["ci"]["last_used_at"])
	}
	if toks["test"]["last_used_at"] == nil {
		t.Fatalf("used token has no last_used_at: %v", toks["test"])
	}
	if toksB := f.listTokens(t, f.tokenB); len(toksB) != 1 || toksB["test"]["display_prefix"] != apitoken.DisplayPrefix(f.tokenB) {
		t.Fatalf("tenant B sees %v", toksB)
	}
}

func TestRevokedTokenGets401Immediately(t *testing.T) {
	f := newFixture(t)
	ci, ciID := f.createToken(t, f.tokenA, "ci")
	// Use it first so any per-token state (last-use stamp, a cache) is warm.
	for i := 0; i < 3; i++ {
		if status, body := f.do(t, "GET", "/api/v1/me", ci, ""); status != 200 {
			t.Fatalf("fresh token: %d %v", status, body)
		}
	}
	status, body := f.do(t, "DELETE", "/api/v1/tokens/"+ciID, f.tokenA, "")
	if status != 200 || body["id"] != ciID || body["revoked_at"] == nil {
		t.Fatalf("revoke = %d %v", status, body)
	}
	if status, body := f.do(t, "GET", "/api/v1/me", ci, ""); status != 401 || errorCode(t, body) != "unauthorized" {
		t.Fatalf("revoked token: %d %v", status, body)
	}
	if _, ok := f.listTokens(t, f.tokenA)["ci"]; ok {
		t.Fatal("revoked token still listed")
	}
	if status, body := f.do(t, "DELETE", "/api/v1/tokens/"+ciID, f.tokenA, ""); status != 404 || errorCode(t, body) != "not_found" {
		t.Fatalf("second revoke = %d %v", status, body)
	}
	if status, body := f.do(t, "DELETE", "/api/v1/tokens/not-a-uuid", f.tokenA, ""); status != 404 || errorCode(t, body) != "not_found" {
		t.Fatalf("revoke bad id = %d %v", status, body)
	}
	last := f.auditEvents(t, f.tokenA)[0].(map[string]any)
	if last["action"] != "api_token.revoked" || last["target_id"] != ciID || last["actor"] != "api_token:"+apitoken.DisplayPrefix(f.tokenA) {
		t.Fatalf("audit = %v", last)
	}
}

func TestTokensOfAnotherTenantAreInvisible(t *testing.T) {
	f := newFixture(t)
	ci, ciID := f.createToken(t, f.tokenA, "ci")
	if status, body := f.do(t, "DELETE", "/api/v1/tokens/"+ciID, f.tokenB, ""); status != 404 || errorCode(t, body) != "not_found" {
		t.Fatalf("tenant B revoking A's token = %d %v", status, body)
	}
	if status, _ := f.do(t, "GET", "/api/v1/me", ci, ""); status != 200 {
		t.Fatalf("A's token stopped working after B's attempt: %d", status)
	}
	if _, ok := f.listTokens(t, f.tokenB, ci)["ci"]; ok {
		t.Fatal("tenant B lists tenant A's token")
	}
	if ev := f.auditEvents(t, f.tokenB); len(ev) != 0 {
		t.Fatalf("tenant B's failed attempt wrote audit events %v", ev)
	}
}

// A tenant rotates by creating a token and revoking the old one with itself; the last active
// token cannot be revoked through the API (the tenant would be locked out).
func TestTokenRotationAndLastTokenGuard(t *testing.T) {
	f := newFixture(t)
	oldID := f.listTokens(t, f.tokenA)["test"]["id"].(string)
	next, nextID := f.createToken(t, f.tokenA, "next")
	if status, body := f.do(t, "DELETE", "/api/v1/tokens/"+oldID, f.tokenA, ""); status != 200 {
		t.Fatalf("self-revoke = %d %v", status, body)
	}
	if status, _ := f.do(t, "GET", "/api/v1/me", f.tokenA, ""); status != 401 {
		t.Fatalf("self-revoked token: %d", status)
	}
	status, body := f.do(t, "DELETE", "/api/v1/tokens/"+nextID, next, "")
	if status != 409 || errorCode(t, body) != "last_token" {
		t.Fatalf("revoking the last token = %d %v", status, body)
	}
	if status, _ := f.do(t, "GET", "/api/v1/me", next, ""); status != 200 {
		t.Fatalf("last token stopped working after a refused revoke: %d", status)
	}
}

// Two tokens revoking each other at once: the guard must still leave one active. The race
// window is inside the revoking transactions, so the store is called directly, many times.
func TestConcurrentRevocationsKeepOneToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	me, err := f.store.TenantByTokenHash(ctx, apitoken.Hash(f.tokenA))
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 50; round++ {
		if _, _, err := f.store.IssueAPIToken(ctx, me.ID, "second"); err != nil {
			t.Fatal(err)
		}
		toks, err := f.store.ListAPITokens(ctx, me.ID)
		if err != nil || len(toks) != 2 {
			t.Fatalf("tokens = %v %v", toks, err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for i, tok := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = f.store.RevokeAPIToken(ctx, me.ID, tok.ID, store.KeepLastToken)
			}()
		}
		close(start)
		wg.Wait()
		left, err := f.store.ListAPITokens(ctx, me.ID)
		if err != nil || len(left) != 1 {
			t.Fatalf("round %d: revocations %v left %d active tokens (%v)", round, errs, len(left), err)
		}
		refused := errs[0]
		if refused == nil {
			refused = errs[1]
		}
		if !errors.Is(refused, store.ErrLastToken) {
			t.Fatalf("round %d: revocations %v, want one ErrLastToken", round, errs)
		}
	}
}
