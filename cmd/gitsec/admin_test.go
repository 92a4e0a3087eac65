package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
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
