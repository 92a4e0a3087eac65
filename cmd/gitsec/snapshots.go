package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/archive"
)

// storageFlags are shared by the offline backup commands: they read object
// storage only, never Postgres or Temporal, so they work while the service is
// down.
type storageFlags struct {
	storage    string
	tenant     string
	repository string
}

func (f *storageFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.storage, "storage", "", "backup storage URL (file:///DIR, s3://BUCKET?region=..., gs://BUCKET, azblob://CONTAINER); defaults to $GITSEC_STORAGE_URL")
	cmd.Flags().StringVar(&f.tenant, "tenant", "", "tenant ID (default: search every tenant)")
	cmd.Flags().StringVar(&f.repository, "repository", "", "repository UUID, or WORKSPACE/SLUG as named in its latest snapshot")
}

func (f *storageFlags) open(ctx context.Context) (*archive.Store, error) {
	url := f.storage
	if url == "" {
		url = os.Getenv("GITSEC_STORAGE_URL")
	}
	if url == "" {
		return nil, fmt.Errorf("--storage is required (or set GITSEC_STORAGE_URL)")
	}
	return archive.Open(ctx, url)
}

// backedUpRepository is one repository found in storage, with its newest
// manifest (nil when it has no snapshot).
type backedUpRepository struct {
	key    archive.RepoKey
	latest *archive.Manifest
}

func (r backedUpRepository) name() string {
	if r.latest != nil && r.latest.Repository.FullName != "" {
		return r.latest.Repository.FullName
	}
	return r.key.UUID
}

// findRepositories lists the backed-up repositories matching the flags.
func (f *storageFlags) findRepositories(ctx context.Context, st *archive.Store) ([]backedUpRepository, error) {
	tenants := []string{f.tenant}
	if f.tenant == "" {
		var err error
		if tenants, err = st.ListTenants(ctx); err != nil {
			return nil, err
		}
	} else if _, err := archive.NewRepoKey(f.tenant, "x"); err != nil {
		return nil, fmt.Errorf("--tenant %q is not a valid tenant ID", f.tenant)
	}
	byName := strings.Contains(f.repository, "/")
	if f.repository != "" && !byName {
		if _, err := archive.NewRepoKey("x", f.repository); err != nil {
			return nil, fmt.Errorf("--repository %q is neither a repository UUID nor WORKSPACE/SLUG", f.repository)
		}
	}
	wantUUID := archive.NormalizeUUID(f.repository)

	var found []backedUpRepository
	for _, tenant := range tenants {
		keys, err := st.ListRepositories(ctx, tenant)
		if err != nil {
			return nil, err
		}
		for _, key := range keys {
			if f.repository != "" && !byName && key.UUID != wantUUID {
				continue
			}
			latest, err := st.LoadManifest(ctx, key, "latest")
			if err != nil {
				latest = nil
			}
			if byName && (latest == nil || !strings.EqualFold(latest.Repository.FullName, f.repository)) {
				continue
			}
			found = append(found, backedUpRepository{key: key, latest: latest})
		}
	}
	return found, nil
}

// findOneRepository is findRepositories for commands that act on exactly one.
func (f *storageFlags) findOneRepository(ctx context.Context, st *archive.Store) (backedUpRepository, error) {
	if f.repository == "" {
		return backedUpRepository{}, fmt.Errorf("--repository is required")
	}
	found, err := f.findRepositories(ctx, st)
	if err != nil {
		return backedUpRepository{}, err
	}
	switch len(found) {
	case 0:
		where := "in any tenant"
		if f.tenant != "" {
			where = "in tenant " + f.tenant
		}
		return backedUpRepository{}, fmt.Errorf("no backed-up repository matches --repository %q %s", f.repository, where)
	case 1:
		return found[0], nil
	}
	var tenants []string
	for _, r := range found {
		tenants = append(tenants, r.key.Tenant+"/"+r.key.UUID)
	}
	return backedUpRepository{}, fmt.Errorf("--repository %q matches %d repositories (%s): pass --tenant or the UUID", f.repository, len(found), strings.Join(tenants, ", "))
}

// openOne opens the storage and finds the one repository the flags name; the caller closes
// the store.
func (f *storageFlags) openOne(ctx context.Context) (*archive.Store, backedUpRepository, error) {
	st, err := f.open(ctx)
	if err != nil {
		return nil, backedUpRepository{}, err
	}
	repo, err := f.findOneRepository(ctx, st)
	if err != nil {
		st.Close()
		return nil, backedUpRepository{}, err
	}
	return st, repo, nil
}

func newSnapshotsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshots", Short: "Inspect the snapshots in backup storage (offline)"}
	var flags storageFlags
	list := &cobra.Command{
		Use:   "list --storage URL [--tenant ID] [--repository UUID|WORKSPACE/SLUG]",
		Short: "List snapshots, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := flags.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			repos, err := flags.findRepositories(ctx, st)
			if err != nil {
				return err
			}
			if len(repos) == 0 {
				if flags.repository != "" {
					return fmt.Errorf("no backed-up repository matches --repository %q", flags.repository)
				}
				fmt.Fprintln(cmd.OutOrStdout(), "no backups in this storage")
				return nil
			}
			return listSnapshots(ctx, cmd.OutOrStdout(), st, repos)
		},
	}
	flags.register(list)
	cmd.AddCommand(list)
	return cmd
}

func listSnapshots(ctx context.Context, out io.Writer, st *archive.Store, repos []backedUpRepository) error {
	for i, repo := range repos {
		if i > 0 {
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "%s  (tenant %s, repository %s)\n", repo.name(), repo.key.Tenant, repo.key.UUID)
		ids, err := st.ListSnapshots(ctx, repo.key)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tTRIGGER\tREFS\tPACKS\tSIZE")
		for _, id := range ids {
			m, err := st.LoadManifest(ctx, repo.key, id)
			if err != nil {
				fmt.Fprintf(tw, "%s\t(unreadable: %v)\t\t\t\t\n", id, err)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", m.ID, m.Created.UTC().Format(time.RFC3339),
				m.Trigger.Kind, m.Totals.Refs, m.Totals.Packs, formatBytes(m.Totals.Bytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	value, exp := float64(n)/unit, 0
	for value >= unit && exp < 4 {
		value /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", value, "KMGTP"[exp])
}
