package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/archive"
)

type restoreFlags struct {
	snapshotFlags
	to string
}

func (f *restoreFlags) register(cmd *cobra.Command) {
	f.snapshotFlags.register(cmd)
	cmd.Flags().StringVar(&f.to, "to", "", "target directory; must not exist or be empty")
}

func (f *restoreFlags) check() error {
	if err := checkSnapshotFlag(f.snapshot); err != nil {
		return err
	}
	if f.to == "" {
		return fmt.Errorf("--to is required")
	}
	entries, err := os.ReadDir(f.to)
	if err == nil && len(entries) > 0 {
		return fmt.Errorf("--to %q is not empty", f.to)
	}
	if err == nil || os.IsNotExist(err) {
		return nil
	}
	return fmt.Errorf("--to %q: %w", f.to, err)
}

func newRestoreCmd() *cobra.Command {
	var flags restoreFlags
	var bundle, pins bool
	cmd := &cobra.Command{
		Use:   "restore --storage URL --repository UUID|WORKSPACE/SLUG [--snapshot ID|latest] --to DIR [--bundle] [--pull-request-refs]",
		Short: "Restore a snapshot as a bare repository, or as git bundles with --bundle (offline)",
		Long: "Restore a snapshot from backup storage without the GitSec service. Without --bundle, DIR becomes a bare\n" +
			"repository whose references and HEAD equal the snapshot's (push it anywhere with `git push --mirror`).\n" +
			"With --bundle, DIR receives a chain of git bundles that stock git restores (see export-bundles).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bundle {
				return runExportBundles(cmd, &flags)
			}
			if err := flags.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, repo, err := flags.openOne(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restoring %s snapshot %s into %s\n", repo.name(), flags.snapshot, flags.to)
			m, err := st.Restore(ctx, repo.key, flags.snapshot, flags.to, progressPrinter(out, "downloading"))
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "restored snapshot %s (%s): %d refs, HEAD %s, %d packs, %s\n",
				m.ID, m.Repository.FullName, len(m.Refs), orNone(m.Head), len(m.Packs), formatBytes(m.Totals.Bytes))
			if pins {
				if err := archive.WritePins(flags.to, m); err != nil {
					return err
				}
				fmt.Fprintf(out, "wrote %d pull request source refs under %s\n", len(m.Pins), archive.PinRefPrefix)
			}
			return nil
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVar(&bundle, "bundle", false, "write the snapshot as a chain of git bundles into DIR instead")
	cmd.Flags().BoolVar(&pins, "pull-request-refs", false, "also write GitSec's pins ("+archive.PinRefPrefix+"<id>/head): the source commits of pull requests whose branch is gone or in a fork")
	return cmd
}

func newExportBundlesCmd() *cobra.Command {
	var flags restoreFlags
	cmd := &cobra.Command{
		Use:   "export-bundles --storage URL --repository UUID|WORKSPACE/SLUG [--snapshot ID|latest] --to DIR",
		Short: "Write a snapshot as git bundles that stock git can restore (offline)",
		Long: "Write a snapshot as a chain of git bundles, 0001.bundle, 0002.bundle, ... Restore them with git alone:\n\n" +
			"  git clone --mirror DIR/0001.bundle repo.git\n" +
			"  git -C repo.git fetch --prune DIR/0002.bundle '+refs/*:refs/*'   # each further bundle, in order\n\n" +
			"The last bundle carries the snapshot's references; after it repo.git equals the snapshot.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExportBundles(cmd, &flags)
		},
	}
	flags.register(cmd)
	return cmd
}

func runExportBundles(cmd *cobra.Command, flags *restoreFlags) error {
	if err := flags.check(); err != nil {
		return err
	}
	ctx := cmd.Context()
	st, err := flags.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	repo, err := flags.findOneRepository(ctx, st)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "exporting %s snapshot %s as bundles into %s\n", repo.name(), flags.snapshot, flags.to)
	paths, m, err := st.ExportBundles(ctx, repo.key, flags.snapshot, flags.to, progressPrinter(out, "writing"))
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fmt.Fprintf(out, "snapshot %s is of an empty repository: no bundle to write\n", m.ID)
		return nil
	}
	fmt.Fprintf(out, "wrote %d bundles for snapshot %s (%d refs); restore with:\n", len(paths), m.ID, len(m.Refs))
	fmt.Fprintf(out, "  git clone --mirror %s repo.git\n", paths[0])
	for _, p := range paths[1:] {
		fmt.Fprintf(out, "  git -C repo.git fetch --prune %s '+refs/*:refs/*'\n", p)
	}
	return nil
}

// progressPrinter prints one line per file. On a terminal the start line is
// overwritten by the bytes moved so far and then by the finished one;
// elsewhere (logs, pipes) the start and the end are plain lines.
func progressPrinter(out io.Writer, verb string) func(archive.TransferEvent) {
	terminal := false
	if f, ok := out.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			terminal = true
		}
	}
	return func(ev archive.TransferEvent) {
		switch {
		case !ev.Done && ev.Bytes > 0 && terminal:
			fmt.Fprintf(out, "\r[%d/%d] %s %s (%s of %s)...", ev.Index, ev.Count, verb, ev.Name, formatBytes(ev.Bytes), formatBytes(ev.Size))
		case !ev.Done && ev.Bytes > 0:
			// Logs and pipes get the start and end lines only.
		case !ev.Done && terminal:
			fmt.Fprintf(out, "\r[%d/%d] %s %s (%s)...", ev.Index, ev.Count, verb, ev.Name, formatBytes(ev.Size))
		case !ev.Done:
			fmt.Fprintf(out, "[%d/%d] %s %s (%s)\n", ev.Index, ev.Count, verb, ev.Name, formatBytes(ev.Size))
		case terminal:
			fmt.Fprintf(out, "\r\033[K[%d/%d] %s (%s) done\n", ev.Index, ev.Count, ev.Name, formatBytes(ev.Size))
		default:
			fmt.Fprintf(out, "[%d/%d] %s done\n", ev.Index, ev.Count, ev.Name)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
