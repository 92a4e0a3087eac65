package main

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
)

var tenantNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func checkTenantName(name string) error {
	if !tenantNamePattern.MatchString(name) {
		return fmt.Errorf("tenant name %q is invalid: use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Operator tasks: tenants, API tokens, keys"}

	cmd.AddCommand(&cobra.Command{
		Use:   "create-tenant NAME",
		Short: "Create a tenant and print its first API token (shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkTenantName(name); err != nil {
				return err
			}
			st, err := openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.CreateTenant(cmd.Context(), name)
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("tenant %q already exists; use `gitsec admin create-token --tenant %s` for another token", name, name)
			}
			if err != nil {
				return err
			}
			token, _, err := st.IssueAPIToken(cmd.Context(), t.ID, "initial")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created tenant %s (%s); its API token follows and is shown only once\n", t.Name, t.ID)
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	})

	var tenant, tokenName string
	createToken := &cobra.Command{
		Use:   "create-token --tenant NAME",
		Short: "Create another API token for a tenant (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTenantName(tenant); err != nil {
				return err
			}
			st, err := openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.TenantByName(cmd.Context(), tenant)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("tenant %q does not exist; create it with `gitsec admin create-tenant %s`", tenant, tenant)
			}
			if err != nil {
				return err
			}
			token, _, err := st.IssueAPIToken(cmd.Context(), t.ID, tokenName)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	createToken.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
	createToken.Flags().StringVar(&tokenName, "name", "", "a label for the token")
	_ = createToken.MarkFlagRequired("tenant")
	cmd.AddCommand(createToken)

	cmd.AddCommand(&cobra.Command{
		Use:   "new-secrets-key",
		Short: "Print a fresh base64key:// URL for GITSEC_SECRETS_KEY_URL (local use)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := secretbox.NewLocalKeyURL()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), u)
			return nil
		},
	})
	return cmd
}
