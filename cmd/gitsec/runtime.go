package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/s3blob"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/api"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/config"
	"github.com/gitsec/gitsec/internal/logging"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/worker"
)

// loadConfig reads the configuration and builds the logger every subcommand uses.
func loadConfig() (config.Config, *slog.Logger, error) {
	cfg, err := config.Load()
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("configuration:\n%w", err)
	}
	log := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	slog.SetDefault(log)
	return cfg, log, nil
}

// openStore opens Postgres for the commands that need nothing else (migrate, admin).
func openStore(ctx context.Context) (*store.Store, error) {
	cfg, _, err := loadConfig()
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, cfg.DatabaseURL)
}

func temporalOptions(cfg config.Config, log *slog.Logger) client.Options {
	return client.Options{
		HostPort:  cfg.TemporalAddress,
		Namespace: cfg.TemporalNamespace,
		Logger:    sdklog.NewStructuredLogger(log.With("component", "temporal")),
	}
}

// readinessChecks are the dependencies /readyz reports on.
func readinessChecks(st *store.Store, tc client.Client, bucket *blob.Bucket) []api.Check {
	return []api.Check{
		{Name: "postgres", Fn: st.Ping},
		{Name: "temporal", Fn: func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}},
		{Name: "storage", Fn: func(ctx context.Context) error {
			ok, err := bucket.IsAccessible(ctx)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("bucket is not accessible")
			}
			return nil
		}},
	}
}

func backupSettings(cfg config.Config) backupqueue.Settings {
	return backupqueue.Settings{TaskQueue: cfg.TaskQueue, QuietPeriod: cfg.BackupQuietPeriod, MaxWait: cfg.BackupMaxWait, HostTimeout: cfg.BackupHostTimeout}
}

// bitbucketOAuth is the backup app's OAuth consumer; nil when none is configured.
func bitbucketOAuth(cfg config.Config) *oauth2.Config {
	if cfg.Bitbucket.ClientID == "" {
		return nil
	}
	return bitbucket.OAuthConfig(cfg.Bitbucket.ClientID, cfg.Bitbucket.ClientSecret, cfg.Bitbucket.OAuthURL, cfg.PublicURL+"/oauth/bitbucket/callback")
}

// serveAPI runs the HTTP API until ctx is cancelled. Temporal is dialled lazily so that the API
// starts (and /readyz says why it is not ready) while Temporal is still coming up.
func serveAPI(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box) error {
	tc, err := client.NewLazyClient(temporalOptions(cfg, log))
	if err != nil {
		return fmt.Errorf("temporal client for %s: %w", cfg.TemporalAddress, err)
	}
	defer tc.Close()
	bucket, err := blob.OpenBucket(ctx, cfg.StorageURL)
	if err != nil {
		return fmt.Errorf("open GITSEC_STORAGE_URL: %w", err)
	}
	defer bucket.Close()

	handler := api.NewHandler(api.Deps{
		Store:           st,
		Checks:          readinessChecks(st, tc, bucket),
		Logger:          log,
		Version:         version,
		Temporal:        tc,
		TaskQueue:       cfg.TaskQueue,
		Box:             box,
		BitbucketOAuth:  bitbucketOAuth(cfg),
		BitbucketAPIURL: cfg.Bitbucket.APIURL,
		Backups:         backupSettings(cfg),
	})
	srv := &http.Server{Addr: cfg.HTTPAddr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("api listening", "addr", cfg.HTTPAddr, "public_url", cfg.PublicURL)
	select {
	case err := <-errc:
		return fmt.Errorf("api server on %s: %w", cfg.HTTPAddr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// runWorker runs the Temporal worker until ctx is cancelled.
func runWorker(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box) error {
	tc, err := client.DialContext(ctx, temporalOptions(cfg, log))
	if err != nil {
		return fmt.Errorf("connect to temporal at %s (GITSEC_TEMPORAL_ADDRESS): %w", cfg.TemporalAddress, err)
	}
	defer tc.Close()
	arch, err := archive.Open(ctx, cfg.StorageURL)
	if err != nil {
		return fmt.Errorf("open GITSEC_STORAGE_URL: %w", err)
	}
	defer arch.Close()
	mirrorDir, err := filepath.Abs(cfg.MirrorDir)
	if err != nil {
		return fmt.Errorf("GITSEC_MIRROR_DIR: %w", err)
	}
	return worker.Run(ctx, worker.Options{
		Client:    tc,
		TaskQueue: cfg.TaskQueue,
		Activities: &activities.Activities{
			Store: st,
			Box:   box,
			Clients: &providerclient.Factory{
				Store:        st,
				Box:          box,
				OAuth:        bitbucketOAuth(cfg),
				APIURL:       cfg.Bitbucket.APIURL,
				GitURL:       cfg.Bitbucket.GitURL,
				RESTLimiters: bitbucket.NewLimiterRegistry(cfg.Bitbucket.RESTPerHour, bitbucket.DefaultRESTBurst),
				GitLimiters:  bitbucket.NewLimiterRegistry(cfg.Bitbucket.GitPerHour, bitbucket.DefaultGitBurst),
				Logger:       log,
			},
			PublicURL: cfg.PublicURL,
			Logger:    log,
			Archive:   arch,
			MirrorDir: mirrorDir,
			HostQueue: cfg.HostQueue,
			Temporal:  tc,
			Backups:   backupSettings(cfg),
			Sweep: activities.SweepSettings{
				Interval:    cfg.SweepEvery,
				Concurrency: cfg.SweepConcurrency,
				TaskQueue:   cfg.TaskQueue,
			},
			MirrorMaxBytes: cfg.MirrorMaxBytes,
		},
		HostQueue:            cfg.HostQueue,
		MaxConcurrentBackups: cfg.MaxConcurrentBackups,
		MirrorCleanupEvery:   cfg.MirrorCleanupEvery,
		HousekeepingEvery:    cfg.HousekeepingEvery,
		WebhookDedupWindow:   cfg.WebhookDedupWindow,
		Logger:               log,
	})
}
