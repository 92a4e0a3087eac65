package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/config"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
)

// service is what `gitsec api` and `gitsec worker` run once configuration, the secrets keeper,
// Postgres and the process's metrics registry are open.
type service func(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box, m *metrics.Metrics) error

func newServiceCmd(use, short string, run service) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, log, err := loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.RequireSecretsKey(); err != nil {
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
			// One registry per process; closed after run has closed its Temporal client.
			m := metrics.New(version)
			defer m.Close()
			return run(ctx, cfg, log, st, box, m)
		},
	}
}

func newAPICmd() *cobra.Command {
	return newServiceCmd("api", "Run the HTTP API server", serveAPI)
}

func newWorkerCmd() *cobra.Command {
	return newServiceCmd("worker", "Run the Temporal worker (workflows, activities, schedules)", runWorker)
}
