package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/internal/websession"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true, S3: true}))
}

func TestMigrateAndAdminCommandsOnRealPostgres(t *testing.T) {
	env := map[string]string{"GITSEC_DATABASE_URL": testenv.Postgres(t)}
	out, err := runCLI(t, env, "migrate", "status")
	if err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("status before: %v\n%s", err, out)
	}
	if out, err := runCLI(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "applied migrations") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	if out, err := runCLI(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate up: %v\n%s", err, out)
	}
	out, err = runCLI(t, env, "admin", "create-tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	token := lastLine(out)
	if apitoken.Check(token) != nil {
		t.Fatalf("create-tenant printed %q", out)
	}
	if _, err := runCLI(t, env, "admin", "create-tenant", "acme"); err == nil || !strings.Contains(err.Error(), `"acme" already exists`) {
		t.Fatalf("duplicate tenant: %v", err)
	}
	out, err = runCLI(t, env, "admin", "create-token", "--tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	second := lastLine(out)
	if _, err := runCLI(t, env, "admin", "create-token", "--tenant", "nobody"); err == nil || !strings.Contains(err.Error(), `"nobody" does not exist`) {
		t.Fatalf("unknown tenant: %v", err)
	}

	st, err := store.Open(context.Background(), env["GITSEC_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tok := range []string{token, second} {
		ten, err := st.TenantByTokenHash(context.Background(), apitoken.Hash(tok))
		if err != nil || ten.Name != "acme" {
			t.Fatalf("printed token does not authenticate: %v %v", ten, err)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func TestRevokeTokenCommandOnRealPostgres(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{"GITSEC_DATABASE_URL": testenv.Postgres(t)}
	if out, err := runCLI(t, env, "migrate", "up"); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	issue := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, env, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return lastLine(out)
	}
	first := issue("admin", "create-tenant", "acme")
	second := issue("admin", "create-token", "--tenant", "acme", "--name", "ci")
	other := issue("admin", "create-tenant", "globex")

	st, err := store.Open(ctx, env["GITSEC_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acme, err := st.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	works := func(tok string) bool {
		_, err := st.TenantByTokenHash(ctx, apitoken.Hash(tok))
		return err == nil
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tenant", "nobody", apitoken.DisplayPrefix(first)}, `tenant "nobody" does not exist`},
		{[]string{"--tenant", "acme", "gsk_nope00"}, "no active API token with prefix gsk_nope00"},
		{[]string{"--tenant", "acme", "hello"}, `"hello" is neither a token ID`},
		{[]string{"--tenant", "acme", "3f2b8a64-1111-4222-8333-944455556666"}, "no active API token with ID 3f2b8a64-1111-4222-8333-944455556666"},
		// Another tenant's token is not found under acme.
		{[]string{"--tenant", "acme", apitoken.DisplayPrefix(other)}, "no active API token with prefix " + apitoken.DisplayPrefix(other)},
	} {
		out, err := runCLI(t, env, append([]string{"admin", "revoke-token"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("revoke-token %v = %v (%s), want %q", tc.args, err, out, tc.want)
		}
	}
	out, err := runCLI(t, env, "admin", "revoke-token", "--tenant", "acme", second)
	if err == nil || strings.Contains(err.Error(), second) || strings.Contains(out, second) {
		t.Fatalf("a whole token was accepted or echoed: %v %s", err, out)
	}
	if !works(first) || !works(second) || !works(other) {
		t.Fatal("a refused revoke-token revoked something")
	}

	// By display prefix.
	out, err = runCLI(t, env, "admin", "revoke-token", "--tenant", "acme", apitoken.DisplayPrefix(second))
	if err != nil || !strings.Contains(out, "revoked API token "+apitoken.DisplayPrefix(second)) {
		t.Fatalf("revoke by prefix: %v\n%s", err, out)
	}
	if works(second) || !works(first) || !works(other) {
		t.Fatal("revoke by prefix revoked the wrong tokens")
	}
	// By ID, and an operator may revoke the last token (with a hint how to issue another).
	left, err := st.ListAPITokens(ctx, acme.ID)
	if err != nil || len(left) != 1 {
		t.Fatalf("active tokens = %v %v", left, err)
	}
	out, err = runCLI(t, env, "admin", "revoke-token", "--tenant", "acme", left[0].ID.String())
	if err != nil || !strings.Contains(out, "no active API token left") {
		t.Fatalf("revoke last by ID: %v\n%s", err, out)
	}
	if works(first) || !works(other) {
		t.Fatal("revoke by ID revoked the wrong tokens")
	}
	events, err := st.ListAuditEvents(ctx, acme.ID, 0, 10)
	if err != nil || len(events) != 2 || events[0].Action != "api_token.revoked" || events[0].Actor != "admin_cli" {
		t.Fatalf("audit events = %+v %v", events, err)
	}
}

func TestAdminLoginLinkPrintsASingleUseLinkOnThePublicURL(t *testing.T) {
	env := map[string]string{"GITSEC_DATABASE_URL": testenv.Postgres(t), "GITSEC_PUBLIC_URL": "https://gitsec.example.com"}
	if out, err := runCLI(t, env, "migrate", "up"); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	if _, err := runCLI(t, env, "admin", "create-tenant", "acme"); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, env, "admin", "login-link", "--tenant", "acme", "--next", "/repositories/bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	link := lastLine(out)
	if !strings.HasPrefix(link, "https://gitsec.example.com/signin/link?token=") {
		t.Fatalf("login-link printed %q", out)
	}
	st, err := store.Open(context.Background(), env["GITSEC_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret := strings.TrimPrefix(link, "https://gitsec.example.com/signin/link?token=")
	ten, next, err := st.ConsumeLoginLink(context.Background(), websession.Hash(secret), time.Now())
	if err != nil || ten.Name != "acme" || next != "/repositories/bitbucket" {
		t.Fatalf("the printed link resolves to %v %q %v; want acme, /repositories/bitbucket", ten.Name, next, err)
	}
	if _, _, err := st.ConsumeLoginLink(context.Background(), websession.Hash(secret), time.Now()); err == nil {
		t.Error("the link worked twice")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tenant", "acme", "--next", "https://evil.example/"}, `next path "https://evil.example/" must be a relative path`},
		{[]string{"--tenant", "acme", "--next", "//evil.example"}, `next path "//evil.example"`},
		{[]string{"--tenant", "nobody"}, `tenant "nobody" does not exist`},
		{[]string{"--tenant", "Bad Name"}, `tenant name "Bad Name" is invalid`},
	} {
		if _, err := runCLI(t, env, append([]string{"admin", "login-link"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("login-link %v: %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}
