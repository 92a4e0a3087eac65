package pgcluster

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// reachableTempDir returns a directory the postgres OS user can reach when tests run as root
// (t.TempDir's parents are private to root).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startCluster(t *testing.T, dir string) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: dir, SkipFsync: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

func queryString(t *testing.T, connURL, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		t.Fatalf("connect %s: %v", connURL, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func execSQL(t *testing.T, connURL, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		t.Fatalf("connect %s: %v", connURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestStartCreateDatabaseRestartKeepsData(t *testing.T) {
	dir := filepath.Join(reachableTempDir(t), "pg")
	ctx := context.Background()

	c := startCluster(t, dir)
	if err := c.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c.URL("app"), "SELECT current_database()"); got != "app" {
		t.Fatalf("current_database = %q, want app", got)
	}
	if got := queryString(t, c.URL("app"), "SHOW server_encoding"); got != "UTF8" {
		t.Fatalf("server_encoding = %q, want UTF8", got)
	}
	execSQL(t, c.URL("app"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives restart')")
	if err := c.CreateDatabase(ctx, "app"); err == nil {
		t.Fatal("creating an existing database succeeded")
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, c.URL("app")); err == nil {
		t.Fatal("server still accepts connections after Stop")
	}

	again := startCluster(t, dir)
	if got := queryString(t, again.URL("app"), "SELECT v FROM kept"); got != "survives restart" {
		t.Fatalf("row after restart = %q", got)
	}
	if err := again.DropDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, again.URL("app")); err == nil {
		t.Fatal("dropped database still accepts connections")
	}
}

func TestUnixSocketWithLongDataDirPath(t *testing.T) {
	base := reachableTempDir(t)
	dir := filepath.Join(base, strings.Repeat("d", 60), strings.Repeat("e", 60), "pg")
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, dir)
	if c.SocketDir() == c.Dir() {
		t.Fatalf("socket dir is the data dir %s although its path exceeds the socket limit", c.Dir())
	}
	socketURL := fmt.Sprintf("postgres://postgres@/postgres?host=%s&port=%d", url.QueryEscape(c.SocketDir()), c.Port())
	if got := queryString(t, socketURL, "SELECT 'via socket'"); got != "via socket" {
		t.Fatalf("query over socket = %q", got)
	}
	sockDir := c.SocketDir()
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sockDir); !os.IsNotExist(err) {
		t.Fatalf("socket dir %s left behind after Stop (stat err %v)", sockDir, err)
	}
}

func TestShortDataDirKeepsSocketInside(t *testing.T) {
	c := startCluster(t, filepath.Join(reachableTempDir(t), "pg"))
	if c.SocketDir() != c.Dir() {
		t.Fatalf("socket dir = %s, want the data dir %s", c.SocketDir(), c.Dir())
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), ".s.PGSQL."+strconv.Itoa(c.Port()))); err != nil {
		t.Fatalf("no socket in data dir: %v", err)
	}
}

func TestStartAfterKilledServerReusesData(t *testing.T) {
	dir := filepath.Join(reachableTempDir(t), "pg")
	c := startCluster(t, dir)
	execSQL(t, c.URL("postgres"), "CREATE TABLE before_kill (v int); INSERT INTO before_kill VALUES (42)")

	// Simulate a dev stack killed with SIGKILL: no shutdown, postmaster.pid stays behind.
	if err := syscall.Kill(c.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.proc.Wait()
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("expected a stale postmaster.pid: %v", err)
	}

	again := startCluster(t, dir)
	if got := queryString(t, again.URL("postgres"), "SELECT v::text FROM before_kill"); got != "42" {
		t.Fatalf("row after crash restart = %q", got)
	}
}

func TestFixedPortInUseFailsWithServerLog(t *testing.T) {
	first := startCluster(t, filepath.Join(reachableTempDir(t), "pg1"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second, err := Start(ctx, Options{Dir: filepath.Join(reachableTempDir(t), "pg2"), Port: first.Port(), SkipFsync: true})
	if err == nil {
		second.Stop(ctx)
		t.Fatal("second cluster started on a port already in use")
	}
	if !strings.Contains(err.Error(), "server log") || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("error lacks the server log tail: %v", err)
	}
}

func TestUnreachableDataDirIsExplained(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root delegates the server to the postgres user")
	}
	private := t.TempDir() // mode 0700, owned by root
	_, err := Start(context.Background(), Options{Dir: filepath.Join(private, "pg")})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("err = %v, want an explanation that the postgres user cannot reach the dir", err)
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if !isFile(filepath.Join(dir, name)) {
			t.Errorf("%s missing in %s", name, dir)
		}
	}
}
