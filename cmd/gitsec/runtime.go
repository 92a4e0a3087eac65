package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/repoexport"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/webhooks"
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

// temporalOptions are the Temporal client options of every process; the SDK's own metrics go
// to the process's registry (nil m: none).
func temporalOptions(cfg config.Config, log *slog.Logger, m *metrics.Metrics) client.Options {
	return client.Options{
		HostPort:       cfg.TemporalAddress,
		Namespace:      cfg.TemporalNamespace,
		Logger:         sdklog.NewStructuredLogger(log.With("component", "temporal")),
		MetricsHandler: m.TemporalMetricsHandler(),
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
	return backupqueue.Settings{TaskQueue: cfg.TaskQueue, QuietPeriod: cfg.BackupQuietPeriod, MaxWait: cfg.BackupMaxWait, HostTimeout: cfg.BackupHostTimeout,
		CatchUpDelay: cfg.ExportCatchUpDelay}
}

// bitbucketOAuth is the backup app's OAuth consumer; nil when none is configured.
func bitbucketOAuth(cfg config.Config) *oauth2.Config {
	if cfg.Bitbucket.ClientID == "" {
		return nil
	}
	return bitbucket.OAuthConfig(cfg.Bitbucket.ClientID, cfg.Bitbucket.ClientSecret, cfg.Bitbucket.OAuthURL, cfg.PublicURL+"/oauth/bitbucket/callback")
}

// restoreOAuth is the Restore App's OAuth consumer; nil when none is configured.
func restoreOAuth(cfg config.Config) *oauth2.Config {
	if cfg.Bitbucket.RestoreClientID == "" {
		return nil
	}
	// Bitbucket takes the scopes from the consumer, not from the authorize request.
	return bitbucket.OAuthConfig(cfg.Bitbucket.RestoreClientID, cfg.Bitbucket.RestoreClientSecret, cfg.Bitbucket.OAuthURL,
		cfg.PublicURL+"/oauth/bitbucket/restore/callback")
}

// serveAPI runs the HTTP API until ctx is cancelled. Temporal is dialled lazily so that the API
// starts (and /readyz says why it is not ready) while Temporal is still coming up. m is served
// at GET /metrics on the API's listener.
func serveAPI(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box, m *metrics.Metrics) error {
	tc, err := client.NewLazyClient(temporalOptions(cfg, log, m))
	if err != nil {
		return fmt.Errorf("temporal client for %s: %w", cfg.TemporalAddress, err)
	}
	defer tc.Close()
	bucket, err := blob.OpenBucket(ctx, cfg.StorageURL)
	if err != nil {
		return fmt.Errorf("open GITSEC_STORAGE_URL: %w", err)
	}
	defer bucket.Close()
	arch, err := archive.Open(ctx, cfg.StorageURL)
	if err != nil {
		return fmt.Errorf("open GITSEC_STORAGE_URL: %w", err)
	}
	defer arch.Close()

	// Every API process acts on the deliveries it receives; one at a time (a lease in Postgres)
	// re-drives the rows left behind.
	dispatcher := &webhooks.Dispatcher{Store: st, Temporal: tc, Backups: backupSettings(cfg), Logger: log.With("component", "webhooks"), Metrics: m}
	dispatchCtx, stopDispatch := context.WithCancel(ctx)
	dispatched := make(chan struct{})
	go func() { defer close(dispatched); _ = dispatcher.Run(dispatchCtx) }()
	defer func() { stopDispatch(); <-dispatched }()

	handler := api.NewHandler(api.Deps{
		Store:          st,
		Checks:         readinessChecks(st, tc, bucket),
		Logger:         log,
		Version:        version,
		PublicURL:      cfg.PublicURL,
		Temporal:       tc,
		TaskQueue:      cfg.TaskQueue,
		Box:            box,
		BitbucketOAuth: bitbucketOAuth(cfg),
		RestoreOAuth:   restoreOAuth(cfg),
		// The API only checks restore targets with it; workers do the writing.
		Clients: &providerclient.Factory{Store: st, Box: box, OAuth: bitbucketOAuth(cfg), RestoreOAuth: restoreOAuth(cfg),
			APIURL: cfg.Bitbucket.APIURL, GitURL: cfg.Bitbucket.GitURL,
			RESTLimiters: bitbucket.NewLimiterRegistry(cfg.Bitbucket.RESTPerHour, bitbucket.DefaultRESTBurst),
			GitLimiters:  bitbucket.NewLimiterRegistry(cfg.Bitbucket.GitPerHour, bitbucket.DefaultGitBurst), Logger: log},
		BitbucketAPIURL: cfg.Bitbucket.APIURL,
		// The callback waits for the code exchange; bound it below the write timeout.
		OAuthHTTPClient: &http.Client{Timeout: oauthExchangeTimeout},
		Backups:         backupSettings(cfg),
		Webhooks:        dispatcher,
		Metrics:         m,
		Archive:         arch,
	})
	srv := newAPIServer(cfg.HTTPAddr, handler)
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

// Timeouts of the API server, sized for its routes: request bodies are at most 1 MiB, every
// handler is a few database queries or a workflow start, the slowest being the OAuth callback's
// code exchange (oauthExchangeTimeout) and /readyz (3 s per check). A client that
// trickles its request, or a keep-alive connection left open, cannot hold a goroutine longer.
const (
	apiReadHeaderTimeout = 10 * time.Second
	apiReadTimeout       = 30 * time.Second
	apiWriteTimeout      = 60 * time.Second
	apiIdleTimeout       = 120 * time.Second
	oauthExchangeTimeout = 30 * time.Second
)

func newAPIServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: apiReadHeaderTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      apiWriteTimeout,
		IdleTimeout:       apiIdleTimeout,
	}
}

// runWorker runs the Temporal worker until ctx is cancelled. Its metrics go to m, which it
// serves on GITSEC_METRICS_ADDR when that is set.
func runWorker(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box, m *metrics.Metrics) error {
	if cfg.MetricsAddr != "" {
		_, stop, err := startMetricsServer(cfg.MetricsAddr, m, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	tc, err := client.DialContext(ctx, temporalOptions(cfg, log, m))
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
	restoreDir, err := filepath.Abs(cfg.RestoreDir)
	if err != nil {
		return fmt.Errorf("GITSEC_RESTORE_DIR: %w", err)
	}
	restLimiters := bitbucket.NewLimiterRegistry(cfg.Bitbucket.RESTPerHour, bitbucket.DefaultRESTBurst)
	gitLimiters := bitbucket.NewLimiterRegistry(cfg.Bitbucket.GitPerHour, bitbucket.DefaultGitBurst)
	m.WatchRateLimits(bitbucket.RequestKindREST, restLimiters.Remaining)
	m.WatchRateLimits(bitbucket.RequestKindGit, gitLimiters.Remaining)
	clients := &providerclient.Factory{
		Store:        st,
		Box:          box,
		OAuth:        bitbucketOAuth(cfg),
		RestoreOAuth: restoreOAuth(cfg),
		APIURL:       cfg.Bitbucket.APIURL,
		GitURL:       cfg.Bitbucket.GitURL,
		RESTLimiters: restLimiters,
		GitLimiters:  gitLimiters,
		Logger:       log,
		OnRequest:    m.BitbucketRequest,
	}
	queue := backupSettings(cfg)
	return worker.Run(ctx, worker.Options{
		Client:    tc,
		TaskQueue: cfg.TaskQueue,
		Activities: worker.Activities{
			Onboarding: &activities.Onboarding{Store: st, Clients: clients, Box: box, PublicURL: cfg.PublicURL, Logger: log},
			Backups: &activities.Backups{
				Store: st, Clients: clients, Archive: arch,
				MirrorDir: mirrorDir, HostQueue: cfg.HostQueue, MirrorMaxBytes: cfg.MirrorMaxBytes,
				Temporal: tc, Queue: queue, Logger: log, Metrics: m,
				Consolidate: archive.ConsolidatePolicy{MaxPacks: cfg.ConsolidateMaxPacks, MaxIncrementalBytes: cfg.ConsolidateMaxBytes},
			},
			Sweeps: &activities.Sweeps{
				Store: st, Clients: clients, Archive: arch, Temporal: tc, Queue: queue, Logger: log,
				Settings: activities.SweepSettings{
					Interval:    cfg.SweepEvery,
					Concurrency: cfg.SweepConcurrency,
					TaskQueue:   cfg.TaskQueue,
				},
			},
			Housekeeping: &activities.Housekeeping{Store: st, Logger: log},
			Uninstall:    &activities.Uninstall{Store: st, Clients: clients},
			Exports:      &activities.Exports{Store: st, Clients: clients, Archive: arch, Settings: exportSettings(cfg), Logger: log},
			Drills:       &activities.Drills{Store: st, Archive: arch, Temporal: tc, TaskQueue: cfg.TaskQueue, Every: cfg.DrillEvery, Logger: log, Metrics: m},
			Retention: &activities.Retention{Store: st, Archive: arch, Temporal: tc, Logger: log,
				Settings: activities.RetentionSettings{Every: cfg.RetentionEvery, Grace: cfg.RetentionGrace, TaskQueue: cfg.TaskQueue}},
			Restores: &activities.Restores{Store: st, Clients: clients, Archive: arch, ScratchDir: restoreDir, PublicURL: cfg.PublicURL, Logger: log},
		},
		HostQueue:            cfg.HostQueue,
		MaxConcurrentBackups: cfg.MaxConcurrentBackups,
		MirrorCleanupEvery:   cfg.MirrorCleanupEvery,
		HousekeepingEvery:    cfg.HousekeepingEvery,
		WebhookDedupWindow:   cfg.WebhookDedupWindow,
		Logger:               log,
	})
}

// Timeouts of the worker's metrics server: a scrape is one gather of the registry, which
// promhttp bounds at 10 s (metrics.Metrics.Handler).
const (
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 120 * time.Second
)

func newMetricsServer(m *metrics.Metrics) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
	}
}

// startMetricsServer serves m at /metrics on addr until stop is called. The port is bound
// before it returns, so a GITSEC_METRICS_ADDR that cannot be used stops the start.
func startMetricsServer(addr string, m *metrics.Metrics, log *slog.Logger) (bound net.Addr, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("GITSEC_METRICS_ADDR: %w", err)
	}
	srv := newMetricsServer(m)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "addr", ln.Addr().String(), "error", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return ln.Addr(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

func exportSettings(cfg config.Config) repoexport.Settings {
	return repoexport.Settings{FullEvery: cfg.ExportFullEvery, Overlap: cfg.ExportOverlap, MaxDuration: cfg.ExportMaxDuration}
}
