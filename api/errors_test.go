package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/store"
)

// failureLog returns the "request failed" log line of the request, or nil.
func (f *fixture) failureLog(requestID string) map[string]any {
	for _, line := range strings.Split(f.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request failed" && rec["request_id"] == requestID {
			return rec
		}
	}
	return nil
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A bug (here: the schema lost a column the code reads) is a 500 naming the request ID, with
// the cause in the log; it used to be a 503 "unavailable" that logged nothing.
func TestProgrammingErrorIs500WithRequestIDAndLoggedCause(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `ALTER TABLE installations RENAME COLUMN status TO status_renamed`); err != nil {
		t.Fatal(err)
	}

	const reqID = "req-programming-error"
	status, raw, body := f.send(t, "GET", "/api/v1/installations", f.tokenA, "", reqID)
	if status != http.StatusInternalServerError || errorCode(t, body) != "internal" {
		t.Fatalf("GET /installations with a broken query = %d %s, want 500 internal", status, raw)
	}
	e := body["error"].(map[string]any)
	if e["request_id"] != reqID || !strings.Contains(e["message"].(string), reqID) {
		t.Fatalf("500 body does not name the request id %q: %s", reqID, raw)
	}
	if strings.Contains(raw, "status_renamed") || strings.Contains(raw, "SQLSTATE") || strings.Contains(raw, "column") {
		t.Fatalf("500 body shows the driver's error: %s", raw)
	}
	rec := f.failureLog(reqID)
	if rec == nil {
		t.Fatalf("no \"request failed\" log line for %s:\n%s", reqID, f.logs.String())
	}
	if cause, _ := rec["error"].(string); !strings.Contains(cause, "42703") || rec["level"] != "ERROR" || rec["status"] != float64(500) {
		t.Fatalf("log line lacks the cause (undefined column, SQLSTATE 42703) or level: %v", rec)
	}
}

// An unreachable dependency is a 503 that names which one, logs the driver's error and never
// shows it (it names hosts and database users). It used to answer 503 without a log line.
func TestUnreachableDependencyIs503AndLogged(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		f := newFixture(t)
		addr := closedAddr(t)
		down, err := store.OpenLazy("postgres://gitsec_dbuser@" + addr + "/gitsec?connect_timeout=2")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(down.Close)
		f.deps.Store = down
		f.serve(t)

		const reqID = "req-postgres-down"
		status, raw, body := f.send(t, "GET", "/api/v1/me", f.tokenA, "", reqID)
		if status != http.StatusServiceUnavailable || errorCode(t, body) != "unavailable" {
			t.Fatalf("GET /me with Postgres down = %d %s, want 503 unavailable", status, raw)
		}
		if !strings.Contains(raw, "Postgres") || strings.Contains(raw, addr) || strings.Contains(raw, "gitsec_dbuser") {
			t.Fatalf("503 body should name the dependency but not its address or user: %s", raw)
		}
		rec := f.failureLog(reqID)
		if rec == nil {
			t.Fatalf("no \"request failed\" log line for %s:\n%s", reqID, f.logs.String())
		}
		if cause, _ := rec["error"].(string); !strings.Contains(cause, addr) || rec["status"] != float64(503) {
			t.Fatalf("log line lacks the cause: %v", rec)
		}
	})
	t.Run("temporal", func(t *testing.T) {
		f := newFixture(t)
		instID := f.installationA(t)
		addr := closedAddr(t)
		tc, err := client.NewLazyClient(client.Options{HostPort: addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tc.Close)
		f.deps.Temporal, f.deps.TaskQueue = tc, "unreachable"
		f.serve(t)

		const reqID = "req-temporal-down"
		status, raw, body := f.send(t, "POST", fmt.Sprintf("/api/v1/installations/%s/sync", instID), f.tokenA, "", reqID)
		if status != http.StatusServiceUnavailable || errorCode(t, body) != "unavailable" {
			t.Fatalf("POST sync with Temporal down = %d %s, want 503 unavailable", status, raw)
		}
		if !strings.Contains(raw, "Temporal") || strings.Contains(raw, addr) {
			t.Fatalf("503 body should name the dependency but not its address: %s", raw)
		}
		rec := f.failureLog(reqID)
		if rec == nil {
			t.Fatalf("no \"request failed\" log line for %s:\n%s", reqID, f.logs.String())
		}
		if cause, _ := rec["error"].(string); !strings.Contains(cause, addr) {
			t.Fatalf("log line lacks the cause: %v", rec)
		}
	})
}
