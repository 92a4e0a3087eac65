package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob"

	"github.com/gitsec/gitsec/workflows"
)

func TestMain(m *testing.M) {
	os.Exit(Main(m, Needs{Postgres: true, Temporal: true, S3: true}))
}

func TestPostgresDatabasesAreFreshAndSeparate(t *testing.T) {
	ctx := context.Background()
	first, second := Postgres(t), Postgres(t)
	if first == second {
		t.Fatalf("two calls returned the same database %s", first)
	}
	a, err := pgx.Connect(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	if _, err := a.Exec(ctx, "CREATE TABLE only_in_first (v int)"); err != nil {
		t.Fatal(err)
	}
	b, err := pgx.Connect(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	var tables int
	if err := b.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("second database has %d tables, want a fresh one", tables)
	}
}

func TestPostgresDatabaseIsDroppedAfterTheTest(t *testing.T) {
	ctx := context.Background()
	var dbURL string
	t.Run("user", func(t *testing.T) {
		dbURL = Postgres(t)
		// A connection left open must not keep the database from being dropped.
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn
	})
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("database %s still exists after its test ended", dbURL)
	}
	if !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("connect to dropped database: %v, want a does-not-exist error", err)
	}
}

func upsertTenant(ctx workflow.Context, tenant string) (string, error) {
	if err := workflow.UpsertTypedSearchAttributes(ctx, workflows.SearchAttrTenant.ValueSet(tenant)); err != nil {
		return "", err
	}
	return "tenant " + tenant, nil
}

func TestTemporalRunsWorkflowsWithSearchAttributes(t *testing.T) {
	te := Temporal(t)
	if other := Temporal(t); other.TaskQueue == te.TaskQueue {
		t.Fatalf("two calls share task queue %s", te.TaskQueue)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{HostPort: te.HostPort, Namespace: te.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := worker.New(c, te.TaskQueue, worker.Options{})
	w.RegisterWorkflow(upsertTenant)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: te.TaskQueue}, upsertTenant, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var result string
	if err := run.Get(ctx, &result); err != nil {
		t.Fatalf("workflow failed (search attribute not registered?): %v", err)
	}
	if result != "tenant acme" {
		t.Fatalf("result = %q", result)
	}
	desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[workflows.SearchAttrTenant.GetName()]; !ok {
		t.Fatalf("search attribute %s not recorded on the execution", workflows.SearchAttrTenant.GetName())
	}
}

func TestS3BucketsAreFreshAndSeparate(t *testing.T) {
	ctx := context.Background()
	firstURL, secondURL := S3(t), S3(t)
	first, err := blob.OpenBucket(ctx, firstURL)
	if err != nil {
		t.Fatalf("open %s: %v", firstURL, err)
	}
	defer first.Close()
	second, err := blob.OpenBucket(ctx, secondURL)
	if err != nil {
		t.Fatalf("open %s: %v", secondURL, err)
	}
	defer second.Close()

	if err := first.WriteAll(ctx, "k", []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := first.ReadAll(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("read back %q, %v", got, err)
	}
	if exists, err := second.Exists(ctx, "k"); err != nil || exists {
		t.Fatalf("object visible in the other bucket (exists=%v, err=%v)", exists, err)
	}
}

// fatalRecorder stands in for a test to observe require's verdict without ending this test.
type fatalRecorder struct {
	testing.TB
	message string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.message = fmt.Sprintf(format, args...)
}

func TestServerNotRequestedIsAClearFailure(t *testing.T) {
	r := &fatalRecorder{TB: t}
	require(r, "S3", false)
	if !strings.Contains(r.message, "S3: true") {
		t.Fatalf("message = %q, want advice to add S3: true", r.message)
	}
	r = &fatalRecorder{TB: t}
	require(r, "S3", true)
	if r.message != "" {
		t.Fatalf("requested server refused: %q", r.message)
	}
}

func TestUniqueNamesAreValidEverywhere(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`) // S3 bucket rules
	long := strings.Repeat("Very/Long Sub_Test#", 10)
	t.Run(long, func(t *testing.T) {
		bucket := uniqueName(t, "t-", "-", 63)
		if !valid.MatchString(bucket) {
			t.Fatalf("bucket name %q invalid", bucket)
		}
		db := uniqueName(t, "test_", "_", 63)
		if len(db) > 63 || strings.ContainsAny(db, "-/# ") {
			t.Fatalf("database name %q invalid", db)
		}
		if uniqueName(t, "t-", "-", 63) == bucket {
			t.Fatal("two names for one test are equal")
		}
	})
}

func TestAbandonedTempDirsAreRemoved(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := cmd.Process.Pid
	abandoned, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", tempDirPrefix, deadPID))
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(abandoned)
	mine, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", tempDirPrefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(mine)

	removeAbandonedTempDirs()
	if _, err := os.Stat(abandoned); !os.IsNotExist(err) {
		t.Errorf("dir of dead PID %d kept (stat err %v)", deadPID, err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("dir of the running binary removed: %v", err)
	}
	if _, err := os.Stat(env.tempDir); err != nil {
		t.Errorf("this binary's server dir %s removed: %v", env.tempDir, err)
	}
}

func TestRepoRootHoldsGoMod(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
}
