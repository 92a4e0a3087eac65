package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Temporal: true}))
}

// scrape GETs /metrics from m's handler and parses the text exposition format.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// sample finds the series of family name whose labels include want.
func sample(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := families[name]
	if !ok {
		t.Fatalf("no metric family %s in the scrape", name)
	}
	for _, m := range fam.GetMetric() {
		got := labelsOf(m)
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
				break
			}
		}
		if match {
			return m
		}
	}
	t.Fatalf("%s has no series with labels %v", name, want)
	return nil
}

func TestScrapeHasEveryGitSecMetric(t *testing.T) {
	m := metrics.New("1.2.3")
	m.WebhookDelivery(bitbucket.EventRepoPush, domain.WebhookAccepted)
	m.WebhookDelivery(bitbucket.EventRepoPush, domain.WebhookAccepted)
	m.WebhookDelivery(bitbucket.EventPullRequestCreated, domain.WebhookDuplicate)
	m.ObserveWebhookHandler(3 * time.Millisecond)
	m.ObservePushToSnapshot(12 * time.Second)
	m.WebhookRedrive("signalled")
	m.SetWebhookBacklog(7)
	m.BackupRun("webhook", "succeeded", 90*time.Second, 4096)
	m.BackupRun("schedule", "unchanged", time.Second, 0)
	at := time.Unix(1_760_000_000, 500_000_000)
	m.SetLastSnapshot("repo-1", at)
	m.SetLastSnapshot("repo-2", at)
	m.ForgetRepository("repo-2")
	m.BitbucketRequest(bitbucket.RequestKindREST, bitbucket.RequestClass2xx)
	m.RestoreDrill("schedule", "failed", 3*time.Second)
	m.WatchRateLimits("rest", func() map[string]float64 { return map[string]float64{"inst-a": 12} })

	fams := scrape(t, m)
	checks := []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		value  func(*dto.Metric) float64
		want   float64
	}{
		{"gitsec_build_info", dto.MetricType_GAUGE, map[string]string{"version": "1.2.3"}, gauge, 1},
		{"gitsec_webhook_deliveries_total", dto.MetricType_COUNTER, map[string]string{"event": "repo:push", "result": "accepted"}, counter, 2},
		{"gitsec_webhook_deliveries_total", dto.MetricType_COUNTER, map[string]string{"event": "pullrequest:created", "result": "duplicate"}, counter, 1},
		{"gitsec_webhook_handler_duration_seconds", dto.MetricType_HISTOGRAM, nil, histCount, 1},
		{"gitsec_push_to_snapshot_seconds", dto.MetricType_HISTOGRAM, nil, histSum, 12},
		{"gitsec_webhook_redrives_total", dto.MetricType_COUNTER, map[string]string{"result": "signalled"}, counter, 1},
		{"gitsec_webhook_outbox_pending", dto.MetricType_GAUGE, nil, gauge, 7},
		{"gitsec_backup_runs_total", dto.MetricType_COUNTER, map[string]string{"trigger": "webhook", "result": "succeeded"}, counter, 1},
		{"gitsec_backup_runs_total", dto.MetricType_COUNTER, map[string]string{"trigger": "schedule", "result": "unchanged"}, counter, 1},
		{"gitsec_backup_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"trigger": "webhook"}, histSum, 90},
		{"gitsec_backup_uploaded_bytes_total", dto.MetricType_COUNTER, map[string]string{"trigger": "webhook"}, counter, 4096},
		{"gitsec_backup_uploaded_bytes_total", dto.MetricType_COUNTER, map[string]string{"trigger": "schedule"}, counter, 0},
		{"gitsec_repository_last_snapshot_timestamp_seconds", dto.MetricType_GAUGE, map[string]string{"repository": "repo-1"}, gauge, 1_760_000_000.5},
		{"gitsec_bitbucket_requests_total", dto.MetricType_COUNTER, map[string]string{"kind": "rest", "class": "2xx"}, counter, 1},
		{"gitsec_restore_drills_total", dto.MetricType_COUNTER, map[string]string{"trigger": "schedule", "result": "failed"}, counter, 1},
		{"gitsec_restore_drill_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"result": "failed"}, histSum, 3},
		{"gitsec_bitbucket_ratelimit_remaining", dto.MetricType_GAUGE, map[string]string{"budget": "rest", "credential": "inst-a"}, gauge, 12},
	}
	for _, c := range checks {
		if got := fams[c.name].GetType(); got != c.typ {
			t.Errorf("%s is a %v, want %v", c.name, got, c.typ)
			continue
		}
		if got := c.value(sample(t, fams, c.name, c.labels)); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := labelsOf(sample(t, fams, "gitsec_build_info", nil))["goversion"]; !strings.HasPrefix(got, "go") {
		t.Errorf("gitsec_build_info goversion = %q", got)
	}
	if n := len(fams["gitsec_repository_last_snapshot_timestamp_seconds"].GetMetric()); n != 1 {
		t.Errorf("last snapshot series = %d, want 1 after ForgetRepository", n)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("standard metric %s is missing", name)
		}
	}
}

func counter(m *dto.Metric) float64   { return m.GetCounter().GetValue() }
func gauge(m *dto.Metric) float64     { return m.GetGauge().GetValue() }
func histCount(m *dto.Metric) float64 { return float64(m.GetHistogram().GetSampleCount()) }
func histSum(m *dto.Metric) float64   { return m.GetHistogram().GetSampleSum() }

func TestNamesFollowPrometheusConventions(t *testing.T) {
	m := metrics.New("test")
	// Every vector needs a series to be linted.
	m.WebhookDelivery("repo:push", "accepted")
	m.WebhookRedrive("signalled")
	m.BackupRun("manual", "failed", time.Second, 1)
	m.SetLastSnapshot("r", time.Now())
	m.BitbucketRequest("git", "4xx")
	m.WatchRateLimits("git", func() map[string]float64 { return map[string]float64{"i": 1} })
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "gitsec_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	gitsec := 0
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "gitsec_") {
			continue
		}
		gitsec++
		if f.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		if isCounter := f.GetType() == dto.MetricType_COUNTER; isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: a %v must end in _total exactly when it is a counter", name, f.GetType())
		}
		if f.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("%s: histograms here measure time and must be in seconds", name)
		}
		for _, metric := range f.GetMetric() {
			if _, ok := labelsOf(metric)["repository"]; ok && name != "gitsec_repository_last_snapshot_timestamp_seconds" {
				t.Errorf("%s has a per-repository label", name)
			}
		}
	}
	if gitsec != 12 {
		t.Errorf("gathered %d gitsec_ families, want 12", gitsec)
	}
}

func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *metrics.Metrics
	m.WebhookDelivery("repo:push", "accepted")
	m.ObserveWebhookHandler(time.Millisecond)
	m.ObservePushToSnapshot(time.Second)
	m.WebhookRedrive("signalled")
	m.SetWebhookBacklog(3)
	m.BackupRun("webhook", "succeeded", time.Second, 10)
	m.RestoreDrill("manual", "passed", time.Second)
	m.SetLastSnapshot("r", time.Now())
	m.ForgetRepository("r")
	m.BitbucketRequest("rest", "2xx")
	m.WatchRateLimits("rest", func() map[string]float64 { return nil })
	if m.Registry() != nil || m.TemporalMetricsHandler() != nil || m.Close() != nil {
		t.Fatal("a nil Metrics must have no registry, no Temporal handler and close cleanly")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("nil Metrics handler = %d, want 404", rec.Code)
	}
	// The nil method value is what a Factory without metrics would hold as OnRequest.
	c := bitbucket.New(bitbucket.Options{APIBaseURL: "http://127.0.0.1:1", TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), OnRequest: m.BitbucketRequest, MaxAttempts: 1})
	if _, err := c.CurrentUser(context.Background()); err == nil {
		t.Fatal("CurrentUser against a closed port succeeded")
	}
}

func TestUnknownEventKeysShareOneSeries(t *testing.T) {
	m := metrics.New("test")
	for i := range 500 {
		m.WebhookDelivery(fmt.Sprintf("evil:%d", i), domain.WebhookMalformed)
	}
	m.WebhookDelivery("", domain.WebhookMalformed)
	m.WebhookDelivery(bitbucket.EventRepoPush, domain.WebhookRejectedSignature)
	fams := scrape(t, m)
	series := fams["gitsec_webhook_deliveries_total"].GetMetric()
	var got []string
	for _, s := range series {
		l := labelsOf(s)
		got = append(got, fmt.Sprintf("%s/%s=%v", l["event"], l["result"], s.GetCounter().GetValue()))
	}
	slices.Sort(got)
	want := []string{"other/malformed=501", "repo:push/rejected_signature=1"}
	if !slices.Equal(got, want) {
		t.Fatalf("series = %v, want %v", got, want)
	}
}

func TestBitbucketClientRequestsAreCounted(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/2.0/user" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"type":"user","uuid":"{87bb15eb-47c1-49b3-9f16-ca824a2979a4}","username":"brad"}`)
	}))
	defer srv.Close()
	m := metrics.New("test")
	limiters := bitbucket.NewLimiterRegistry(1000, 20)
	m.WatchRateLimits("rest", limiters.Remaining)
	c := bitbucket.New(bitbucket.Options{
		APIBaseURL:  srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}),
		HTTPClient:  srv.Client(),
		Limiter:     limiters.For("7b0c3c1e-0000-4000-8000-000000000001"),
		OnRequest:   m.BitbucketRequest,
		BaseBackoff: time.Millisecond,
		MaxBackoff:  time.Millisecond,
	})
	if _, err := c.CurrentUser(context.Background()); err != nil {
		t.Fatalf("CurrentUser: %v", err)
	}
	if _, err := c.GetRepository(context.Background(), "acme", "nope"); err == nil {
		t.Fatal("GetRepository of a missing repository succeeded")
	}
	fams := scrape(t, m)
	for class, want := range map[string]float64{"2xx": 1, "4xx": 1, "5xx": 1} {
		if got := counter(sample(t, fams, "gitsec_bitbucket_requests_total", map[string]string{"kind": "rest", "class": class})); got != want {
			t.Errorf("rest %s = %v, want %v", class, got, want)
		}
	}
	// Three requests spent three of the burst of 20.
	remaining := gauge(sample(t, fams, "gitsec_bitbucket_ratelimit_remaining", map[string]string{"budget": "rest", "credential": "7b0c3c1e-0000-4000-8000-000000000001"}))
	if remaining < 17 || remaining > 17.5 {
		t.Errorf("remaining = %v, want about 17", remaining)
	}
}

// waitFor scrapes until ok holds or the deadline passes: tally copies the SDK's metrics into
// the registry once a second, so a family may exist before its values arrive.
func waitFor(t *testing.T, m *metrics.Metrics, what string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		fams := scrape(t, m)
		if ok(fams) {
			return fams
		}
		if time.Now().After(deadline) {
			var names []string
			for n := range fams {
				names = append(names, n)
			}
			slices.Sort(names)
			t.Fatalf("%s never held; families: %v", what, names)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// counterAtLeast is a waitFor condition: a series of name with labels want counts min or more.
func counterAtLeast(name string, want map[string]string, min float64) func(map[string]*dto.MetricFamily) bool {
	return func(fams map[string]*dto.MetricFamily) bool {
		for _, s := range fams[name].GetMetric() {
			got := labelsOf(s)
			match := true
			for k, v := range want {
				match = match && got[k] == v
			}
			if match && s.GetCounter().GetValue() >= min {
				return true
			}
		}
		return false
	}
}

func hasFamily(name string, typ dto.MetricType) func(map[string]*dto.MetricFamily) bool {
	return func(fams map[string]*dto.MetricFamily) bool {
		f, ok := fams[name]
		return ok && f.GetType() == typ && len(f.GetMetric()) > 0
	}
}

func TestTemporalHandlerUsesPrometheusNames(t *testing.T) {
	m := metrics.New("test")
	defer m.Close()
	h := m.TemporalMetricsHandler()
	if h == nil || m.TemporalMetricsHandler() != h {
		t.Fatal("TemporalMetricsHandler must return one handler per Metrics")
	}
	h.WithTags(map[string]string{"operation": "StartWorkflowExecution"}).Counter("temporal_request").Inc(2)
	h.Timer("temporal_request_latency").Record(30 * time.Millisecond)
	h.Gauge("temporal_num_pollers").Update(3)
	op := map[string]string{"operation": "StartWorkflowExecution"}
	fams := waitFor(t, m, "temporal_request_total counts 2", counterAtLeast("temporal_request_total", op, 2))
	if got := counter(sample(t, fams, "temporal_request_total", op)); got != 2 {
		t.Errorf("temporal_request_total = %v, want 2", got)
	}
	waitFor(t, m, "a temporal_request_latency_seconds histogram", hasFamily("temporal_request_latency_seconds", dto.MetricType_HISTOGRAM))
	fams = waitFor(t, m, "a temporal_num_pollers gauge", hasFamily("temporal_num_pollers", dto.MetricType_GAUGE))
	// GitSec's own metrics are in the same registry.
	if _, ok := fams["gitsec_build_info"]; !ok {
		t.Error("gitsec_build_info missing next to the Temporal metrics")
	}
}
