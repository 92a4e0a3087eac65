package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/retention"
)

func newRetentionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "retention", Short: "Retention policies over backup storage (offline)"}
	var flags storageFlags
	var p retention.Policy
	var within string
	var asJSON bool
	plan := &cobra.Command{
		Use:   "plan --storage URL --repository WS/SLUG [--keep-last N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--keep-within DUR] [--json]",
		Short: "List the snapshots a policy would forget and keep, and the bytes it would free (reads storage; deletes nothing)",
		Long: "Loads and verifies every manifest of the repository (a manifest that does not verify stops the plan) and applies\n" +
			"the policy; the newest snapshot is always kept. A snapshot that introduced a pack a kept snapshot lists is kept\n" +
			"too, because bundle exports name intermediate bundles after it. --keep-within takes a Go duration or days (7d).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if within != "" {
				d, err := retention.ParseWithin(within)
				if err != nil {
					return err
				}
				p.KeepWithin = d
			}
			if err := p.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, repo, err := flags.openOne(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			res, err := retention.PlanRepository(ctx, st, repo.key, p, nil)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SNAPSHOT\tDECISION\tWHY")
			for _, d := range res.Decisions {
				decision, why := "forget", "no rule keeps it"
				if d.Keep {
					decision, why = "keep", strings.Join(d.Reasons, "; ")
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", d.ID, decision, why)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: would forget %d of %d snapshots and free %s (dry run: nothing was deleted)\n",
				repo.name(), len(res.Forget), len(res.Decisions), formatBytes(res.BytesFreed))
			return nil
		},
	}
	flags.register(plan)
	f := plan.Flags()
	f.IntVar(&p.KeepLast, "keep-last", 0, "keep the newest N snapshots")
	f.IntVar(&p.KeepDaily, "keep-daily", 0, "keep the newest snapshot of each of the newest N days (UTC)")
	f.IntVar(&p.KeepWeekly, "keep-weekly", 0, "keep the newest snapshot of each of the newest N ISO weeks")
	f.IntVar(&p.KeepMonthly, "keep-monthly", 0, "keep the newest snapshot of each of the newest N months")
	f.IntVar(&p.KeepYearly, "keep-yearly", 0, "keep the newest snapshot of each of the newest N years")
	f.StringVar(&within, "keep-within", "", "keep every snapshot taken within this long before the newest one (72h, 7d)")
	f.BoolVar(&p.KeepBeforeDestructive, "keep-before-destructive", false, "keep every snapshot that is the last before a reference was deleted or force-pushed upstream")
	f.BoolVar(&asJSON, "json", false, `print {"forget":[ids],"keep":[ids],"bytes_freed":N}`)
	cmd.AddCommand(plan)
	return cmd
}
