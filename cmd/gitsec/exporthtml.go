package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/prsite"
)

func newExportHTMLCmd() *cobra.Command {
	var flags restoreFlags
	cmd := &cobra.Command{
		Use:   "export-html --storage URL --repository UUID|WORKSPACE/SLUG [--snapshot ID|latest] --to DIR",
		Short: "Write a snapshot's pull requests and repository settings as a static web site (offline)",
		Long: "Write a snapshot's pull requests and repository metadata as static HTML pages: DIR/index.html lists the\n" +
			"pull requests by state with the repository's settings, DIR/pr/<id>.html shows one pull request with its\n" +
			"review, threaded comments, tasks, activity and commits. The pages run no script and load nothing from the\n" +
			"network; texts are shown as stored (raw Markdown), escaped. Reads storage only: no Postgres, no Temporal.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flags.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, repo, m, err := flags.openSnapshot(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			res, err := prsite.Write(ctx, st, m, flags.to)
			if err != nil {
				return exportError(err, m, "pull request")
			}
			warnIncomplete(cmd.ErrOrStderr(), m, res.Export)
			out := cmd.OutOrStdout()
			if !res.Metadata {
				fmt.Fprintf(out, "snapshot %s has no metadata export: the index shows pull requests only\n", m.ID)
			}
			fmt.Fprintf(out, "wrote %d pull requests of %s (snapshot %s); open %s\n", res.PullRequests, repo.name(), m.ID, res.Index)
			return nil
		},
	}
	flags.register(cmd)
	return cmd
}
