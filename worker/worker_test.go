package worker_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true}))
}

// TestHousekeepingOnRealServers runs the worker against the Temporal dev server and Postgres:
// the schedule is created idempotently, and a triggered run purges rows and audits them.
func TestHousekeepingOnRealServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ten, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateOAuthState(ctx, ten.ID, "stale", "bitbucket", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	env := testenv.Temporal(t)
	tc, err := client.DialContext(ctx, client.Options{HostPort: env.HostPort, Namespace: env.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := worker.Options{
		Client:    tc,
		TaskQueue: env.TaskQueue,
		// Only housekeeping runs here; the other features need no dependencies to register.
		Activities: worker.Activities{
			Onboarding:   &activities.Onboarding{},
			Backups:      &activities.Backups{},
			Sweeps:       &activities.Sweeps{},
			Housekeeping: &activities.Housekeeping{Store: st, Logger: log},
			Uninstall:    &activities.Uninstall{},
			Exports:      &activities.Exports{},
			Drills:       &activities.Drills{},
			Restores:     &activities.Restores{},
			Retention:    &activities.Retention{},
		},
		HousekeepingEvery:  time.Hour,
		WebhookDedupWindow: 72 * time.Hour,
		Logger:             log,
	}
	// Twice: the second start must update, not fail or duplicate.
	for i := 0; i < 2; i++ {
		if err := worker.EnsureSchedules(ctx, opts); err != nil {
			t.Fatalf("EnsureSchedules #%d: %v", i+1, err)
		}
	}
	h := tc.ScheduleClient().GetHandle(ctx, worker.HousekeepingScheduleID)
	t.Cleanup(func() { _ = h.Delete(context.Background()) })
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if iv := desc.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != time.Hour {
		t.Fatalf("schedule intervals = %+v", iv)
	}

	w := worker.New(opts)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the triggered run to finish, then check what it did.
	deadline := time.Now().Add(time.Minute)
	for {
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			run := d.Info.RecentActions[n-1].StartWorkflowResult
			var res workflows.HousekeepingResult
			if err := tc.GetWorkflow(ctx, run.WorkflowID, run.FirstExecutionRunID).Get(ctx, &res); err != nil {
				t.Fatalf("housekeeping run: %v", err)
			}
			if res.OAuthStates != 1 {
				t.Fatalf("housekeeping purged %d oauth states, want 1", res.OAuthStates)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the triggered schedule never started a run")
		}
		time.Sleep(200 * time.Millisecond)
	}
	events, err := st.ListAuditEvents(ctx, ten.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Action != "housekeeping.purged" || events[0].Actor != "system:housekeeping" {
		t.Fatalf("audit events = %+v", events)
	}
	if n, err := worker.ReplayTaskQueue(ctx, tc, env.TaskQueue); err != nil || n != 1 {
		t.Fatalf("replayed %d housekeeping executions: %v", n, err)
	}
}
