// Package devstack starts the dependencies of `gitsec dev` on this machine, without Docker or a
// cloud account: a private Postgres cluster under .gitsec/pg, the Temporal dev server with its Web
// UI and a SQLite history file, and file:// backup storage. It writes the running stack's
// settings to .gitsec/dev.env so that other gitsec commands and scripts can use it, and keeps
// everything under one directory so a second start reuses the data. The one exception: as root,
// when the postgres OS user cannot reach .gitsec (a clone in root's 0700 home), .gitsec/pg is a
// link to the cluster under pgcluster.RelocationRoot.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/pgcluster"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/temporaldev"
	"github.com/gitsec/gitsec/workflows"
)

// DemoTenant is the tenant `gitsec dev` creates so that the first token works at once.
const DemoTenant = "demo"

// Options configure the dev stack. Zero ports mean the documented defaults.
type Options struct {
	// Dir holds all state: pg/, temporal.db, storage/, secrets-key, dev.env, dev-token, logs.
	Dir            string
	TemporalBinary string
	PostgresPort   int
	TemporalPort   int
	TemporalUIPort int
	HTTPAddr       string
	// EmulatorAddr is where the Bitbucket emulator listens; "off" runs without it (real
	// Bitbucket credentials configured).
	EmulatorAddr string
	// EmulatorSeedFile replaces the default demo seed (GITSEC_EMULATOR_SEED).
	EmulatorSeedFile string
	Logger           *slog.Logger
}

// Default ports of the dev stack, documented in the README.
const (
	DefaultPostgresPort   = 55432
	DefaultTemporalPort   = 7233
	DefaultTemporalUIPort = 8233
	DefaultHTTPAddr       = "127.0.0.1:8080"
	DefaultEmulatorAddr   = "127.0.0.1:7990"
)

// EmulatorConsumerKey is the OAuth consumer `gitsec dev` registers in the emulator.
const EmulatorConsumerKey = "gitsec-dev"

// EmulatorRestoreConsumerKey is the Restore App's consumer `gitsec dev` registers beside it.
const EmulatorRestoreConsumerKey = "gitsec-dev-restore"

// RestoreAppScopes are the scopes the Restore App's consumer has ticked.
var RestoreAppScopes = []string{"account", "repository", "repository:write", "repository:admin", "pullrequest", "pullrequest:write"}

// Stack is the running set of dependencies.
type Stack struct {
	Dir      string
	Postgres *pgcluster.Cluster
	Temporal *temporaldev.Server
	// Emulator is the Bitbucket emulator; nil when real Bitbucket is configured.
	Emulator *emulator.Server
	// Env holds the GITSEC_* settings of the running stack, as written to dev.env.
	Env map[string]string
	// Token is a valid API token of the demo tenant.
	Token string
	log   *slog.Logger
	stops []func(context.Context) error
}

// Start brings up Postgres and Temporal, applies migrations and makes sure the demo tenant has
// a valid token. On error everything already started is stopped again. The emulator runs until
// ctx ends, so ctx must last as long as the stack.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	o = withDefaults(o)
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	s := &Stack{Dir: dir, log: o.Logger, Env: map[string]string{}}
	defer func() {
		if err != nil {
			s.Stop(context.Background())
		}
	}()

	o.Logger.Info("starting postgres", "dir", filepath.Join(dir, "pg"), "port", o.PostgresPort)
	s.Postgres, err = pgcluster.Start(ctx, pgcluster.Options{
		Dir:  filepath.Join(dir, "pg"),
		Port: o.PostgresPort,
		// Beside temporal.log, even when the data itself was relocated out of Dir.
		LogFile: filepath.Join(dir, "postgres.log"),
		Logger:  o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s.stops = append(s.stops, s.Postgres.Stop)
	if err := s.Postgres.CreateDatabase(ctx, "gitsec"); err != nil && !strings.Contains(err.Error(), "already exists") {
		return nil, fmt.Errorf("create database gitsec: %w", err)
	}

	o.Logger.Info("starting temporal dev server", "port", o.TemporalPort, "ui_port", o.TemporalUIPort)
	s.Temporal, err = temporaldev.Start(ctx, temporaldev.Options{
		Binary:           o.TemporalBinary,
		DBFile:           filepath.Join(dir, "temporal.db"),
		Port:             o.TemporalPort,
		UIPort:           o.TemporalUIPort,
		Namespace:        "default",
		SearchAttributes: workflows.SearchAttributeTypes(),
		LogFile:          filepath.Join(dir, "temporal.log"),
		Logger:           o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start temporal: %w", err)
	}
	s.stops = append(s.stops, func(context.Context) error { return s.Temporal.Stop() })

	keyURL, err := secretsKey(filepath.Join(dir, "secrets-key"))
	if err != nil {
		return nil, err
	}
	if o.EmulatorAddr != "off" {
		if err := s.startEmulator(ctx, o); err != nil {
			return nil, err
		}
	}
	s.Env["GITSEC_DATABASE_URL"] = s.Postgres.URL("gitsec")
	s.Env["GITSEC_TEMPORAL_ADDRESS"] = s.Temporal.HostPort()
	s.Env["GITSEC_TEMPORAL_NAMESPACE"] = "default"
	s.Env["GITSEC_STORAGE_URL"] = "file://" + filepath.ToSlash(filepath.Join(dir, "storage")) + "?create_dir=true"
	s.Env["GITSEC_SECRETS_KEY_URL"] = keyURL
	s.Env["GITSEC_MIRROR_DIR"] = filepath.Join(dir, "mirrors")
	s.Env["GITSEC_RESTORE_DIR"] = filepath.Join(dir, "restores")
	s.Env["GITSEC_HTTP_ADDR"] = o.HTTPAddr
	s.Env["GITSEC_PUBLIC_URL"] = "http://" + o.HTTPAddr

	st, err := store.Open(ctx, s.Env["GITSEC_DATABASE_URL"])
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return nil, err
	}
	s.Token, err = demoToken(ctx, st, filepath.Join(dir, "dev-token"))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// startEmulator runs the Bitbucket emulator with GitSec's own OAuth consumer, so the two
// always match, and points the stack's Bitbucket settings at it.
func (s *Stack) startEmulator(ctx context.Context, o Options) error {
	seed := emulator.DefaultDemoSeed()
	if o.EmulatorSeedFile != "" {
		var err error
		if seed, err = emulator.LoadSeed(o.EmulatorSeedFile); err != nil {
			return fmt.Errorf("GITSEC_EMULATOR_SEED: %w", err)
		}
	}
	secret, err := persistentRandom(filepath.Join(s.Dir, "emulator-consumer-secret"))
	if err != nil {
		return err
	}
	restoreSecret, err := persistentRandom(filepath.Join(s.Dir, "emulator-restore-consumer-secret"))
	if err != nil {
		return err
	}
	publicURL := "http://" + o.HTTPAddr
	o.Logger.Info("starting bitbucket emulator", "addr", o.EmulatorAddr, "data", filepath.Join(s.Dir, "emulator"))
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen:  o.EmulatorAddr,
		DataDir: filepath.Join(s.Dir, "emulator"),
		Seed:    seed,
		Consumers: []emulator.Consumer{{
			Key: EmulatorConsumerKey, Secret: secret, Name: "GitSec (make dev)",
			CallbackURL: publicURL + "/oauth/bitbucket/callback",
		}, {
			Key: EmulatorRestoreConsumerKey, Secret: restoreSecret, Name: "GitSec Restore App (make dev)",
			CallbackURL: publicURL + "/oauth/bitbucket/restore/callback", Scopes: RestoreAppScopes,
		}},
		Logger: o.Logger,
	})
	if err != nil {
		return fmt.Errorf("start bitbucket emulator on %s: %w", o.EmulatorAddr, err)
	}
	s.Emulator = emu
	s.stops = append(s.stops, func(context.Context) error { return emu.Close() })
	s.Env["GITSEC_BITBUCKET_API_URL"] = emu.URL()
	s.Env["GITSEC_BITBUCKET_OAUTH_URL"] = emu.URL() + "/site/oauth2"
	s.Env["GITSEC_BITBUCKET_GIT_URL"] = emu.URL()
	s.Env["GITSEC_BITBUCKET_CLIENT_ID"] = EmulatorConsumerKey
	s.Env["GITSEC_BITBUCKET_CLIENT_SECRET"] = secret
	s.Env["GITSEC_BITBUCKET_RESTORE_CLIENT_ID"] = EmulatorRestoreConsumerKey
	s.Env["GITSEC_BITBUCKET_RESTORE_CLIENT_SECRET"] = restoreSecret
	if os.Getenv("GITSEC_BITBUCKET_REST_PER_HOUR") == "" {
		// The emulator enforces no budget; Bitbucket's 1,000 calls an hour would make the demo's
		// first pull request exports take many runs. A budget set by the caller still wins.
		s.Env["GITSEC_BITBUCKET_REST_PER_HOUR"] = "200000"
	}
	return nil
}

// persistentRandom returns the hex secret stored at path, creating it on first use.
func persistentRandom(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	v := hex.EncodeToString(buf)
	return v, writeFileAtomic(path, []byte(v+"\n"), 0o600)
}

// WriteEnvFile writes dev.env: a sourceable file of the stack's GITSEC_* variables. It holds the
// local secrets key, so it is readable by the owner only.
func (s *Stack) WriteEnvFile() (string, error) {
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by `gitsec dev` for the running local stack. Use: set -a; . .gitsec/dev.env; set +a\n")
	if pgDir := filepath.Join(s.Dir, "pg"); s.Postgres != nil && s.Postgres.Dir() != pgDir {
		fmt.Fprintf(&b, "# Postgres data: %s (%s links to it; the postgres OS user cannot reach %s)\n", s.Postgres.Dir(), pgDir, s.Dir)
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "%s='%s'\n", k, strings.ReplaceAll(s.Env[k], "'", `'\''`))
	}
	path := filepath.Join(s.Dir, "dev.env")
	return path, writeFileAtomic(path, []byte(b.String()), 0o600)
}

// Stop stops everything Start started, newest first.
func (s *Stack) Stop(ctx context.Context) {
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i](ctx); err != nil {
			s.log.Warn("stop dev stack component", "error", err)
		}
	}
	s.stops = nil
}

func withDefaults(o Options) Options {
	if o.Dir == "" {
		o.Dir = ".gitsec"
	}
	if o.TemporalBinary == "" {
		o.TemporalBinary = filepath.Join("bin", "temporal")
	}
	if o.PostgresPort == 0 {
		o.PostgresPort = DefaultPostgresPort
	}
	if o.TemporalPort == 0 {
		o.TemporalPort = DefaultTemporalPort
	}
	if o.TemporalUIPort == 0 {
		o.TemporalUIPort = DefaultTemporalUIPort
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = DefaultHTTPAddr
	}
	if o.EmulatorAddr == "" {
		o.EmulatorAddr = DefaultEmulatorAddr
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// secretsKey loads the local secrets key, creating it on first start; losing it would make the
// stored OAuth tokens unreadable, so it is kept beside the data it protects.
func secretsKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	u, err := secretbox.NewLocalKeyURL()
	if err != nil {
		return "", err
	}
	return u, writeFileAtomic(path, []byte(u+"\n"), 0o600)
}

// demoToken returns the saved token when it still authenticates, or creates the demo tenant
// (if needed) and a new token.
func demoToken(ctx context.Context, st *store.Store, path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if t, err := st.TenantByTokenHash(ctx, apitoken.Hash(tok)); err == nil && t.Name == DemoTenant {
			return tok, nil
		}
	}
	t, err := st.TenantByName(ctx, DemoTenant)
	if errors.Is(err, store.ErrNotFound) {
		t, err = st.CreateTenant(ctx, DemoTenant)
	}
	if err != nil {
		return "", err
	}
	tok, _, err := st.IssueAPIToken(ctx, t.ID, "make dev "+time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return "", err
	}
	return tok, writeFileAtomic(path, []byte(tok+"\n"), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
