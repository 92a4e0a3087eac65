package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/emulator"
)

func newEmulatorCmd() *cobra.Command {
	var (
		listen   string
		dataDir  string
		seedFile string
		tokenTTL time.Duration
	)
	cmd := &cobra.Command{
		Use:   "emulator",
		Short: "Run the Bitbucket Cloud emulator (REST 2.0, OAuth 2.0, git over HTTP, webhooks, faults)",
		Long: "Run the Bitbucket Cloud emulator used by tests and the demo. The state lives in --data and\n" +
			"survives restarts; the seed (--seed FILE, or the built-in demo world) is applied only when\n" +
			"--data holds no state yet. See docs/emulator.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data is required")
			}
			seed := emulator.DefaultDemoSeed()
			if seedFile != "" {
				s, err := emulator.LoadSeed(seedFile)
				if err != nil {
					return err
				}
				seed = s
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			srv, err := emulator.Start(cmd.Context(), emulator.Options{
				Listen: listen, DataDir: dataDir, Seed: seed, AccessTokenTTL: tokenTTL, Logger: logger,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Bitbucket emulator at %s (REST %s/2.0, OAuth %s/site/oauth2)\n", srv.URL(), srv.URL(), srv.URL())
			<-cmd.Context().Done()
			return srv.Close()
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7990", "address to listen on")
	cmd.Flags().StringVar(&dataDir, "data", "", "state directory (created if missing)")
	cmd.Flags().StringVar(&seedFile, "seed", "", "YAML seed file (default: the built-in demo world)")
	cmd.Flags().DurationVar(&tokenTTL, "token-ttl", 2*time.Hour, "access token lifetime")
	return cmd
}
