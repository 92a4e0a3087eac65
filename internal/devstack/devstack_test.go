package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/childprocess"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

// startStack runs the dev stack on free ports, as `gitsec dev` would with its defaults taken.
func startStack(t *testing.T, dir string) *Stack {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	temporal := filepath.Join(root, "bin", "temporal")
	if _, err := os.Stat(temporal); err != nil {
		t.Fatalf("bin/temporal is missing: run scripts/install-tools.sh (%v)", err)
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = childprocess.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	// The emulator lives as long as Start's context.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	timer := time.AfterFunc(3*time.Minute, cancel)
	defer timer.Stop()
	s, err := Start(ctx, Options{
		Dir:            dir,
		TemporalBinary: temporal,
		PostgresPort:   ports[0],
		TemporalPort:   ports[1],
		TemporalUIPort: -1,
		HTTPAddr:       "127.0.0.1:8080",
		EmulatorAddr:   "127.0.0.1:0",
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("start dev stack in %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

func demoTenantID(t *testing.T, s *Stack) string {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, s.Env["GITSEC_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ten, err := st.TenantByTokenHash(ctx, apitoken.Hash(s.Token))
	if err != nil {
		t.Fatalf("the stack's token does not authenticate: %v", err)
	}
	return ten.ID.String()
}

// The README's first command from a clone in root's home directory (mode 0700): the stack comes
// up, and a restart finds the same tenant and token.
func TestStartFromPrivateDirectoryKeepsTenantAndToken(t *testing.T) {
	asRoot := os.Geteuid() == 0
	if !asRoot {
		t.Log("not running as root: Postgres runs as this user, who can reach its own 0700 directory; " +
			"checking only that the stack starts there and a restart keeps its data")
	}
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(private, "gitsec", ".gitsec")

	first := startStack(t, dir)
	t.Cleanup(func() {
		// Stop is idempotent; the data may only go once its server has.
		first.Stop(context.Background())
		if err := first.Postgres.RemoveData(); err != nil {
			t.Errorf("remove the dev cluster: %v", err)
		}
	})
	tenant, token, pgDir := demoTenantID(t, first), first.Token, first.Postgres.Dir()
	envPath, err := first.WriteEnvFile()
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(envPath)
	if err != nil {
		t.Fatal(err)
	}
	if asRoot && !strings.Contains(string(env), "# Postgres data: "+pgDir) {
		t.Errorf("dev.env does not say where the relocated Postgres data is (%s):\n%s", pgDir, env)
	}
	resp, err := http.Get(first.Emulator.URL() + "/2.0/user")
	if err != nil {
		t.Fatalf("emulator with its data in %s: %v", dir, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("emulator GET /2.0/user without a token = %d, want 401", resp.StatusCode)
	}
	for _, log := range []string{"postgres.log", "temporal.log"} {
		if info, err := os.Stat(filepath.Join(dir, log)); err != nil || info.Size() == 0 {
			t.Errorf("%s: %v (want a non-empty server log in %s)", log, err, dir)
		}
	}
	first.Stop(context.Background())

	again := startStack(t, dir)
	if again.Token != token {
		t.Errorf("token after restart differs: the first one was not reused")
	}
	if got := demoTenantID(t, again); got != tenant {
		t.Errorf("demo tenant after restart = %s, want %s", got, tenant)
	}
	if again.Postgres.Dir() != pgDir {
		t.Errorf("postgres data after restart in %s, want %s", again.Postgres.Dir(), pgDir)
	}
	fmt.Fprintf(os.Stderr, "dev stack in %s, postgres data in %s\n", dir, pgDir)
}
