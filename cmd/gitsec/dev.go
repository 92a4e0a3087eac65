package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/gitsec/gitsec/internal/devstack"
	"github.com/gitsec/gitsec/internal/logging"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
)

func newDevCmd() *cobra.Command {
	var o devstack.Options
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole local stack in the foreground: Postgres, Temporal (UI on :8233), API and worker",
		Long: `Runs GitSec on this machine with embedded defaults and no Docker: a private Postgres
cluster under .gitsec/pg, the Temporal dev server (history in .gitsec/temporal.db, Web UI on
:8233), file:// storage in .gitsec/storage, the API and the worker. The stack's settings are
written to .gitsec/dev.env and a token of the "demo" tenant to .gitsec/dev-token; server logs go
to .gitsec/postgres.log and .gitsec/temporal.log. Ctrl-C stops everything; the next start reuses
the data. As root, when the postgres OS user cannot reach .gitsec (a clone in root's 0700 home),
the cluster lives in /var/lib/gitsec/postgres/<hash of the path>/data and .gitsec/pg links to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", ".gitsec", "directory holding all local state")
	f.StringVar(&o.TemporalBinary, "temporal-binary", filepath.Join("bin", "temporal"), "path of the Temporal CLI")
	f.IntVar(&o.PostgresPort, "postgres-port", devstack.DefaultPostgresPort, "port of the private Postgres cluster")
	f.IntVar(&o.TemporalPort, "temporal-port", devstack.DefaultTemporalPort, "Temporal frontend port")
	f.IntVar(&o.TemporalUIPort, "temporal-ui-port", devstack.DefaultTemporalUIPort, "Temporal Web UI port")
	f.StringVar(&o.HTTPAddr, "http-addr", devstack.DefaultHTTPAddr, "API listen address")
	f.StringVar(&o.EmulatorAddr, "emulator-addr", devstack.DefaultEmulatorAddr, `Bitbucket emulator listen address ("off" to disable)`)
	return cmd
}

func runDev(ctx context.Context, o devstack.Options) error {
	started := time.Now()
	o.Logger = logging.New(os.Stderr, levelFromEnv(), "text")
	o.EmulatorSeedFile = os.Getenv("GITSEC_EMULATOR_SEED")
	if os.Getenv("GITSEC_BITBUCKET_CLIENT_ID") != "" {
		// Real Bitbucket credentials are configured: talk to Bitbucket, not the emulator.
		o.EmulatorAddr = "off"
	}
	if _, err := os.Stat(o.TemporalBinary); err != nil {
		return fmt.Errorf("temporal CLI not found at %s: run `make dev` (it installs it) or pass --temporal-binary", o.TemporalBinary)
	}
	stack, err := devstack.Start(ctx, o)
	if err != nil {
		return err
	}
	defer stack.Stop(context.Background())

	envPath, err := stack.WriteEnvFile()
	if err != nil {
		return err
	}
	// The stack's own settings win over the caller's environment; the rest (log level, real
	// Bitbucket credentials, ...) is inherited.
	for k, v := range stack.Env {
		os.Setenv(k, v)
	}
	cfg, log, err := loadConfig()
	if err != nil {
		return err
	}
	box, err := secretbox.Open(ctx, cfg.SecretsKeyURL)
	if err != nil {
		return err
	}
	defer box.Close()
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()

	// One process, one registry: the API's /metrics shows the worker's metrics too.
	m := metrics.New(version)
	defer m.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveAPI(gctx, cfg, log, st, box, m) })
	g.Go(func() error { return runWorker(gctx, cfg, log, st, box, m) })

	loginLink, linkErr := devLoginLink(ctx, st, cfg.PublicURL)
	dashboardLine := "(no link: " + linkErr + ")"
	if loginLink != "" {
		dashboardLine = loginLink + "   (signs in once, for 10 minutes; another: gitsec admin login-link --tenant " + devstack.DemoTenant + ")"
	}
	fmt.Printf(`
GitSec dev stack is up (%s)
  Dashboard    %s
  API          http://%s   (try: curl http://%s/readyz)
  Metrics      http://%s/metrics   (API and worker, Prometheus text format)
  Temporal UI  %s
  Temporal     %s  namespace %s
  Postgres     %s
  Storage      %s
  Settings     %s   (set -a; . %s; set +a)
  API token    %s   (saved in %s)
  Try:         curl -H "Authorization: Bearer $(cat %s)" http://%s/api/v1/me
  Bitbucket    %s
Press Ctrl-C to stop everything.
`, time.Since(started).Round(100*time.Millisecond), dashboardLine, cfg.HTTPAddr, cfg.HTTPAddr, cfg.HTTPAddr, stack.Temporal.UIURL(), cfg.TemporalAddress, cfg.TemporalNamespace,
		postgresLine(stack), cfg.StorageURL, envPath, envPath, stack.Token, filepath.Join(stack.Dir, "dev-token"),
		filepath.Join(stack.Dir, "dev-token"), cfg.HTTPAddr, bitbucketLine(stack, cfg.Bitbucket.APIURL))

	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	fmt.Println("stopping the dev stack ...")
	return err
}

func postgresLine(s *devstack.Stack) string {
	if link := filepath.Join(s.Dir, "pg"); s.Postgres.Dir() != link {
		return fmt.Sprintf("127.0.0.1:%d (data in %s, linked from %s)", s.Postgres.Port(), s.Postgres.Dir(), link)
	}
	return fmt.Sprintf("127.0.0.1:%d (data in %s)", s.Postgres.Port(), s.Postgres.Dir())
}

func levelFromEnv() slog.Level {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(os.Getenv("GITSEC_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return lvl
}

func bitbucketLine(s *devstack.Stack, apiURL string) string {
	if s.Emulator == nil {
		return apiURL + " (real Bitbucket: GITSEC_BITBUCKET_CLIENT_ID is set)"
	}
	return s.Emulator.URL() + " (emulator, demo seed; connect the demo account as shown in README \"Connect Bitbucket\")"
}

// devLoginLink signs the person who ran `make dev` into the demo tenant's dashboard; a failure
// is printed in the banner rather than stopping the stack.
func devLoginLink(ctx context.Context, st *store.Store, publicURL string) (link, problem string) {
	t, err := st.TenantByName(ctx, devstack.DemoTenant)
	if err == nil {
		link, _, err = websession.IssueLoginLink(ctx, st, t.ID, publicURL, websession.Home, time.Now())
	}
	if err != nil {
		return "", err.Error()
	}
	return link, ""
}
