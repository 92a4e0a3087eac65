package temporaldev

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/workflows"
)

func temporalBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
	bin := filepath.Join(dir, "bin", "temporal")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("temporal CLI missing (run scripts/install-tools.sh): %v", err)
	}
	return bin
}

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start dev server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop dev server: %v", err)
		}
	})
	return s
}

func customSearchAttributes(t *testing.T, s *Server) map[string]enumspb.IndexedValueType {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{HostPort: s.HostPort(), Namespace: s.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetCustomAttributes()
}

func TestPersistentServerKeepsNamespaceAndSearchAttributesAcrossRestart(t *testing.T) {
	dbFile := filepath.Join(t.TempDir(), "state", "temporal.db")
	attrs := workflows.SearchAttributeTypes()
	opts := Options{
		Binary:           temporalBinary(t),
		DBFile:           dbFile,
		Namespace:        "gitsec-dev",
		SearchAttributes: attrs,
	}
	s := startServer(t, opts)
	if s.Namespace() != "gitsec-dev" {
		t.Fatalf("namespace = %q", s.Namespace())
	}
	got := customSearchAttributes(t, s)
	for name := range attrs {
		if got[name] != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			t.Errorf("search attribute %s = %v, want Keyword (all: %v)", name, got[name], got)
		}
	}
	resp, err := http.Get(s.UIURL())
	if err != nil {
		t.Fatalf("web UI: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("web UI status = %d", resp.StatusCode)
	}
	hostPort := s.HostPort()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", hostPort, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", hostPort)
	}

	// The attributes already exist in the database now, and one more is asked for.
	withExtra := map[string]string{"GitsecRestartProbe": "Int"}
	for name, typ := range attrs {
		withExtra[name] = typ
	}
	opts.SearchAttributes = withExtra
	opts.UIPort = -1
	again := startServer(t, opts)
	if again.UIURL() != "" {
		t.Fatalf("headless server has UI URL %q", again.UIURL())
	}
	got = customSearchAttributes(t, again)
	for name := range attrs {
		if got[name] != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			t.Errorf("after restart, search attribute %s = %v, want Keyword", name, got[name])
		}
	}
	if got["GitsecRestartProbe"] != enumspb.INDEXED_VALUE_TYPE_INT {
		t.Errorf("after restart, GitsecRestartProbe = %v, want Int", got["GitsecRestartProbe"])
	}
}

func TestConflictingSearchAttributeTypeFails(t *testing.T) {
	dbFile := filepath.Join(t.TempDir(), "temporal.db")
	opts := Options{Binary: temporalBinary(t), DBFile: dbFile, UIPort: -1,
		SearchAttributes: map[string]string{"GitsecTypeProbe": "Keyword"}}
	first := startServer(t, opts)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	opts.SearchAttributes = map[string]string{"GitsecTypeProbe": "Int"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err == nil {
		s.Stop()
		t.Fatal("start with a search attribute registered under another type succeeded")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "GitsecTypeProbe") {
		t.Fatalf("error does not name the attribute: %v", err)
	}
}

func TestUnknownSearchAttributeTypeIsRejected(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: "/nonexistent", SearchAttributes: map[string]string{"X": "Keywords"}})
	if err == nil || !strings.Contains(err.Error(), `unknown type "Keywords"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestPortInUseFailsWithLogTail(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Binary: temporalBinary(t), Port: port, UIPort: -1})
	if err == nil {
		s.Stop()
		t.Fatalf("started on port %d which is in use", port)
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "server log") || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("error lacks the log tail: %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("start waited for the deadline instead of noticing the exit: %v", err)
	}
}
