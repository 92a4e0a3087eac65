package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/benchmark"
)

func newBenchCmd() *cobra.Command {
	var o benchmark.Options
	var quick bool
	var workloads, render string
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--runs N] [--workloads W1,W4] [--profile DIR] [--markdown FILE] [--json FILE]",
		Short: "Measure GitSec against stock git on the real local stack (what `make bench` runs)",
		Long: "Starts Postgres, the Temporal dev server, versitygw and the Bitbucket emulator, runs `gitsec worker` as its own\n" +
			"process and times every workload side by side with its git baseline. GITSEC_BENCH_REPO=/path/to/bare.git\n" +
			"imports a real repository as the medium one. See docs/benchmarks.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if render != "" {
				if err := benchmark.Render(render, o.Markdown); err != nil {
					return fmt.Errorf("bench --render: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s from %s\n", o.Markdown, render)
				return nil
			}
			if quick {
				o.Scale = "quick"
			}
			if workloads != "" {
				o.Workloads = strings.Split(strings.ToUpper(workloads), ",")
			}
			o.Repo = os.Getenv("GITSEC_BENCH_REPO")
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Binary = exe
			if o.ToolsDir == "" {
				o.ToolsDir = filepath.Join(filepath.Dir(exe))
			}
			o.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			rep, err := benchmark.Run(cmd.Context(), o)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "benchmark done in %s: %d cases", time.Duration(rep.DurationSeconds*float64(time.Second)).Round(time.Second), len(rep.Cases))
			if o.Markdown != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "; wrote %s", o.Markdown)
			}
			if o.JSON != "" {
				fmt.Fprintf(cmd.OutOrStdout(), " and %s", o.JSON)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "scaled-down repositories and fewer small ones: a few minutes instead of about an hour")
	f.StringVar(&o.Scale, "scale", "full", "full, quick or tiny (tiny is the smoke test's)")
	f.IntVar(&o.Runs, "runs", 3, "runs per side of every timed workload")
	f.StringVar(&workloads, "workloads", "", "comma-separated subset of W1..W7 (default: all)")
	f.StringVar(&o.ProfileDir, "profile", "", "write CPU and heap profiles of the GitSec side of each workload to DIR")
	f.StringVar(&o.Markdown, "markdown", "docs/benchmarks.md", "Markdown report (\"\" for none)")
	f.StringVar(&o.JSON, "json", "bench-results.json", "JSON results (\"\" for none)")
	f.StringVar(&o.ToolsDir, "tools", "", "directory holding the temporal and versitygw binaries (default: beside this executable)")
	f.StringVar(&render, "render", "", "only rewrite the Markdown report from this bench-results.json (no measuring)")
	f.StringVar(&o.WorkDir, "work-dir", "", "where the servers and repositories live during the run (default: a temporary directory)")
	cmd.AddCommand(newGoGitCloneCmd())
	return cmd
}

// newGoGitCloneCmd is the benchmark's go-git baseline: a plain mirror clone into filesystem
// storage, the approach other Go backup tools take. The token comes on stdin, never in argv.
func newGoGitCloneCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gogit-clone URL DIR",
		Short:  "Mirror-clone URL into DIR with go-git (benchmark baseline; token on stdin)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			token, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
			if err != nil {
				return err
			}
			var auth *githttp.BasicAuth
			if t := strings.TrimSpace(string(token)); t != "" {
				auth = &githttp.BasicAuth{Username: "x-token-auth", Password: t}
			}
			_, err = git.PlainCloneContext(cmd.Context(), args[1], true, &git.CloneOptions{URL: args[0], Auth: auth, Mirror: true})
			if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
				return fmt.Errorf("go-git clone %s: %w", args[0], err)
			}
			return nil
		},
	}
}
