package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

// Uninstalling is one way, decided in SQL: once removed, an installation takes no refreshed
// credentials and no other status, and one being removed can only become removed; a late write
// from another worker gets ErrInstallationRemoved and changes nothing.
func TestRemovedInstallationRefusesCredentialsAndStatusWrites(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	ten, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.CreateInstallationWithCredentials(ctx, ten.ID, "bitbucket", []byte("sealed-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateInstallationCredentials(ctx, ten.ID, id, []byte("sealed-2")); err != nil {
		t.Fatalf("refresh of an active installation: %v", err)
	}
	// Revoked: the first reason is kept when more backups fail the same way.
	for _, msg := range []string{"first", "second"} {
		if err := st.MarkInstallationNeedsReauth(ctx, ten.ID, id, msg); err != nil {
			t.Fatal(err)
		}
	}
	if inst, err := st.GetInstallation(ctx, ten.ID, id); err != nil || inst.Status != domain.InstallationNeedsReauth || inst.StatusMessage != "first" {
		t.Fatalf("after two revocations: %+v, %v", inst, err)
	}
	if err := st.SetInstallationStatus(ctx, ten.ID, id, domain.InstallationRemoving, "removing webhooks"); err != nil {
		t.Fatal(err)
	}
	// Uninstalling still needs a working client to delete the webhooks.
	if err := st.UpdateInstallationCredentials(ctx, ten.ID, id, []byte("sealed-3")); err != nil {
		t.Fatalf("refresh while removing: %v", err)
	}
	if err := st.SetInstallationStatus(ctx, ten.ID, id, domain.InstallationActive, "late onboarding"); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("removing -> active: %v, want ErrInstallationRemoved", err)
	}
	if err := st.SetInstallationStatus(ctx, ten.ID, id, domain.InstallationRemoved, "uninstalled"); err != nil {
		t.Fatal(err)
	}

	if err := st.UpdateInstallationCredentials(ctx, ten.ID, id, []byte("sealed-4")); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("refresh after removal: %v, want ErrInstallationRemoved", err)
	}
	if _, err := st.InstallationCredentials(ctx, ten.ID, id); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("credentials after removal: %v, want ErrInstallationRemoved", err)
	}
	for _, status := range []string{domain.InstallationNeedsReauth, domain.InstallationActive, domain.InstallationRemoving} {
		if err := st.SetInstallationStatus(ctx, ten.ID, id, status, "late"); !errors.Is(err, store.ErrInstallationRemoved) {
			t.Fatalf("removed -> %s: %v, want ErrInstallationRemoved", status, err)
		}
	}
	if err := st.MarkInstallationNeedsReauth(ctx, ten.ID, id, "late backup"); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInstallationStatus(ctx, ten.ID, id, domain.InstallationRemoved, "uninstalled again"); err != nil {
		t.Fatalf("removed -> removed (a repeated uninstall): %v", err)
	}
	inst, err := st.GetInstallation(ctx, ten.ID, id)
	if err != nil || inst.Status != domain.InstallationRemoved {
		t.Fatalf("installation = %+v, %v", inst, err)
	}

	// Another tenant's or an unknown installation is not found, never "removed".
	other, err := st.CreateTenant(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateInstallationCredentials(ctx, other.ID, id, []byte("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other tenant's refresh: %v, want ErrNotFound", err)
	}
}
