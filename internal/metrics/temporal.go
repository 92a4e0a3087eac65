package metrics

import (
	"io"
	"log/slog"
	"time"

	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
)

// temporalReportInterval is how often tally copies the SDK's metrics into the registry: a
// scrape sees them at most this late.
const temporalReportInterval = time.Second

// TemporalMetricsHandler is the client.Options.MetricsHandler that puts the Temporal SDK's own
// metrics (temporal_request_total, temporal_workflow_task_schedule_to_start_latency_seconds,
// temporal_activity_execution_failed_total, ...) into this registry: a tally root scope with
// the Prometheus sanitize options and naming scope (counters end in _total, timers in _seconds
// and are histograms), reporting to the registry. Every Temporal client of the process (the
// API's and the worker's in `gitsec dev`) shares it. Nil for a nil Metrics, which makes the SDK
// record nothing.
func (m *Metrics) TemporalMetricsHandler() client.MetricsHandler {
	if m == nil {
		return nil
	}
	m.temporalOnce.Do(func() {
		// The reporter is built from Options, not from tallyprom.Configuration.NewReporter, which
		// also registers a handler on http.DefaultServeMux (and panics when called twice).
		reporter := tallyprom.NewReporter(tallyprom.Options{
			Registerer:       m.reg,
			DefaultTimerType: tallyprom.HistogramTimerType,
			// The default panics. A metric whose labels clash with an earlier one is dropped,
			// once, with a warning: it must not stop the worker.
			OnRegisterError: func(err error) {
				slog.Warn("a Temporal SDK metric could not be registered; it is not exported", "error", err)
			},
		})
		scope, closer := tally.NewRootScope(tally.ScopeOptions{
			CachedReporter:  reporter,
			Separator:       tallyprom.DefaultSeparator,
			SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
		}, temporalReportInterval)
		m.temporalCloser = closer
		m.temporalHandler = sdktally.NewMetricsHandler(sdktally.NewPrometheusNamingScope(scope))
	})
	return m.temporalHandler
}

// Close stops the Temporal metrics scope after a last report. Call it once the Temporal clients
// are closed; TemporalMetricsHandler returns nil after Close if it was never called before.
func (m *Metrics) Close() error {
	if m == nil {
		return nil
	}
	m.temporalOnce.Do(func() {})
	m.closeOnce.Do(func() {
		if m.temporalCloser != nil {
			m.closeErr = m.temporalCloser.Close()
		}
	})
	return m.closeErr
}

var _ io.Closer = (*Metrics)(nil)
