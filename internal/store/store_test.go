package store_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true}))
}

// openMigrated returns a store on a fresh database with every migration applied.
func openMigrated(t *testing.T) *store.Store {
	t.Helper()
	st, _ := openMigratedURL(t)
	return st
}

// openMigratedURL is openMigrated that also returns the database's URL, for a test that seeds
// rows in bulk with SQL.
func openMigratedURL(t *testing.T) (*store.Store, string) {
	t.Helper()
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st, dbURL
}

func TestMigrationsFromEmptyAndRerun(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	before, err := st.MigrationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 {
		t.Fatal("no embedded migrations")
	}
	for _, m := range before {
		if m.Applied {
			t.Fatalf("migration %d applied on an empty database", m.Version)
		}
	}
	applied, err := st.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(before) {
		t.Fatalf("applied %v, want all %d", applied, len(before))
	}
	again, err := st.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Fatalf("second run applied %v, want nothing", again)
	}
	after, err := st.MigrationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range after {
		if !m.Applied {
			t.Fatalf("migration %d still pending", m.Version)
		}
	}
}

func TestTokensResolveToTheirTenantOnly(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	a, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateTenant(ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateTenant(ctx, "acme"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate tenant: %v, want ErrConflict", err)
	}
	tokA, _, err := st.IssueAPIToken(ctx, a.ID, "a")
	if err != nil {
		t.Fatal(err)
	}
	tokB, _, err := st.IssueAPIToken(ctx, b.ID, "b")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.TenantByTokenHash(ctx, apitoken.Hash(tokA)); err != nil || got.ID != a.ID {
		t.Fatalf("token A -> %v, %v", got, err)
	}
	if got, err := st.TenantByTokenHash(ctx, apitoken.Hash(tokB)); err != nil || got.ID != b.ID {
		t.Fatalf("token B -> %v, %v", got, err)
	}
	if _, err := st.TenantByTokenHash(ctx, apitoken.Hash(tokA+"x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v, want ErrNotFound", err)
	}
}

func TestAuditEventsAreTenantScoped(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	a, _ := st.CreateTenant(ctx, "acme")
	b, _ := st.CreateTenant(ctx, "globex")
	for i := 0; i < 3; i++ {
		if err := st.RecordAudit(ctx, store.AuditEvent{TenantID: a.ID, Actor: "test", Action: "a.did"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RecordAudit(ctx, store.AuditEvent{TenantID: b.ID, Actor: "test", Action: "b.did"}); err != nil {
		t.Fatal(err)
	}
	evA, err := st.ListAuditEvents(ctx, a.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evA) != 3 {
		t.Fatalf("tenant A sees %d events, want 3", len(evA))
	}
	for _, ev := range evA {
		if ev.Action != "a.did" {
			t.Fatalf("tenant A sees %q", ev.Action)
		}
	}
	page2, err := st.ListAuditEvents(ctx, a.ID, evA[1].ID, 10)
	if err != nil || len(page2) != 1 || page2[0].ID != evA[2].ID {
		t.Fatalf("cursor paging: %v, %v", page2, err)
	}
}

func TestOAuthStateIsSingleUseAndExpires(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	ten, _ := st.CreateTenant(ctx, "acme")
	now := time.Now()
	if err := st.CreateOAuthState(ctx, ten.ID, "n1", "bitbucket", now.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateOAuthState(ctx, ten.ID, "n2", "bitbucket", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := st.ConsumeOAuthState(ctx, "n1", "bitbucket", now)
	if err != nil || got != ten.ID {
		t.Fatalf("first use: %v, %v", got, err)
	}
	if _, err := st.ConsumeOAuthState(ctx, "n1", "bitbucket", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("replay: %v, want ErrNotFound", err)
	}
	if _, err := st.ConsumeOAuthState(ctx, "n2", "bitbucket", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired: %v, want ErrNotFound", err)
	}
}

func TestPurgeExpiredDeletesOnlyWhatIsDueAndAudits(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	a, _ := st.CreateTenant(ctx, "acme")
	b, _ := st.CreateTenant(ctx, "globex")
	now := time.Now().UTC()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateOAuthState(ctx, a.ID, "expired-a", "bitbucket", now.Add(-time.Hour)))
	must(st.CreateOAuthState(ctx, a.ID, "live-a", "bitbucket", now.Add(time.Hour)))
	must(st.CreateOAuthState(ctx, b.ID, "expired-b", "bitbucket", now.Add(-time.Minute)))
	must(st.CreateOAuthState(ctx, b.ID, "used-b", "bitbucket", now.Add(time.Hour)))
	if _, err := st.ConsumeOAuthState(ctx, "used-b", "bitbucket", now); err != nil {
		t.Fatal(err)
	}
	must(st.CreateSession(ctx, a.ID, []byte("expired-session"), "login_link", now.Add(-time.Minute)))
	must(st.CreateSession(ctx, a.ID, []byte("live-session"), "login_link", now.Add(time.Hour)))
	must(st.CreateSession(ctx, a.ID, []byte("signed-out"), "login_link", now.Add(time.Hour)))
	must(st.RevokeSession(ctx, []byte("signed-out")))
	must(st.CreateLoginLink(ctx, b.ID, []byte("expired-link"), "/", now.Add(-time.Minute)))
	must(st.CreateLoginLink(ctx, b.ID, []byte("live-link"), "/", now.Add(time.Hour)))
	instA, err := st.CreateInstallation(ctx, a.ID, "bitbucket")
	must(err)
	old := store.WebhookDelivery{TenantID: a.ID, InstallationID: instA, DeliveryUUID: uuid.New(), EventKey: "repo:push", ReceivedAt: now.Add(-100 * time.Hour)}
	oldUnprocessed := store.WebhookDelivery{TenantID: a.ID, InstallationID: instA, DeliveryUUID: uuid.New(), EventKey: "repo:push", ReceivedAt: now.Add(-100 * time.Hour)}
	fresh := store.WebhookDelivery{TenantID: a.ID, InstallationID: instA, DeliveryUUID: uuid.New(), EventKey: "repo:push", ReceivedAt: now.Add(-time.Hour)}
	for _, d := range []store.WebhookDelivery{old, oldUnprocessed, fresh} {
		ins, err := st.RecordWebhookDelivery(ctx, d)
		must(err)
		if !ins {
			t.Fatal("first delivery reported as duplicate")
		}
	}
	if dup, err := st.RecordWebhookDelivery(ctx, old); err != nil || dup {
		t.Fatalf("redelivery: inserted=%v err=%v, want a duplicate", dup, err)
	}
	must(st.FinishWebhookDelivery(ctx, a.ID, old.DeliveryUUID, "recorded", now.Add(-99*time.Hour)))
	must(st.FinishWebhookDelivery(ctx, a.ID, fresh.DeliveryUUID, "recorded", now))
	if err := st.FinishWebhookDelivery(ctx, b.ID, fresh.DeliveryUUID, "recorded", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another tenant marked a delivery: %v", err)
	}

	res, err := st.PurgeExpired(ctx, now, now.Add(-72*time.Hour))
	must(err)
	if res.OAuthStates != 3 || res.WebhookDeliveries != 1 || res.Sessions != 2 || res.LoginLinks != 1 || res.TenantsAudited != 2 {
		t.Fatalf("purge = %+v, want 3 states, 1 delivery (the unprocessed one is kept), 2 sessions (expired, signed out), 1 link, 2 tenants audited", res)
	}
	if _, err := st.SessionByHash(ctx, []byte("live-session"), now); err != nil {
		t.Fatalf("live session was deleted: %v", err)
	}
	if _, _, err := st.ConsumeLoginLink(ctx, []byte("live-link"), now); err != nil {
		t.Fatalf("live login link was deleted: %v", err)
	}
	if _, err := st.ConsumeOAuthState(ctx, "live-a", "bitbucket", now); err != nil {
		t.Fatalf("live state was deleted: %v", err)
	}
	evA, err := st.ListAuditEvents(ctx, a.ID, 0, 10)
	must(err)
	if len(evA) != 1 || evA[0].Action != "housekeeping.purged" ||
		!strings.Contains(string(evA[0].Details), `"oauth_states": 1`) || !strings.Contains(string(evA[0].Details), `"webhook_deliveries": 1`) {
		t.Fatalf("tenant A audit = %+v", evA)
	}
	// live-a and live-link were just used, so they are due now; then nothing is left to purge.
	again, err := st.PurgeExpired(ctx, now, now.Add(-72*time.Hour))
	must(err)
	if again.OAuthStates != 1 || again.LoginLinks != 1 || again.Sessions != 0 || again.WebhookDeliveries != 0 || again.TenantsAudited != 2 {
		t.Fatalf("second purge = %+v, want the one used state and the one used link", again)
	}
	last, err := st.PurgeExpired(ctx, now, now.Add(-72*time.Hour))
	must(err)
	if last != (store.PurgeResult{}) {
		t.Fatalf("third purge = %+v, want nothing", last)
	}
}
