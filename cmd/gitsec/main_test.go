package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	_, err := runCLI(t, map[string]string{
		"GITSEC_DATABASE_URL": "postgres://u:pw-should-not-leak@127.0.0.1:1/x",
		"GITSEC_LOG_LEVEL":    "chatty",
	}, "migrate", "status")
	if err == nil || !strings.Contains(err.Error(), "GITSEC_LOG_LEVEL") || !strings.Contains(err.Error(), `"chatty"`) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "pw-should-not-leak") {
		t.Fatal("error leaks the database password")
	}
}

func TestMissingDatabaseURL(t *testing.T) {
	_, err := runCLI(t, map[string]string{"GITSEC_DATABASE_URL": ""}, "migrate", "up")
	if err == nil || !strings.Contains(err.Error(), "GITSEC_DATABASE_URL: is required") {
		t.Fatalf("err = %v", err)
	}
}

func TestAPIRequiresSecretsKey(t *testing.T) {
	_, err := runCLI(t, map[string]string{
		"GITSEC_DATABASE_URL":    "postgres://u@127.0.0.1:1/x",
		"GITSEC_SECRETS_KEY_URL": "",
	}, "api")
	if err == nil || !strings.Contains(err.Error(), "GITSEC_SECRETS_KEY_URL") {
		t.Fatalf("err = %v", err)
	}
}

func TestPostgresDownAtStartIsAClearError(t *testing.T) {
	port := closedPort(t)
	_, err := runCLI(t, map[string]string{
		"GITSEC_DATABASE_URL": "postgres://u:secretpw@127.0.0.1:" + strconv.Itoa(port) + "/x?connect_timeout=2",
	}, "migrate", "up")
	if err == nil || !strings.Contains(err.Error(), "connect to postgres at 127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secretpw") {
		t.Fatal("error leaks the database password")
	}
}

func TestAdminRejectsBadTenantName(t *testing.T) {
	_, err := runCLI(t, nil, "admin", "create-tenant", "Bad Name!")
	if err == nil || !strings.Contains(err.Error(), `"Bad Name!"`) {
		t.Fatalf("err = %v", err)
	}
}
