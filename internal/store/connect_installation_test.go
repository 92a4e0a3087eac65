package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

// TestOneLiveInstallationPerAccount: a tenant connects an account once; a second connect is an
// AlreadyConnectedError naming the first, except that one needing re-authorization is
// reconnected and a removed one no longer counts. Other tenants are independent.
func TestOneLiveInstallationPerAccount(t *testing.T) {
	st := openMigrated(t)
	ctx := context.Background()
	acme, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.CreateTenant(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	alice := store.ProviderAccount{Provider: "bitbucket", UUID: "{alice}", Name: "alice"}

	first, reconnected, err := st.ConnectInstallation(ctx, acme.ID, alice, []byte("sealed-1"))
	if err != nil || reconnected {
		t.Fatalf("first connect = %s %t %v", first, reconnected, err)
	}
	inst, err := st.GetInstallation(ctx, acme.ID, first)
	if err != nil || inst.AccountUUID != alice.UUID || inst.AccountName != "alice" || inst.Status != domain.InstallationPending {
		t.Fatalf("installation = %+v, %v", inst, err)
	}
	if theirs, _, err := st.ConnectInstallation(ctx, other.ID, alice, []byte("sealed-other")); err != nil || theirs == first {
		t.Fatalf("another tenant's connect of the same account = %s %v, want its own installation", theirs, err)
	}

	if _, _, err := st.ConnectInstallation(ctx, acme.ID, alice, []byte("sealed-2")); !isAlreadyConnected(err, first, domain.InstallationPending) {
		t.Fatalf("second connect = %v, want AlreadyConnectedError for %s", err, first)
	}
	// Racing first connects of another account: one wins, the others are refused naming it.
	bob := store.ProviderAccount{Provider: "bitbucket", UUID: "{bob}", Name: "bob"}
	var wg sync.WaitGroup
	ids, errs := make([]uuid.UUID, 4), make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], _, errs[i] = st.ConnectInstallation(ctx, acme.ID, bob, []byte("sealed-bob"))
		}()
	}
	wg.Wait()
	var winner uuid.UUID
	for i, err := range errs {
		if err == nil {
			if winner != uuid.Nil {
				t.Fatalf("two racing connects of bob both created an installation")
			}
			winner = ids[i]
		}
	}
	for _, err := range errs {
		if err != nil && !isAlreadyConnected(err, winner, domain.InstallationPending) {
			t.Fatalf("racing connect = %v, want AlreadyConnectedError for %s", err, winner)
		}
	}
	if enc, err := st.InstallationCredentials(ctx, acme.ID, first); err != nil || string(enc) != "sealed-1" {
		t.Fatalf("credentials after refused connects = %q %v, want the first ones kept", enc, err)
	}

	// needs_reauth: the same installation takes the new credentials and starts over.
	if err := st.SetInstallationStatus(ctx, acme.ID, first, domain.InstallationNeedsReauth, "revoked"); err != nil {
		t.Fatal(err)
	}
	again, reconnected, err := st.ConnectInstallation(ctx, acme.ID, alice, []byte("sealed-3"))
	if err != nil || !reconnected || again != first {
		t.Fatalf("reconnect = %s %t %v, want %s reconnected", again, reconnected, err, first)
	}
	inst, _ = st.GetInstallation(ctx, acme.ID, first)
	enc, _ := st.InstallationCredentials(ctx, acme.ID, first)
	if inst.Status != domain.InstallationPending || inst.StatusMessage != "" || string(enc) != "sealed-3" {
		t.Fatalf("after reconnect: %+v, credentials %q", inst, enc)
	}

	// Removed: a new installation.
	if err := st.SetInstallationStatus(ctx, acme.ID, first, domain.InstallationRemoved, ""); err != nil {
		t.Fatal(err)
	}
	fresh, reconnected, err := st.ConnectInstallation(ctx, acme.ID, alice, []byte("sealed-4"))
	if err != nil || reconnected || fresh == first || fresh == uuid.Nil {
		t.Fatalf("connect after removal = %s %t %v, want a new installation", fresh, reconnected, err)
	}

	// Onboarding of an installation created before the account was known cannot make a twin.
	legacy, err := st.CreateInstallationWithCredentials(ctx, acme.ID, "bitbucket", []byte("sealed-5"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetInstallationAccount(ctx, acme.ID, legacy, alice.UUID, alice.Name); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("recording a second live installation of alice = %v, want ErrConflict", err)
	}
}

func isAlreadyConnected(err error, id uuid.UUID, status string) bool {
	var dup *store.AlreadyConnectedError
	return errors.As(err, &dup) && dup.InstallationID == id && dup.Status == status && errors.Is(err, store.ErrConflict)
}
