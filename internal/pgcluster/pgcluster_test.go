package pgcluster

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
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
	return reachableTempDirIn(t, "")
}

func reachableTempDirIn(t *testing.T, parent string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "pgcluster-test-")
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

// socketURL connects over the unix socket, as psql -h does.
func socketURL(c *Cluster) string {
	return fmt.Sprintf("postgres://postgres@/postgres?host=%s&port=%d", url.QueryEscape(c.SocketDir()), c.Port())
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
	// Start creates the missing parents itself, and as root they must let the postgres user in.
	dir := filepath.Join(base, strings.Repeat("d", 60), strings.Repeat("e", 60), "pg")
	c := startCluster(t, dir)
	if c.SocketDir() == c.Dir() {
		t.Fatalf("socket dir is the data dir %s although its path exceeds the socket limit", c.Dir())
	}
	if got := queryString(t, socketURL(c), "SELECT 'via socket'"); got != "via socket" {
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

// scratchRelocationRoot points RelocationRoot at a directory of this test, so that relocated
// clusters are removed with it.
func scratchRelocationRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(reachableTempDir(t), "relocated")
	old := RelocationRoot
	RelocationRoot = root
	t.Cleanup(func() { RelocationRoot = old })
	return root
}

func hasTable(t *testing.T, c *Cluster, table string) bool {
	t.Helper()
	return queryString(t, c.URL("postgres"), "SELECT (to_regclass('"+table+"') IS NOT NULL)::text") == "true"
}

// A clone in root's home directory (mode 0700): the postgres OS user cannot reach .gitsec/pg, so
// the cluster must live elsewhere and be found again on every start.
func TestDataDirUnderPrivateParent(t *testing.T) {
	root := os.Geteuid() == 0
	if !root {
		t.Log("not running as root: the server runs as this user, who can reach its own 0700 directory; " +
			"checking only that the cluster starts there in place and keeps its data")
	}
	relocated := scratchRelocationRoot(t)
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	requested := filepath.Join(private, "clone", ".gitsec", "pg")

	c := startCluster(t, requested)
	execSQL(t, c.URL("postgres"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('first start')")
	if !root {
		if c.Dir() != requested {
			t.Fatalf("data dir = %s, want %s in place", c.Dir(), requested)
		}
		if err := c.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !hasTable(t, startCluster(t, requested), "kept") {
			t.Fatal("data lost across a restart")
		}
		return
	}
	if filepath.Dir(filepath.Dir(c.Dir())) != relocated {
		t.Fatalf("data dir = %s, want it relocated under %s", c.Dir(), relocated)
	}
	if target, err := os.Readlink(requested); err != nil || target != c.Dir() {
		t.Fatalf("%s links to %q (%v), want %s", requested, target, err, c.Dir())
	}
	// The unix socket sits in the relocated data dir, where psql -h finds it.
	if got := queryString(t, socketURL(c), "SELECT v FROM kept"); got != "first start" {
		t.Fatalf("query over socket = %q", got)
	}
	firstDir := c.Dir()
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	again := startCluster(t, requested)
	if again.Dir() != firstDir || !hasTable(t, again, "kept") {
		t.Fatalf("restart uses %s (want %s) or lost the data", again.Dir(), firstDir)
	}

	// cp -a of the clone copies the link: the copy must get a cluster of its own, not share the
	// running one.
	copied := filepath.Join(private, "copy", ".gitsec", "pg")
	if out, err := exec.Command("cp", "-a", filepath.Join(private, "clone"), filepath.Join(private, "copy")).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	cp := startCluster(t, copied)
	if cp.Dir() == firstDir || hasTable(t, cp, "kept") {
		t.Fatalf("the copy uses %s with the original's data (original %s)", cp.Dir(), firstDir)
	}
	if err := cp.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := cp.RemoveData(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(copied); !os.IsNotExist(err) {
		t.Fatalf("RemoveData left the link %s (%v)", copied, err)
	}
	if _, err := os.Stat(filepath.Dir(cp.Dir())); !os.IsNotExist(err) {
		t.Fatalf("RemoveData left %s (%v)", filepath.Dir(cp.Dir()), err)
	}

	// Moving the clone keeps its data.
	if err := again.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(private, "clone"), filepath.Join(private, "moved")); err != nil {
		t.Fatal(err)
	}
	moved := startCluster(t, filepath.Join(private, "moved", ".gitsec", "pg"))
	if moved.Dir() != firstDir || !hasTable(t, moved, "kept") {
		t.Fatalf("after a move the cluster is %s (want %s) or lost its data", moved.Dir(), firstDir)
	}
	if err := moved.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	// rm -rf .gitsec means starting from scratch: a new clone at the first path gets an empty
	// cluster, even though the old data once belonged to that path.
	if err := os.RemoveAll(filepath.Join(private, "moved")); err != nil {
		t.Fatal(err)
	}
	fresh := startCluster(t, requested)
	if hasTable(t, fresh, "kept") {
		t.Fatalf("a new clone at %s got the deleted clone's data", requested)
	}
}

// A long data dir path puts the socket in the temp dir; with TMPDIR private to root, it must go
// where the postgres user can create it.
func TestSocketDirWithPrivateTMPDIR(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not running as root: the server can use this user's TMPDIR; checking the socket works")
	}
	scratchRelocationRoot(t)
	private := t.TempDir()
	t.Setenv("TMPDIR", private)
	dir := filepath.Join(reachableTempDirIn(t, "/tmp"), strings.Repeat("d", 60), strings.Repeat("e", 60), "pg")
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, dir)
	if c.SocketDir() == c.Dir() {
		t.Fatalf("socket dir is the data dir %s although its path exceeds the socket limit", c.Dir())
	}
	if got := queryString(t, socketURL(c), "SELECT 'via socket'"); got != "via socket" {
		t.Fatalf("query over socket = %q", got)
	}
}

func TestUnreachableDirWithFilesIsExplained(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not running as root: only root delegates the server to the postgres user, so nothing is unreachable")
	}
	scratchRelocationRoot(t)
	dir := filepath.Join(t.TempDir(), "pg") // the parent is mode 0700, owned by root
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), "already holds files") {
		t.Fatalf("err = %v, want an explanation that the postgres user cannot reach the dir's files", err)
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
