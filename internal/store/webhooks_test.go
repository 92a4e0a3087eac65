package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// TestWebhookOutbox: the receiver's lookup needs no tenant, the re-driver sees every tenant's due
// rows, a second finish keeps the first result, and health counts by installation.
func TestWebhookOutbox(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	a, err := st.CreateTenant(ctx, "outbox-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateTenant(ctx, "outbox-b")
	if err != nil {
		t.Fatal(err)
	}
	instA, _ := st.CreateInstallation(ctx, a.ID, "bitbucket")
	instB, _ := st.CreateInstallation(ctx, b.ID, "bitbucket")
	wsID, err := st.UpsertWorkspace(ctx, store.Workspace{TenantID: a.ID, InstallationID: instA, ProviderUUID: "{ws-a}", Slug: "acme", Name: "Acme", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetWorkspaceWebhook(ctx, a.ID, wsID, "{5267E648-4D89-45A8-A08C-CFE19B0D8AAB}", []byte("sealed")); err != nil {
		t.Fatal(err)
	}

	// The header spells the hook UUID without braces and in lower case.
	rcv, err := st.WebhookReceiverFor(ctx, instA, "5267e648-4d89-45a8-a08c-cfe19b0d8aab")
	if err != nil || rcv.TenantID != a.ID || string(rcv.HookSecretEncrypted) != "sealed" || rcv.WorkspaceID == nil || *rcv.WorkspaceID != wsID {
		t.Fatalf("receiver = %+v, %v", rcv, err)
	}
	if rcv, err := st.WebhookReceiverFor(ctx, instB, "5267e648-4d89-45a8-a08c-cfe19b0d8aab"); err != nil || rcv.HookSecretEncrypted != nil {
		t.Fatalf("installation B found A's hook: %+v, %v", rcv, err)
	}
	if _, err := st.WebhookReceiverFor(ctx, uuid.New(), ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown installation: %v", err)
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	due := store.WebhookDelivery{TenantID: a.ID, InstallationID: instA, DeliveryUUID: uuid.New(), EventKey: "repo:push",
		Action: json.RawMessage(`{"kind":"push"}`), ReceivedAt: now.Add(-time.Minute), NextAttemptAt: now.Add(-time.Second)}
	later := store.WebhookDelivery{TenantID: b.ID, InstallationID: instB, DeliveryUUID: uuid.New(), EventKey: "repo:push",
		ReceivedAt: now, NextAttemptAt: now.Add(time.Hour)}
	otherDue := store.WebhookDelivery{TenantID: b.ID, InstallationID: instB, DeliveryUUID: uuid.New(), EventKey: "pullrequest:created",
		ReceivedAt: now.Add(-2 * time.Minute), NextAttemptAt: now.Add(-2 * time.Second)}
	for _, d := range []store.WebhookDelivery{due, later, otherDue} {
		if ins, err := st.RecordWebhookDelivery(ctx, d); err != nil || !ins {
			t.Fatalf("record %s: %v %v", d.DeliveryUUID, ins, err)
		}
	}
	rows, err := st.DueWebhookDeliveries(ctx, now, 10)
	if err != nil || len(rows) != 2 || rows[0].DeliveryUUID != otherDue.DeliveryUUID || rows[1].DeliveryUUID != due.DeliveryUUID {
		t.Fatalf("due rows = %+v, %v; want both tenants' due rows, oldest attempt first", rows, err)
	}
	if string(rows[1].Action) != `{"kind": "push"}` && string(rows[1].Action) != `{"kind":"push"}` {
		t.Fatalf("action = %s", rows[1].Action)
	}
	if err := st.RetryWebhookDeliveryLater(ctx, a.ID, due.DeliveryUUID, "temporal unavailable", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if rows, _ := st.DueWebhookDeliveries(ctx, now, 10); len(rows) != 1 {
		t.Fatalf("a row retried later is still due: %+v", rows)
	}
	if n, _ := st.CountUnprocessedWebhookDeliveries(ctx); n != 3 {
		t.Fatalf("unprocessed = %d, want 3", n)
	}
	if err := st.FinishWebhookDelivery(ctx, a.ID, due.DeliveryUUID, "backup_requested", now); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishWebhookDelivery(ctx, a.ID, due.DeliveryUUID, "ignored", now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetWebhookDelivery(ctx, a.ID, due.DeliveryUUID)
	if err != nil || got.Result != "backup_requested" || got.ProcessedAt == nil || !got.ProcessedAt.Equal(now) || got.Tries != 3 || got.LastError != "" {
		t.Fatalf("finished twice = %+v, %v; want the first result kept", got, err)
	}
	if _, err := st.GetWebhookDelivery(ctx, b.ID, due.DeliveryUUID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tenant B read A's delivery: %v", err)
	}
	if err := st.FinishWebhookDelivery(ctx, b.ID, due.DeliveryUUID, "x", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tenant B finished A's delivery: %v", err)
	}

	for _, reason := range []string{"rejected_signature", "rejected_signature", "malformed"} {
		if err := st.RecordWebhookRejection(ctx, a.ID, instA, reason, "repo:push"); err != nil {
			t.Fatal(err)
		}
	}
	h, err := st.WebhookHealthSince(ctx, a.ID, instA, now.Add(-time.Hour))
	if err != nil || h.Deliveries != 1 || h.Unprocessed != 0 || h.Rejected["rejected_signature"] != 2 || h.Rejected["malformed"] != 1 || h.LastDeliveryAt == nil {
		t.Fatalf("health of A = %+v, %v", h, err)
	}
	if h, _ := st.WebhookHealthSince(ctx, b.ID, instA, now.Add(-time.Hour)); h.Deliveries != 0 || len(h.Rejected) != 0 {
		t.Fatalf("tenant B sees A's health: %+v", h)
	}

	// Housekeeping drops old rejections with old processed deliveries.
	res, err := st.PurgeExpired(ctx, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if err != nil || res.WebhookRejections != 3 || res.WebhookDeliveries != 1 {
		t.Fatalf("purge = %+v, %v; want 3 rejections and the processed delivery", res, err)
	}
}

// TestLeases: one holder at a time, renewable by its holder, taken over once expired or
// released.
func TestLeases(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	must := func(ok bool, err error, want bool, what string) {
		t.Helper()
		if err != nil || ok != want {
			t.Fatalf("%s = %v, %v; want %v", what, ok, err, want)
		}
	}
	ok, err := st.AcquireLease(ctx, "loop", "p1", time.Minute)
	must(ok, err, true, "first acquire")
	ok, err = st.AcquireLease(ctx, "loop", "p2", time.Minute)
	must(ok, err, false, "second holder while held")
	ok, err = st.AcquireLease(ctx, "loop", "p1", time.Minute)
	must(ok, err, true, "renewal by the holder")
	ok, err = st.AcquireLease(ctx, "other", "p2", time.Minute)
	must(ok, err, true, "another lease")
	if err := st.ReleaseLease(ctx, "loop", "p1"); err != nil {
		t.Fatal(err)
	}
	ok, err = st.AcquireLease(ctx, "loop", "p2", 10*time.Millisecond)
	must(ok, err, true, "acquire after release")
	time.Sleep(50 * time.Millisecond)
	ok, err = st.AcquireLease(ctx, "loop", "p1", time.Minute)
	must(ok, err, true, "take over an expired lease")
}
