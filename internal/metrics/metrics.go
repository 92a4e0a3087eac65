// Package metrics holds GitSec's Prometheus metrics: one registry per process (the API, the
// worker, or both in `gitsec dev`), with the Go and process collectors, every GitSec collector
// and Temporal's SDK metrics, served in the Prometheus text format by Handler.
//
// Names follow the Prometheus conventions: a gitsec_ prefix, base units (seconds, bytes) and
// _total on counters. Labels take values from small fixed sets so that cardinality stays bounded;
// the only per-repository label is on gitsec_repository_last_snapshot_timestamp_seconds.
// docs/operations.md ("Metrics") lists every metric and what to alert on.
//
// Every method is safe on a nil *Metrics, which records nothing: code and tests that run
// without metrics pass nil.
package metrics

import (
	"io"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/bitbucket"
)

// EventOther is the event label of webhook deliveries whose X-Event-Key is not one GitSec knows
// (bitbucket.KnownEventKey): anyone can send any header, and it must not become a label value.
const EventOther = "other"

// Buckets of the histograms, in seconds.
var (
	// webhookHandlerBuckets spans 1 ms to 1 s, where a persist-first receiver lives, and up to
	// Bitbucket's 10 s delivery timeout, past which a delivery is retried or lost.
	webhookHandlerBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// pushToSnapshotBuckets spans the quiet period (5 s by default), the max wait (1 m) and a
	// fetch and upload of a large push.
	pushToSnapshotBuckets = []float64{1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600}
	// backupDurationBuckets spans a no-change fetch (about a second) to a first clone of a
	// multi-GB repository.
	backupDurationBuckets = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}
)

// Metrics owns a process's registry and every GitSec collector in it.
type Metrics struct {
	reg *prometheus.Registry

	webhookDeliveries *prometheus.CounterVec
	webhookHandler    prometheus.Histogram
	pushToSnapshot    prometheus.Histogram
	webhookRedrives   *prometheus.CounterVec
	webhookBacklog    prometheus.Gauge

	backupRuns     *prometheus.CounterVec
	backupDuration *prometheus.HistogramVec
	backupBytes    *prometheus.CounterVec
	lastSnapshot   *prometheus.GaugeVec

	drills        *prometheus.CounterVec
	drillDuration *prometheus.HistogramVec

	bitbucketRequests *prometheus.CounterVec
	rateLimits        *rateLimitCollector

	// The tally scope that carries the Temporal SDK's metrics into reg is built on first use by
	// TemporalMetricsHandler and closed by Close.
	temporalOnce    sync.Once
	temporalHandler client.MetricsHandler
	temporalCloser  io.Closer
	closeOnce       sync.Once
	closeErr        error
}

// New builds the registry of one process, with the Go and process collectors and
// gitsec_build_info{version,goversion} set to 1.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		webhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_webhook_deliveries_total",
			Help: "Bitbucket webhook deliveries received, by event key (\"other\" for keys GitSec does not know) and result (accepted, duplicate, rejected_signature, unknown_installation, malformed, too_large, unavailable).",
		}, []string{"event", "result"}),
		webhookHandler: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gitsec_webhook_handler_duration_seconds",
			Help:    "Time the webhook receiver took to answer a delivery (Bitbucket gives up after 10 s).",
			Buckets: webhookHandlerBuckets,
		}),
		pushToSnapshot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gitsec_push_to_snapshot_seconds",
			Help:    "Time from receiving a push webhook to the committed snapshot that contains it.",
			Buckets: pushToSnapshotBuckets,
		}),
		webhookRedrives: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_webhook_redrives_total",
			Help: "Webhook outbox rows the re-driver signalled again after they were left behind, by result.",
		}, []string{"result"}),
		webhookBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitsec_webhook_outbox_pending",
			Help: "Webhook deliveries persisted but not yet handed to Temporal, as last counted by the re-driver.",
		}),
		backupRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_backup_runs_total",
			Help: "Backup runs finished, by trigger (initial, schedule, webhook, manual, restore-drill) and result.",
		}, []string{"trigger", "result"}),
		drills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_restore_drills_total",
			Help: "Restore drills finished, by trigger (manual, schedule) and result (passed, failed).",
		}, []string{"trigger", "result"}),
		drillDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitsec_restore_drill_duration_seconds",
			Help:    "Duration of restore drills (download, verify, fsck, exports), by result.",
			Buckets: backupDurationBuckets,
		}, []string{"result"}),
		backupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitsec_backup_duration_seconds",
			Help:    "Duration of backup runs, by trigger.",
			Buckets: backupDurationBuckets,
		}, []string{"trigger"}),
		backupBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_backup_uploaded_bytes_total",
			Help: "Bytes backup runs uploaded to storage (new packs, indexes, exports and manifests), by trigger.",
		}, []string{"trigger"}),
		lastSnapshot: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitsec_repository_last_snapshot_timestamp_seconds",
			Help: "Unix time of the last successful snapshot of a repository recorded by this process.",
		}, []string{"repository"}),
		bitbucketRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitsec_bitbucket_requests_total",
			Help: "Requests sent to Bitbucket: kind rest (one HTTP attempt, retries included) or git (one git operation), by status class (2xx..5xx, or error when there was no HTTP answer).",
		}, []string{"kind", "class"}),
		rateLimits: newRateLimitCollector(),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gitsec_build_info",
		Help: "Always 1; the labels say which GitSec build and Go version this process runs.",
	}, []string{"version", "goversion"})
	if version == "" {
		version = "unknown"
	}
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.webhookDeliveries, m.webhookHandler, m.pushToSnapshot, m.webhookRedrives, m.webhookBacklog,
		m.backupRuns, m.backupDuration, m.backupBytes, m.lastSnapshot, m.drills, m.drillDuration,
		m.bitbucketRequests, m.rateLimits,
	)
	return m
}

// Handler serves the registry in the Prometheus text format (or OpenMetrics when the scraper
// asks for it). A nil Metrics answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// Counts scrape errors in the registry itself (promhttp_metric_handler_errors_total).
		Registry:          m.reg,
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		// A scrape never holds more than this many concurrent gathers.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Registry is the process's registry, for tests and for collectors of other packages. Nil for
// a nil Metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// WebhookDelivery counts one webhook delivery. event is its X-Event-Key, recorded as
// EventOther unless bitbucket.KnownEventKey knows it; result is one of the receiver's answers,
// the domain.Webhook* results (accepted, duplicate, rejected_signature, unknown_installation,
// malformed, too_large, unavailable): any string is recorded, but each is a time series.
func (m *Metrics) WebhookDelivery(event, result string) {
	if m == nil {
		return
	}
	if !bitbucket.KnownEventKey(event) {
		event = EventOther
	}
	m.webhookDeliveries.WithLabelValues(event, result).Inc()
}

// ObserveWebhookHandler records how long the receiver took to answer one delivery.
func (m *Metrics) ObserveWebhookHandler(d time.Duration) {
	if m == nil {
		return
	}
	m.webhookHandler.Observe(d.Seconds())
}

// ObservePushToSnapshot records the time from a push webhook's arrival to its snapshot.
func (m *Metrics) ObservePushToSnapshot(d time.Duration) {
	if m == nil {
		return
	}
	m.pushToSnapshot.Observe(d.Seconds())
}

// WebhookRedrive counts one outbox row the re-driver handled, by result (e.g. signalled,
// failed).
func (m *Metrics) WebhookRedrive(result string) {
	if m == nil {
		return
	}
	m.webhookRedrives.WithLabelValues(result).Inc()
}

// SetWebhookBacklog records how many outbox rows are waiting to be handed to Temporal.
func (m *Metrics) SetWebhookBacklog(n int) {
	if m == nil {
		return
	}
	m.webhookBacklog.Set(float64(n))
}

// BackupRun records one finished backup run: trigger is a domain.TriggerKind, result a small
// fixed set (e.g. succeeded, unchanged, failed), d its duration and bytesUploaded what it wrote
// to storage.
func (m *Metrics) BackupRun(trigger, result string, d time.Duration, bytesUploaded int64) {
	if m == nil {
		return
	}
	m.backupRuns.WithLabelValues(trigger, result).Inc()
	m.backupDuration.WithLabelValues(trigger).Observe(d.Seconds())
	if bytesUploaded > 0 {
		m.backupBytes.WithLabelValues(trigger).Add(float64(bytesUploaded))
	} else {
		// Create the series so rate() sees a zero, not a missing series.
		m.backupBytes.WithLabelValues(trigger)
	}
}

// RestoreDrill records one finished restore drill: trigger is a domain.TriggerKind, result
// domain.DrillPassed or domain.DrillFailed.
func (m *Metrics) RestoreDrill(trigger, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.drills.WithLabelValues(trigger, result).Inc()
	m.drillDuration.WithLabelValues(result).Observe(d.Seconds())
}

// SetLastSnapshot records the time of a repository's last successful snapshot. repository
// identifies the repository row (pass its GitSec ID: two tenants may back up the same
// Bitbucket repository, and their full names would collide).
func (m *Metrics) SetLastSnapshot(repository string, at time.Time) {
	if m == nil {
		return
	}
	m.lastSnapshot.WithLabelValues(repository).Set(float64(at.UnixNano()) / 1e9)
}

// ForgetRepository drops a repository's last-snapshot series (it was excluded, deleted or
// uninstalled), so that the series set follows the repositories still backed up.
func (m *Metrics) ForgetRepository(repository string) {
	if m == nil {
		return
	}
	m.lastSnapshot.DeleteLabelValues(repository)
}

// BitbucketRequest counts one request to Bitbucket: kind is bitbucket.RequestKindREST or
// RequestKindGit, class a bitbucket.RequestClass* value. It has the signature of
// bitbucket.Options.OnRequest.
func (m *Metrics) BitbucketRequest(kind, class string) {
	if m == nil {
		return
	}
	m.bitbucketRequests.WithLabelValues(kind, class).Inc()
}

// WatchRateLimits reports, at every scrape, the remaining budget of each credential as
// gitsec_bitbucket_ratelimit_remaining{budget,credential}. budget is "rest" or "git"; remaining
// returns the current value per credential ID (bitbucket.LimiterRegistry.Remaining). A second
// call for the same budget replaces the first.
func (m *Metrics) WatchRateLimits(budget string, remaining func() map[string]float64) {
	if m == nil || remaining == nil {
		return
	}
	m.rateLimits.watch(budget, remaining)
}

// rateLimitCollector reads the limiters' state when scraped, so the gauge is always current
// and no code path has to remember to update it.
type rateLimitCollector struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources map[string]func() map[string]float64
}

func newRateLimitCollector() *rateLimitCollector {
	return &rateLimitCollector{
		desc: prometheus.NewDesc("gitsec_bitbucket_ratelimit_remaining",
			"Requests this process may send to Bitbucket at once right now on a credential's budget (rest or git): the client's token bucket, at most its burst; 0 or less means requests are waiting for the budget.",
			[]string{"budget", "credential"}, nil),
		sources: map[string]func() map[string]float64{},
	}
}

func (c *rateLimitCollector) watch(budget string, remaining func() map[string]float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[budget] = remaining
}

func (c *rateLimitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *rateLimitCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := make(map[string]func() map[string]float64, len(c.sources))
	for budget, fn := range c.sources {
		sources[budget] = fn
	}
	c.mu.Unlock()
	for budget, fn := range sources {
		for credential, v := range fn() {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, budget, credential)
		}
	}
}
