// Command gitsec is the one GitSec binary: API server, Temporal worker, migrations, the local
// dev stack, the Bitbucket emulator and the offline backup tools are all subcommands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile, err := startProfile()
	if err == nil {
		err = newRootCmd().ExecuteContext(ctx)
		endProfile()
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitsec:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gitsec",
		Short:         "GitSec backs up Git hosting accounts (Bitbucket Cloud) into object storage",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each subcommand lives in its own file as newXxxCmd.
	root.AddCommand(
		newVersionCmd(),
		newSnapshotsCmd(),
		newRestoreCmd(),
		newExportBundlesCmd(),
		newPullRequestsCmd(),
		newExportHTMLCmd(),
		newEmulatorCmd(),
		newAPICmd(),
		newWorkerCmd(),
		newMigrateCmd(),
		newAdminCmd(),
		newDevCmd(),
		newBenchCmd(),
		newRetentionCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the GitSec version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "gitsec", version)
		},
	}
}
