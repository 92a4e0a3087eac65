// Package testenv starts the real servers a package's tests need (Postgres, the Temporal dev
// server, an S3 gateway) once per test binary, and hands every test an isolated slice of them: its
// own database, task queue or bucket.
//
// Usage, in one _test.go file of the package:
//
//	func TestMain(m *testing.M) {
//		os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true, S3: true}))
//	}
//
// testenv registers the search attributes of package workflows, so tests inside package
// workflows itself must be an external test package (workflows_test) to use it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/pgcluster"
	"github.com/gitsec/gitsec/internal/s3server"
	"github.com/gitsec/gitsec/internal/temporaldev"
	"github.com/gitsec/gitsec/workflows"
)

// Needs says which servers a test binary starts.
type Needs struct{ Postgres, Temporal, S3 bool }

// TemporalEnv is a test's slice of the shared Temporal dev server.
type TemporalEnv struct{ HostPort, Namespace, TaskQueue string }

// DatabaseURLEnv names an existing Postgres server (a postgres:// URL whose user may create
// databases) used instead of a private cluster.
const DatabaseURLEnv = "GITSEC_TEST_DATABASE_URL"

// temporalNamespace is deliberately not "default", so that code under test that ignores its
// configured namespace fails.
const temporalNamespace = "gitsec-test"

// tempDirPrefix names the per-binary directory; the PID lets a later run remove the directory of
// a binary that died without cleaning up.
const tempDirPrefix = "gitsec-testenv-"

var env struct {
	started     bool
	needs       Needs
	pgAdminURL  string // a database on the server where test databases are created
	temporal    *temporaldev.Server
	s3          *s3server.Server
	cluster     *pgcluster.Cluster
	tempDir     string
	cleanupOnce sync.Once
}

// Main starts the servers in needs, runs the tests and stops everything again. It returns the
// exit code for os.Exit: 1 with the reason on stderr if a server cannot start.
func Main(m *testing.M, needs Needs) int {
	env.needs = needs
	env.started = true
	removeAbandonedTempDirs()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping test servers\n", sig)
		cleanup()
		os.Exit(1)
	}()
	defer cleanup()

	if err := startServers(needs); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1
	}
	return m.Run()
}

func startServers(needs Needs) error {
	if !needs.Postgres && !needs.Temporal && !needs.S3 {
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for _, need := range []struct {
		wanted bool
		name   string
	}{{needs.Temporal, "temporal"}, {needs.S3, "versitygw"}} {
		if _, err := os.Stat(filepath.Join(root, "bin", need.name)); need.wanted && err != nil {
			return fmt.Errorf("bin/%s is missing: run scripts/install-tools.sh (%w)", need.name, err)
		}
	}
	dir, err := os.MkdirTemp("", tempDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return fmt.Errorf("create test server dir: %w", err)
	}
	env.tempDir = dir
	// Postgres runs as the postgres OS user when tests run as root: it must reach its data dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("open test server dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		wg                   sync.WaitGroup
		pgErr, tErr, s3Err   error
		cluster              *pgcluster.Cluster
		temporal             *temporaldev.Server
		s3                   *s3server.Server
		pgAdminURL           string
		accessKey, secretKey = randomHex(10), randomHex(20)
	)
	if needs.Postgres {
		wg.Go(func() {
			if external := os.Getenv(DatabaseURLEnv); external != "" {
				pgAdminURL, pgErr = checkExternalPostgres(ctx, external)
				return
			}
			cluster, pgErr = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "postgres"), SkipFsync: true})
			if pgErr == nil {
				pgAdminURL = cluster.URL("postgres")
			}
		})
	}
	if needs.Temporal {
		wg.Go(func() {
			temporal, tErr = temporaldev.Start(ctx, temporaldev.Options{
				Binary:           filepath.Join(root, "bin", "temporal"),
				UIPort:           -1,
				Namespace:        temporalNamespace,
				SearchAttributes: workflows.SearchAttributeTypes(),
				LogFile:          filepath.Join(dir, "temporal.log"),
			})
		})
	}
	if needs.S3 {
		wg.Go(func() {
			s3, s3Err = s3server.Start(ctx, s3server.Options{
				Binary:    filepath.Join(root, "bin", "versitygw"),
				Dir:       filepath.Join(dir, "s3"),
				AccessKey: accessKey,
				SecretKey: secretKey,
				LogFile:   filepath.Join(dir, "s3.log"),
			})
		})
	}
	wg.Wait()
	env.cluster, env.temporal, env.s3, env.pgAdminURL = cluster, temporal, s3, pgAdminURL
	if err := errors.Join(pgErr, tErr, s3Err); err != nil {
		return fmt.Errorf("cannot start the test servers:\n%w", err)
	}
	if s3 != nil {
		// gocloud's s3blob signs with the AWS default credential chain: the environment comes first.
		for _, kv := range s3.AWSEnv() {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
		// A developer's own AWS session or profile must not mix into these requests.
		os.Unsetenv("AWS_SESSION_TOKEN")
		os.Unsetenv("AWS_PROFILE")
	}
	return nil
}

func checkExternalPostgres(ctx context.Context, adminURL string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("%s must be a postgres:// URL", DatabaseURLEnv)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s (%s): %w", DatabaseURLEnv, u.Redacted(), err)
	}
	conn.Close(ctx)
	return adminURL, nil
}

// cleanup stops every server and removes their directory; it runs once, from Main's return or
// from a signal, whichever comes first.
func cleanup() {
	env.cleanupOnce.Do(func() {
		var wg sync.WaitGroup
		if env.temporal != nil {
			wg.Go(func() { report(env.temporal.Stop()) })
		}
		if env.s3 != nil {
			wg.Go(func() { report(env.s3.Stop()) })
		}
		if env.cluster != nil {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				report(env.cluster.Stop(ctx))
				// As root with a private TMPDIR the cluster was relocated out of tempDir.
				report(env.cluster.RemoveData())
			})
		}
		wg.Wait()
		if env.tempDir != "" {
			report(os.RemoveAll(env.tempDir))
		}
	})
}

func report(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	}
}

// removeAbandonedTempDirs deletes the directories of earlier test binaries that were killed
// (a panic or -timeout skips deferred cleanup); their servers died with them.
func removeAbandonedTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), tempDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

func require(t testing.TB, what string, needed bool) {
	t.Helper()
	if !env.started {
		t.Fatalf("testenv.%s: this package has no TestMain calling testenv.Main", what)
	}
	if !needed {
		t.Fatalf("testenv.%s: this package's TestMain did not ask for it: add %s: true to testenv.Needs", what, what)
	}
}

// Postgres returns the URL of a new, empty database for this test, dropped when it ends.
func Postgres(t testing.TB) string {
	t.Helper()
	require(t, "Postgres", env.needs.Postgres)
	name := uniqueName(t, "test_", "_", 63)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		// FORCE: a test that leaves a pool open must not keep its database alive.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	u, err := url.Parse(env.pgAdminURL)
	if err != nil {
		t.Fatalf("testenv: parse admin URL: %v", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, env.pgAdminURL)
	if err != nil {
		return fmt.Errorf("connect to the test postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// Temporal returns the shared dev server's address and namespace with a task queue of this
// test's own, so that its workers never pick up another test's tasks.
func Temporal(t testing.TB) TemporalEnv {
	t.Helper()
	require(t, "Temporal", env.needs.Temporal)
	return TemporalEnv{
		HostPort:  env.temporal.HostPort(),
		Namespace: env.temporal.Namespace(),
		TaskQueue: uniqueName(t, "test-", "-", 100),
	}
}

// S3 returns the gocloud.dev/blob URL of a new, empty bucket for this test. Credentials are in
// the process environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), where s3blob looks.
func S3(t testing.TB) string {
	t.Helper()
	require(t, "S3", env.needs.S3)
	name := uniqueName(t, "t-", "-", 63)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.s3.CreateBucket(ctx, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return env.s3.BucketURL(name)
}

// RepoRoot returns the directory holding go.mod, searching upwards from the working directory
// (a package's directory under `go test`).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// uniqueName derives a name from the test's name (to recognise it in server logs) with a random
// suffix, restricted to lowercase letters, digits and sep so that it is valid as a database,
// bucket or task queue name.
func uniqueName(t testing.TB, prefix, sep string, maxLen int) string {
	suffix := sep + randomHex(4)
	var b strings.Builder
	lastSep := true
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			lastSep = false
		} else if !lastSep {
			b.WriteString(sep)
			lastSep = true
		}
	}
	base := strings.TrimSuffix(b.String(), sep)
	if room := maxLen - len(prefix) - len(suffix); len(base) > room {
		base = strings.TrimSuffix(base[:room], sep)
	}
	return prefix + base + suffix
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("testenv: read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}
