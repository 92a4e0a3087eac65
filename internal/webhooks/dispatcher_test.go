package webhooks

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/workflows"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true, Temporal: true}))
}

// dispatchEnv is a dispatcher on real Postgres and Temporal (no worker: a backup request only
// has to reach Temporal) with one tenant, installation, workspace and repository.
type dispatchEnv struct {
	t    *testing.T
	st   *store.Store
	tc   client.Client
	d    *Dispatcher
	repo store.Repository
}

func newDispatchEnv(t *testing.T) *dispatchEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tenv := testenv.Temporal(t)
	tc, err := client.DialContext(ctx, client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	ten, err := st.CreateTenant(ctx, "dispatch")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := st.CreateInstallation(ctx, ten.ID, "bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetInstallationStatus(ctx, ten.ID, inst, domain.InstallationActive, ""); err != nil {
		t.Fatal(err)
	}
	ws, err := st.UpsertWorkspace(ctx, store.Workspace{TenantID: ten.ID, InstallationID: inst, ProviderUUID: "{ws}", Slug: "acme", Name: "Acme", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := st.UpsertRepository(ctx, store.Repository{TenantID: ten.ID, InstallationID: inst, WorkspaceID: &ws, ProviderUUID: "{" + uuid.NewString() + "}", FullName: "acme/api"})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := st.GetRepository(ctx, ten.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	e := &dispatchEnv{t: t, st: st, tc: tc, repo: repo,
		d: &Dispatcher{Store: st, Temporal: tc, Backups: backupqueue.Settings{TaskQueue: tenv.TaskQueue, IdleTimeout: time.Minute}}}
	t.Cleanup(func() {
		_ = tc.TerminateWorkflow(context.Background(), workflows.BackupWorkflowID(backupqueue.Target(repo)), "", "test over")
	})
	return e
}

// push stores a push delivery for the repository received at at and returns it.
func (e *dispatchEnv) push(at time.Time) store.WebhookDelivery {
	e.t.Helper()
	a := Action{Kind: KindPush, Event: "repo:push", Repository: RepositoryRef{UUID: e.repo.ProviderUUID, FullName: e.repo.FullName, WorkspaceSlug: "acme"}}
	raw, _ := json.Marshal(a)
	d := store.WebhookDelivery{TenantID: e.repo.TenantID, InstallationID: e.repo.InstallationID, DeliveryUUID: uuid.New(),
		EventKey: "repo:push", RepositoryUUID: e.repo.ProviderUUID, Action: raw, ReceivedAt: at.UTC()}
	if _, err := e.st.RecordWebhookDelivery(context.Background(), d); err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *dispatchEnv) result(d store.WebhookDelivery) string {
	e.t.Helper()
	got, err := e.st.GetWebhookDelivery(context.Background(), d.TenantID, d.DeliveryUUID)
	if err != nil {
		e.t.Fatal(err)
	}
	return got.Result
}

// A delivery received before an accepted request for its repository is covered by it; one
// received after it, and any re-driven row (another process's clock), sends its own.
func TestDispatcherCoalescesOnlyWhatARequestCovers(t *testing.T) {
	e := newDispatchEnv(t)
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	first := e.push(before)
	earlier := e.push(before.Add(10 * time.Millisecond))
	if !e.d.handle(ctx, first, true) || e.result(first) != domain.WebhookBackupRequested {
		t.Fatalf("first delivery = %q, want its own request", e.result(first))
	}
	if !e.d.handle(ctx, earlier, true) || e.result(earlier) != domain.WebhookCoalesced {
		t.Fatalf("delivery received before the request = %q, want coalesced", e.result(earlier))
	}
	redriven := e.push(before)
	if !e.d.handle(ctx, redriven, false) || e.result(redriven) != domain.WebhookBackupRequested {
		t.Fatalf("re-driven delivery = %q, want its own request", e.result(redriven))
	}
	later := e.push(time.Now().Add(time.Second))
	if !e.d.handle(ctx, later, true) || e.result(later) != domain.WebhookBackupRequested {
		t.Fatalf("delivery received after the request = %q, want its own request", e.result(later))
	}

	// Three requests reached the workflow; the coalesced delivery sent none.
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.BackupWorkflowID(backupqueue.Target(e.repo)), "")
	if err != nil {
		t.Fatal(err)
	}
	hist := e.tc.GetWorkflowHistory(ctx, desc.WorkflowExecutionInfo.Execution.WorkflowId, desc.WorkflowExecutionInfo.Execution.RunId, false, 0)
	signals := 0
	for hist.HasNext() {
		ev, err := hist.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetWorkflowExecutionSignaledEventAttributes() != nil {
			signals++
		}
	}
	if signals != 3 {
		t.Fatalf("the backup workflow got %d requests, want 3", signals)
	}
}

// A request Temporal refused covers nothing: the row waits for the re-driver.
func TestDispatcherRetriesWhenTemporalRefuses(t *testing.T) {
	e := newDispatchEnv(t)
	ctx := context.Background()
	proxy := testenv.NewProxy(t, testenv.Temporal(t).HostPort)
	cut, err := client.NewLazyClient(client.Options{HostPort: proxy.Addr(), Namespace: testenv.Temporal(t).Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cut.Close)
	proxy.Cut()
	down := &Dispatcher{Store: e.st, Temporal: cut, Backups: e.d.Backups, CallTimeout: 500 * time.Millisecond}
	d := e.push(time.Now().Add(-time.Second))
	if down.handle(ctx, d, true) {
		t.Fatal("a delivery was processed while Temporal was unreachable")
	}
	got, err := e.st.GetWebhookDelivery(ctx, d.TenantID, d.DeliveryUUID)
	if err != nil || got.ProcessedAt != nil || got.Tries != 1 || got.LastError == "" || !got.NextAttemptAt.After(time.Now()) {
		t.Fatalf("row after a refused request = %+v, %v", got, err)
	}
	// The next delivery of the same repository is not "covered" by the failed request.
	next := e.push(time.Now().Add(-500 * time.Millisecond))
	proxy.Restore()
	// gRPC reconnects with a backoff of its own: retry as the re-driver would.
	for i := 0; i < 40 && !down.handle(ctx, next, true); i++ {
		time.Sleep(250 * time.Millisecond)
	}
	if e.result(next) != domain.WebhookBackupRequested {
		t.Fatalf("delivery after a failed request = %q, want its own request", e.result(next))
	}
}
