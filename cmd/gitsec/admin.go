package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
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
	cmd.AddCommand(newRevokeTokenCmd())
	cmd.AddCommand(newLoginLinkCmd())

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

// newRevokeTokenCmd revokes a token as an operator: unlike DELETE /api/v1/tokens/{id} it may
// revoke a tenant's last token (a leaked token must die even if it is the only one; the
// operator can issue another with create-token).
func newRevokeTokenCmd() *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "revoke-token --tenant NAME ID-or-PREFIX",
		Short: "Revoke an API token of a tenant by its ID or display prefix (gsk_xxxxxx); it gets 401 at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTenantName(tenant); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.TenantByName(ctx, tenant)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("tenant %q does not exist", tenant)
			}
			if err != nil {
				return err
			}
			active, err := st.ListAPITokens(ctx, t.ID)
			if err != nil {
				return err
			}
			target, err := pickToken(active, args[0], tenant)
			if err != nil {
				return err
			}
			tok, err := st.RevokeAPIToken(ctx, t.ID, target.ID, store.AllowLastToken)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("API token %s of tenant %q was revoked meanwhile", target.ID, tenant)
			}
			if err != nil {
				return err
			}
			details, _ := json.Marshal(map[string]string{"name": tok.Name, "display_prefix": tok.DisplayPrefix})
			if err := st.RecordAudit(ctx, store.AuditEvent{TenantID: t.ID, Actor: "admin_cli", Action: "api_token.revoked", TargetType: "api_token", TargetID: tok.ID.String(), Details: details}); err != nil {
				return fmt.Errorf("token revoked, but its audit event was not recorded: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked API token %s (%s, name %q) of tenant %s\n", tok.DisplayPrefix, tok.ID, tok.Name, tenant)
			if len(active) == 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "tenant %s has no active API token left; issue one with `gitsec admin create-token --tenant %s`\n", tenant, tenant)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

// pickToken finds the active token named by its ID or display prefix. Display prefixes carry
// 36 random bits, so two tokens of a tenant can share one: then the ID is required.
func pickToken(active []store.APIToken, ref, tenant string) (store.APIToken, error) {
	if id, err := uuid.Parse(ref); err == nil {
		for _, t := range active {
			if t.ID == id {
				return t, nil
			}
		}
		return store.APIToken{}, fmt.Errorf("tenant %q has no active API token with ID %s", tenant, id)
	}
	if apitoken.Check(ref) == nil {
		// Never echo a whole token back: the message may end up in a log.
		return store.APIToken{}, fmt.Errorf("that is a whole API token; pass its ID or its display prefix (the first %d characters) instead", apitoken.DisplayPrefixLen)
	}
	if !strings.HasPrefix(ref, apitoken.Prefix) || len(ref) != apitoken.DisplayPrefixLen {
		return store.APIToken{}, fmt.Errorf("%q is neither a token ID (a UUID) nor a display prefix like gsk_AbC123 (as listed by GET /api/v1/tokens)", ref)
	}
	var matches []store.APIToken
	for _, t := range active {
		if t.DisplayPrefix == ref {
			matches = append(matches, t)
		}
	}
	switch len(matches) {
	case 0:
		return store.APIToken{}, fmt.Errorf("tenant %q has no active API token with prefix %s", tenant, ref)
	case 1:
		return matches[0], nil
	default:
		ids := make([]string, len(matches))
		for i, t := range matches {
			ids[i] = t.ID.String()
		}
		return store.APIToken{}, fmt.Errorf("prefix %s matches %d active tokens of tenant %q (%s); pass the ID instead", ref, len(matches), tenant, strings.Join(ids, ", "))
	}
}

// newLoginLinkCmd prints a dashboard sign-in link: the operator's way in for a browser, since
// the dashboard never asks for a password.
func newLoginLinkCmd() *cobra.Command {
	var tenant, next string
	cmd := &cobra.Command{
		Use:   "login-link --tenant NAME [--next PATH]",
		Short: "Print a single-use dashboard sign-in link on GITSEC_PUBLIC_URL, valid for 10 minutes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTenantName(tenant); err != nil {
				return err
			}
			if _, err := websession.CheckNext(next); err != nil {
				return fmt.Errorf("--next: %w", err)
			}
			ctx := cmd.Context()
			cfg, _, err := loadConfig()
			if err != nil {
				return err
			}
			st, err := store.Open(ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.TenantByName(ctx, tenant)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("tenant %q does not exist; create it with `gitsec admin create-tenant %s`", tenant, tenant)
			}
			if err != nil {
				return err
			}
			link, expires, err := websession.IssueLoginLink(ctx, st, t.ID, cfg.PublicURL, next, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sign-in link for tenant %s; it works once, until %s\n", t.Name, expires.UTC().Format(time.RFC3339))
			fmt.Fprintln(cmd.OutOrStdout(), link)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
	cmd.Flags().StringVar(&next, "next", websession.Home, "dashboard path to open after signing in (a relative path)")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}
