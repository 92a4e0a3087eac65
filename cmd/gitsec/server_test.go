package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/metrics"
)

// The API server must bound every phase of a connection, not only the header read: without
// read, write and idle timeouts a client trickling a body or idling on keep-alive holds a
// goroutine and a descriptor forever. The write timeout must outlast the slowest route.
func TestAPIServerTimeouts(t *testing.T) {
	srv := newAPIServer("127.0.0.1:0", http.NotFoundHandler())
	for name, d := range map[string]int64{
		"ReadHeaderTimeout": int64(srv.ReadHeaderTimeout),
		"ReadTimeout":       int64(srv.ReadTimeout),
		"WriteTimeout":      int64(srv.WriteTimeout),
		"IdleTimeout":       int64(srv.IdleTimeout),
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	if srv.ReadTimeout < srv.ReadHeaderTimeout {
		t.Errorf("ReadTimeout %v is shorter than ReadHeaderTimeout %v", srv.ReadTimeout, srv.ReadHeaderTimeout)
	}
	if srv.WriteTimeout <= oauthExchangeTimeout {
		t.Errorf("WriteTimeout %v does not outlast the OAuth code exchange (%v): the callback's answer would be cut off", srv.WriteTimeout, oauthExchangeTimeout)
	}
}

// The worker's metrics listener serves the registry at GET /metrics only, with every timeout
// set, and a port that cannot be bound fails the start naming the variable.
func TestWorkerMetricsServer(t *testing.T) {
	srv := newMetricsServer(nil)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("timeouts not all set: %+v", srv)
	}
	m := metrics.New("v-test")
	log := slog.New(slog.DiscardHandler)
	addr, stop, err := startMetricsServer("127.0.0.1:0", m, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(string(body), `gitsec_build_info{goversion="`) || !strings.Contains(string(body), `version="v-test"`) {
		t.Fatalf("GET /metrics = %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for path, want := range map[string]int{"/": http.StatusNotFound, "/api/v1/me": http.StatusNotFound} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	if _, _, err := startMetricsServer(addr.String(), m, log); err == nil || !strings.Contains(err.Error(), "GITSEC_METRICS_ADDR") {
		t.Errorf("second listener on %s: err = %v, want one naming GITSEC_METRICS_ADDR", addr, err)
	}
	stop()
	if _, err := http.Get("http://" + addr.String() + "/metrics"); err == nil {
		t.Error("the metrics server still answers after stop")
	}
}
