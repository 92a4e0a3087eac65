package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Dispatcher acts on stored deliveries: fresh ones handed over by the receiver (Submit), and,
// in a loop that one API process at a time runs under a Postgres lease, every row left
// unprocessed (Temporal was down, the queue was full, a process died between store and act).
// Acting is idempotent: a delivery handled twice requests a backup twice, which the
// repository's workflow coalesces.
type Dispatcher struct {
	Store    *store.Store
	Temporal client.Client
	Backups  backupqueue.Settings
	Logger   *slog.Logger
	// Metrics counts re-driven rows and the outbox backlog; nil records nothing.
	Metrics *metrics.Metrics
	// Workers act on submitted deliveries in parallel (default 4: acting costs more queries than
	// receiving, and fewer workers leave the receiver the database during a burst).
	Workers int
	// RedriveEvery is how often the re-driver looks for due rows (default 2 s).
	RedriveEvery time.Duration
	// CallTimeout bounds one Temporal call, so that an outage makes a row wait for the
	// re-driver instead of holding a worker (default 5 s).
	CallTimeout time.Duration
	// SettleQuiet and SettleMaxWait hold fresh deliveries until no new one arrived for
	// SettleQuiet (default 200 ms), but no longer than SettleMaxWait after the first (default
	// 1 s): a burst is received first and acted on after, and its deliveries for one repository
	// then share one backup request. Negative SettleQuiet acts at once.
	SettleQuiet   time.Duration
	SettleMaxWait time.Duration
	// Holder names this process in the re-driver's lease (default host, pid and a random suffix).
	Holder string

	once    sync.Once
	queue   chan store.WebhookDelivery
	signals requestLog
}

// requestLog remembers, per repository row, when this process last sent a backup request that
// Temporal accepted. A delivery this process received before that send needs no request of its
// own: the run the request wakes starts after it, so its ls-remote sees the push. Only rows this
// process received are compared (one clock); re-driven rows always send.
type requestLog struct {
	mu   sync.Mutex
	rows map[uuid.UUID]*repoRequests
}

type repoRequests struct {
	mu sync.Mutex // one request per repository at a time
	// sent is when the last accepted request was sent.
	sent time.Time
}

// maxRequestLog bounds the log; past it, it starts over (costing a few extra requests).
const maxRequestLog = 10000

func (l *requestLog) of(repoID uuid.UUID) *repoRequests {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rows == nil || len(l.rows) >= maxRequestLog {
		l.rows = map[uuid.UUID]*repoRequests{}
	}
	r := l.rows[repoID]
	if r == nil {
		r = &repoRequests{}
		l.rows[repoID] = r
	}
	return r
}

// RedriveGrace is how long a fresh row belongs to the process that received it before the
// re-driver may take it: the receiver stores rows with NextAttemptAt = receipt + RedriveGrace.
const RedriveGrace = 10 * time.Second

// redriveLease is the lease name the re-driver loop runs under.
const redriveLease = "webhook-redriver"

// queueSize bounds deliveries waiting for a dispatcher worker; past it the re-driver picks
// them up from the outbox.
const queueSize = 1024

func (d *Dispatcher) init() {
	d.once.Do(func() {
		d.queue = make(chan store.WebhookDelivery, queueSize)
		if d.Workers <= 0 {
			d.Workers = 4
		}
		if d.RedriveEvery <= 0 {
			d.RedriveEvery = 2 * time.Second
		}
		if d.CallTimeout <= 0 {
			d.CallTimeout = 5 * time.Second
		}
		if d.SettleQuiet == 0 {
			d.SettleQuiet = 200 * time.Millisecond
		}
		if d.SettleMaxWait <= 0 {
			d.SettleMaxWait = time.Second
		}
		if d.Logger == nil {
			d.Logger = slog.Default()
		}
		if d.Holder == "" {
			host, _ := os.Hostname()
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			d.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
		}
	})
}

// Submit hands a stored delivery to the workers without waiting; false means the queue is full
// and the row waits for the re-driver.
func (d *Dispatcher) Submit(del store.WebhookDelivery) bool {
	if d == nil {
		return false
	}
	d.init()
	select {
	case d.queue <- del:
		return true
	default:
		return false
	}
}

// Run acts on submitted deliveries and re-drives the outbox until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.init()
	settled := make(chan store.WebhookDelivery)
	var wg sync.WaitGroup
	for range d.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case del := <-settled:
					d.handle(ctx, del, true)
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		d.settle(ctx, settled)
	}()
	go func() {
		defer wg.Done()
		d.redriveLoop(ctx)
	}()
	wg.Wait()
	return nil
}

// settle passes submitted deliveries on to the workers once the intake has been quiet for
// SettleQuiet (or SettleMaxWait passed since the first one held), so that acting (more queries
// than receiving, and Temporal calls) does not compete with a burst still being received.
func (d *Dispatcher) settle(ctx context.Context, out chan<- store.WebhookDelivery) {
	var held []store.WebhookDelivery
	var first time.Time
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	flush := func() {
		for _, del := range held {
			select {
			case out <- del:
			case <-ctx.Done():
				return
			}
		}
		held = held[:0]
	}
	for {
		var wake <-chan time.Time
		if len(held) > 0 {
			wake = quiet.C
		}
		select {
		case <-ctx.Done():
			return
		case del := <-d.queue:
			if d.SettleQuiet < 0 {
				held = append(held, del)
				flush()
				continue
			}
			if len(held) == 0 {
				first = time.Now()
			}
			held = append(held, del)
			wait := min(d.SettleQuiet, time.Until(first.Add(d.SettleMaxWait)))
			if wait <= 0 {
				flush()
				continue
			}
			quiet.Reset(wait)
		case <-wake:
			flush()
		}
	}
}

func (d *Dispatcher) redriveLoop(ctx context.Context) {
	ticker := time.NewTicker(d.RedriveEvery)
	defer ticker.Stop()
	defer func() {
		// Hand the lease over at once rather than after it expires.
		releaseCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.Store.ReleaseLease(releaseCtx, redriveLease, d.Holder)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if _, err := d.RedriveOnce(ctx); err != nil && ctx.Err() == nil {
			d.Logger.Warn("webhook re-driver pass failed", "error", err)
		}
	}
}

// RedriveOnce processes the due unprocessed rows if this process holds the re-driver lease, and
// returns how many it handled.
func (d *Dispatcher) RedriveOnce(ctx context.Context) (int, error) {
	d.init()
	ttl := max(3*d.RedriveEvery, 10*time.Second)
	held, err := d.Store.AcquireLease(ctx, redriveLease, d.Holder, ttl)
	if err != nil || !held {
		return 0, err
	}
	if n, err := d.Store.CountUnprocessedWebhookDeliveries(ctx); err == nil {
		d.Metrics.SetWebhookBacklog(n)
	}
	due, err := d.Store.DueWebhookDeliveries(ctx, time.Now(), 200)
	if err != nil {
		return 0, err
	}
	if len(due) > 0 {
		d.Logger.Info("re-driving webhook deliveries left unprocessed", "count", len(due))
	}
	sem := make(chan struct{}, d.Workers)
	var wg sync.WaitGroup
	for _, del := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if d.handle(ctx, del, false) {
				d.Metrics.WebhookRedrive("processed")
			} else {
				d.Metrics.WebhookRedrive("retry_later")
			}
		}()
	}
	wg.Wait()
	return len(due), nil
}

// handle acts on one delivery and records the outcome: processed with its result (true), or
// retried later with a growing delay when a dependency failed (false). local says this process
// received the row (its receipt time is on this process's clock), so a request already sent
// after it may cover it.
func (d *Dispatcher) handle(ctx context.Context, del store.WebhookDelivery, local bool) bool {
	d.init()
	log := d.Logger.With("delivery", del.DeliveryUUID, "event", del.EventKey, "installation", del.InstallationID)
	result, err := d.act(ctx, work{WebhookDelivery: del, local: local})
	if ctx.Err() != nil {
		return false // shutting down: the row stays for the re-driver
	}
	if err != nil {
		next := time.Now().Add(retryDelay(del.Tries))
		log.Warn("webhook delivery not processed yet; will retry", "error", err, "tries", del.Tries+1, "next_attempt_at", next)
		if rerr := d.Store.RetryWebhookDeliveryLater(ctx, del.TenantID, del.DeliveryUUID, err.Error(), next); rerr != nil {
			log.Warn("record webhook retry", "error", rerr)
		}
		return false
	}
	if err := d.Store.FinishWebhookDelivery(ctx, del.TenantID, del.DeliveryUUID, result, time.Now()); err != nil {
		log.Warn("mark webhook delivery processed", "error", err)
		return false
	}
	log.Info("webhook delivery processed", "result", result, "repository", del.RepositoryUUID,
		"delay_ms", time.Since(del.ReceivedAt).Milliseconds())
	return true
}

// retryDelay grows with the tries so far, capped so that a row waits at most 15 s after the
// dependency is back.
func retryDelay(tries int) time.Duration {
	d := time.Second << min(tries, 4)
	return min(d, 15*time.Second)
}

// work is a delivery being acted on; local says this process received it.
type work struct {
	store.WebhookDelivery
	local bool
}

// errIgnored carries why a delivery needs no work (it is processed with result "ignored").
type errIgnored struct{ why string }

func (e errIgnored) Error() string { return e.why }

func (d *Dispatcher) act(ctx context.Context, del work) (string, error) {
	result, err := d.actOn(ctx, del)
	var ign errIgnored
	if errors.As(err, &ign) {
		d.Logger.Info("webhook delivery needs no work", "delivery", del.DeliveryUUID, "event", del.EventKey, "why", ign.why)
		return domain.WebhookIgnored, nil
	}
	return result, err
}

func (d *Dispatcher) actOn(ctx context.Context, del work) (string, error) {
	var a Action
	if err := json.Unmarshal(del.Action, &a); err != nil {
		return "", errIgnored{"stored action is not readable: " + err.Error()}
	}
	status, err := d.Store.InstallationStatus(ctx, del.TenantID, del.InstallationID)
	if errors.Is(err, store.ErrNotFound) {
		return "", errIgnored{"installation no longer exists"}
	}
	if err != nil {
		return "", fmt.Errorf("load installation: %w", err)
	}
	if status == domain.InstallationRemoving || status == domain.InstallationRemoved {
		return "", errIgnored{"installation is " + status}
	}
	// needs_reauth still records what changed upstream (freshness shows the repository behind),
	// but requests no backup that could not run.
	canBackup := !store.BackupsStopped(status)
	switch a.Kind {
	case KindPush, KindPullRequest:
		return d.wakeBackup(ctx, del, a, canBackup)
	case KindRepositoryCreated:
		repo, _, err := d.findOrAdd(ctx, del, a)
		if err != nil {
			return "", err
		}
		if repo.Included && canBackup {
			if _, err := d.requestBackup(ctx, del, a, repo); err != nil {
				return "", err
			}
		}
		return domain.WebhookRepositoryAdded, nil
	case KindRepositoryUpdated:
		repo, err := d.find(ctx, del, a)
		if err != nil {
			return "", err
		}
		project := projectOf(a.Repository)
		// A payload without a project (or a project's name) says nothing about it.
		projectMoved := project.Key != "" && (project.Key != repo.ProjectKey || (project.Name != "" && project.Name != repo.ProjectName))
		if a.Repository.FullName == repo.FullName && !projectMoved {
			return domain.WebhookRecorded, nil
		}
		if err := d.Store.MoveRepository(ctx, del.TenantID, repo.ID, a.Repository.FullName, nil, project); err != nil {
			return "", err
		}
		if a.Repository.FullName == repo.FullName {
			// Moved to another project (or the project renamed): the name is unchanged.
			d.audit(ctx, del, "repository.project_changed", repo.ID, map[string]any{"full_name": repo.FullName,
				"from": repo.ProjectKey, "to": project.Key})
			return domain.WebhookProjectChanged, nil
		}
		d.audit(ctx, del, "repository.renamed", repo.ID, map[string]any{"from": repo.FullName, "to": a.Repository.FullName})
		return domain.WebhookRenamed, nil
	case KindRepositoryDeleted:
		repo, err := d.find(ctx, del, a)
		if err != nil {
			return "", err
		}
		if err := d.Store.MarkRepositoryDeletedUpstream(ctx, del.TenantID, repo.ID); err != nil {
			return "", err
		}
		d.audit(ctx, del, "repository.deleted_upstream", repo.ID, map[string]any{"full_name": repo.FullName})
		return domain.WebhookMarkedDeleted, nil
	case KindRepositoryTransferred:
		return d.transfer(ctx, del, a, canBackup)
	}
	return domain.WebhookRecorded, nil
}

// wakeBackup requests a backup of the pushed repository (adding it first if it was created since
// the last sync) and notes the push for freshness.
func (d *Dispatcher) wakeBackup(ctx context.Context, del work, a Action, canBackup bool) (string, error) {
	var repo store.Repository
	var added bool
	var err error
	if a.Kind == KindPush {
		repo, added, err = d.findOrAdd(ctx, del, a)
	} else {
		repo, err = d.find(ctx, del, a)
	}
	if err != nil {
		return "", err
	}
	if a.Kind == KindPush {
		if err := d.Store.RecordPush(ctx, del.TenantID, repo.ID, del.ReceivedAt); err != nil {
			return "", err
		}
		if repo.Status == domain.RepositoryDeletedUpstream {
			// A push proves the repository exists (restored upstream, or a listing missed it).
			if err := d.Store.MoveRepository(ctx, del.TenantID, repo.ID, a.Repository.FullName, nil, projectOf(a.Repository)); err != nil {
				return "", err
			}
		}
	}
	if !repo.Included {
		return "", errIgnored{"repository " + repo.FullName + " is excluded from backups"}
	}
	if !canBackup {
		return "", errIgnored{"the installation needs to be reconnected before it can back up"}
	}
	covered, err := d.requestBackup(ctx, del, a, repo)
	if err != nil {
		return "", err
	}
	if added {
		return domain.WebhookRepositoryAdded, nil
	}
	if covered {
		return domain.WebhookCoalesced, nil
	}
	return domain.WebhookBackupRequested, nil
}

// requestBackup sends the repository's backup request for del, unless one this process sent
// after receiving del already covers it (covered).
func (d *Dispatcher) requestBackup(ctx context.Context, del work, a Action, repo store.Repository) (covered bool, err error) {
	reqs := d.signals.of(repo.ID)
	reqs.mu.Lock()
	defer reqs.mu.Unlock()
	// A PR event names its PR for the export step, which a request covering only the code
	// would lose; signals are cheap.
	if a.PullRequestID == 0 && del.local && !reqs.sent.IsZero() && !reqs.sent.Before(del.ReceivedAt) {
		return true, nil
	}
	sent := time.Now()
	callCtx, cancel := context.WithTimeout(ctx, d.CallTimeout)
	defer cancel()
	_, err = backupqueue.Request(callCtx, d.Temporal, d.Backups, backupqueue.Target(repo), workflows.BackupRequest{
		Trigger:     domain.TriggerWebhook,
		DeliveryID:  del.DeliveryUUID.String(),
		RequestedAt: del.ReceivedAt.UTC(),
		Event:       del.EventKey,
		PushedRefs:  a.Refs,
		// Named so the export step refetches it even if its updated_on did not move.
		PullRequestID: a.PullRequestID,
	})
	if err == nil {
		reqs.sent = sent
	}
	return false, err
}

// find is the installation's row of the delivery's repository; an unknown one needs no work
// (the next sync lists it).
func (d *Dispatcher) find(ctx context.Context, del work, a Action) (store.Repository, error) {
	repo, err := d.Store.RepositoryByProviderUUID(ctx, del.TenantID, del.InstallationID, a.Repository.UUID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Repository{}, errIgnored{"repository " + a.Repository.FullName + " is not known to the installation"}
	}
	return repo, err
}

// findOrAdd is find, adding a repository of one of the installation's workspaces by the
// installation's default-include rule.
func (d *Dispatcher) findOrAdd(ctx context.Context, del work, a Action) (store.Repository, bool, error) {
	repo, err := d.Store.RepositoryByProviderUUID(ctx, del.TenantID, del.InstallationID, a.Repository.UUID)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return repo, false, err
	}
	ws, err := d.Store.WorkspaceByProvider(ctx, del.TenantID, del.InstallationID, a.Repository.WorkspaceUUID, a.Repository.WorkspaceSlug)
	if errors.Is(err, store.ErrNotFound) {
		return store.Repository{}, false, errIgnored{"workspace " + a.Repository.WorkspaceSlug + " is not one of the installation's"}
	}
	if err != nil {
		return store.Repository{}, false, err
	}
	repo, err = d.addRepository(ctx, del, a, ws.ID)
	return repo, err == nil, err
}

func (d *Dispatcher) addRepository(ctx context.Context, del work, a Action, workspaceID uuid.UUID) (store.Repository, error) {
	id, _, err := d.Store.UpsertRepository(ctx, store.Repository{
		TenantID: del.TenantID, InstallationID: del.InstallationID, WorkspaceID: &workspaceID,
		ProviderUUID: a.Repository.UUID, FullName: a.Repository.FullName, IsPrivate: a.Repository.IsPrivate,
		ProjectKey: a.Repository.ProjectKey, ProjectName: a.Repository.ProjectName,
	})
	if err != nil {
		return store.Repository{}, err
	}
	repo, err := d.Store.GetRepository(ctx, del.TenantID, id)
	if err != nil {
		return store.Repository{}, err
	}
	d.audit(ctx, del, "repository.added", repo.ID, map[string]any{"full_name": repo.FullName, "included": repo.Included})
	return repo, nil
}

// transfer follows a repository into another workspace: moved when both are the installation's,
// added when it arrives from elsewhere, marked deleted upstream when it leaves.
func (d *Dispatcher) transfer(ctx context.Context, del work, a Action, canBackup bool) (string, error) {
	repo, err := d.Store.RepositoryByProviderUUID(ctx, del.TenantID, del.InstallationID, a.Repository.UUID)
	known := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	ws, err := d.Store.WorkspaceByProvider(ctx, del.TenantID, del.InstallationID, a.Repository.WorkspaceUUID, a.Repository.WorkspaceSlug)
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return "", err
	case err != nil && known:
		if err := d.Store.MarkRepositoryDeletedUpstream(ctx, del.TenantID, repo.ID); err != nil {
			return "", err
		}
		d.audit(ctx, del, "repository.transferred_out", repo.ID, map[string]any{"full_name": repo.FullName, "to": a.Repository.FullName})
		return domain.WebhookMarkedDeleted, nil
	case err != nil:
		return "", errIgnored{"repository moved between workspaces the installation does not watch"}
	case known:
		if err := d.Store.MoveRepository(ctx, del.TenantID, repo.ID, a.Repository.FullName, &ws.ID, projectOf(a.Repository)); err != nil {
			return "", err
		}
		d.audit(ctx, del, "repository.transferred", repo.ID, map[string]any{"from": repo.FullName, "to": a.Repository.FullName})
		return domain.WebhookMoved, nil
	}
	added, err := d.addRepository(ctx, del, a, ws.ID)
	if err != nil {
		return "", err
	}
	if added.Included && canBackup {
		if _, err := d.requestBackup(ctx, del, a, added); err != nil {
			return "", err
		}
	}
	return domain.WebhookRepositoryAdded, nil
}

func (d *Dispatcher) audit(ctx context.Context, del work, action string, repoID uuid.UUID, details map[string]any) {
	details["delivery"] = del.DeliveryUUID.String()
	details["event"] = del.EventKey
	raw, _ := json.Marshal(details)
	if err := d.Store.RecordAudit(ctx, store.AuditEvent{
		TenantID: del.TenantID, Actor: "system:webhook", Action: action, TargetType: "repository", TargetID: repoID.String(), Details: raw,
	}); err != nil {
		d.Logger.Warn("audit webhook change", "action", action, "error", err)
	}
}

// projectOf is the project a payload says the repository is in; zero (keep the stored one)
// when it said none.
func projectOf(r RepositoryRef) store.Project {
	return store.Project{Key: r.ProjectKey, Name: r.ProjectName}
}
