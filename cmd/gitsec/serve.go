package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/config"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
)

// service is what `gitsec api` and `gitsec worker` run once configuration, the secrets keeper
// and Postgres are open.
type service func(ctx context.Context, cfg config.Config, log *slog.Logger, st *store.Store, box *secretbox.Box) error

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
			return run(ctx, cfg, log, st, box)
		},
	}
}

func newAPICmd() *cobra.Command {
	return newServiceCmd("api", "Run the HTTP API server", serveAPI)
}

func newWorkerCmd() *cobra.Command {
	return newServiceCmd("worker", "Run the Temporal worker (workflows, activities, schedules)", runWorker)
}
