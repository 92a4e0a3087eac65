package main

import (
	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
)

func newAPICmd() *cobra.Command {
	return &cobra.Command{
		Use:   "api",
		Short: "Run the HTTP API server",
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
			return serveAPI(ctx, cfg, log, st, box)
		},
	}
}

func newWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "Run the Temporal worker (workflows, activities, schedules)",
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
			return runWorker(ctx, cfg, log, st, box)
		},
	}
}
