package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/metrics"
)

// Prometheus scrapes /metrics without a tenant token, on the API's own listener.
func TestMetricsNeedNoToken(t *testing.T) {
	f := newFixture(t)
	get := func() (int, string, string) {
		t.Helper()
		resp, err := http.Get(f.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	// Without a registry there is no such route.
	if status, _, _ := get(); status != http.StatusNotFound {
		t.Fatalf("GET /metrics without Metrics = %d, want 404", status)
	}

	m := metrics.New("test")
	m.WebhookDelivery("repo:push", domain.WebhookAccepted)
	f.deps.Metrics = m
	f.serve(t)
	status, contentType, body := get()
	if status != http.StatusOK || !strings.HasPrefix(contentType, "text/plain") {
		t.Fatalf("GET /metrics = %d %s", status, contentType)
	}
	for _, want := range []string{`gitsec_build_info{goversion="`, `version="test"`, `gitsec_webhook_deliveries_total{event="repo:push",result="accepted"} 1`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	// The authenticated API is unchanged.
	if status, _ := f.do(t, "GET", "/api/v1/me", "", ""); status != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/me without a token = %d, want 401", status)
	}
}
