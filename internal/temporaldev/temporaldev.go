// Package temporaldev runs `temporal server start-dev` (the Temporal CLI's single-process dev
// server with its Web UI) as a child process, for `gitsec dev` and for tests.
package temporaldev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/gitsec/gitsec/internal/childprocess"
)

// Options configure the dev server. Binary is required.
type Options struct {
	// Binary is the path of the `temporal` CLI.
	Binary string
	// DBFile is the SQLite file keeping workflows across restarts; empty keeps them in memory.
	DBFile string
	// Port is the frontend gRPC port on 127.0.0.1; 0 picks a free one.
	Port int
	// UIPort is the Web UI port; 0 picks a free one, -1 runs without UI.
	UIPort int
	// Namespace is created at start; empty means "default".
	Namespace string
	// SearchAttributes maps custom search attribute names to their type (Keyword, Text, Int,
	// Double, Bool, Datetime, KeywordList); they are registered on Namespace.
	SearchAttributes map[string]string
	// LogFile receives the server's output; empty means a temporary file removed by Stop.
	LogFile string
	Logger  *slog.Logger
}

// Server is a running dev server owned by this process.
type Server struct {
	hostPort   string
	uiPort     int
	namespace  string
	logFile    string
	ownLogFile bool
	logger     *slog.Logger
	proc       *childprocess.Process
}

// stopGrace is how long the server gets to shut down on SIGTERM before it is killed.
const stopGrace = 10 * time.Second

// Start runs the dev server and returns once a client can reach the namespace and every requested
// search attribute is registered on it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Binary == "" {
		return nil, errors.New("start temporal dev server: no binary given")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	namespace := opts.Namespace
	if namespace == "" {
		namespace = "default"
	}
	saTypes, err := parseSearchAttributeTypes(opts.SearchAttributes)
	if err != nil {
		return nil, fmt.Errorf("start temporal dev server: %w", err)
	}
	s := &Server{namespace: namespace, logFile: opts.LogFile, logger: logger}
	if s.logFile == "" {
		f, err := os.CreateTemp("", "temporal-dev-*.log")
		if err != nil {
			return nil, fmt.Errorf("start temporal dev server: create log file: %w", err)
		}
		f.Close()
		s.logFile, s.ownLogFile = f.Name(), true
	}
	// A picked free port can be taken before the server binds it: worth another try.
	for attempt := 1; ; attempt++ {
		err = s.run(ctx, opts)
		pickedPorts := opts.Port == 0 || opts.UIPort == 0
		if err == nil || !pickedPorts || attempt == 3 || ctx.Err() != nil ||
			!strings.Contains(strings.ToLower(childprocess.LogTail(s.logFile)), "address already in use") {
			break
		}
		logger.Warn("temporal dev server could not bind its ports, retrying", "err", err)
	}
	if err != nil {
		err = fmt.Errorf("start temporal dev server: %w\n%s", err, childprocess.LogTail(s.logFile))
		s.removeOwnLogFile()
		return nil, err
	}
	if err := s.ensureSearchAttributes(ctx, saTypes); err != nil {
		err = fmt.Errorf("start temporal dev server: %w\n%s", err, childprocess.LogTail(s.logFile))
		s.Stop()
		return nil, err
	}
	logger.Info("temporal dev server started", "host_port", s.hostPort, "ui", s.UIURL(), "namespace", namespace)
	return s, nil
}

func (s *Server) run(ctx context.Context, opts Options) error {
	port := opts.Port
	var err error
	if port == 0 {
		if port, err = childprocess.FreePort(); err != nil {
			return err
		}
	}
	s.hostPort = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(port), "--log-level", "warn"}
	switch {
	case opts.UIPort < 0:
		args = append(args, "--headless")
	case opts.UIPort == 0:
		if s.uiPort, err = childprocess.FreePort(); err != nil {
			return err
		}
	default:
		s.uiPort = opts.UIPort
	}
	if s.uiPort > 0 {
		args = append(args, "--ui-port", strconv.Itoa(s.uiPort))
	}
	if opts.DBFile != "" {
		if err := os.MkdirAll(filepath.Dir(opts.DBFile), 0o755); err != nil {
			return fmt.Errorf("create directory for %s: %w", opts.DBFile, err)
		}
		args = append(args, "--db-filename", opts.DBFile)
	}
	if s.namespace != "default" { // always created; naming it again is redundant
		args = append(args, "--namespace", s.namespace)
	}
	names := make([]string, 0, len(opts.SearchAttributes))
	for name := range opts.SearchAttributes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "--search-attribute", name+"="+opts.SearchAttributes[name])
	}

	cmd := exec.Command(opts.Binary, args...)
	// A user's ~/.config/temporalio settings must not redirect the dev server.
	cmd.Env = append(os.Environ(), "TEMPORAL_ENV=", "TEMPORAL_ADDRESS=")
	s.proc, err = childprocess.Start(cmd, childprocess.Options{LogFile: s.logFile, StopSignal: syscall.SIGTERM})
	if err != nil {
		return fmt.Errorf("run %s: %w", opts.Binary, err)
	}
	if err := s.proc.WaitReady(ctx, 200*time.Millisecond, s.checkReady); err != nil {
		s.stopProcess()
		return fmt.Errorf("wait for temporal on %s: %w", s.hostPort, err)
	}
	return nil
}

func (s *Server) checkReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return fmt.Errorf("check health: %w", err)
	}
	if _, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.namespace}); err != nil {
		return fmt.Errorf("describe namespace %s: %w", s.namespace, err)
	}
	return nil
}

func (s *Server) dial(ctx context.Context) (client.Client, error) {
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  s.hostPort,
		Namespace: s.namespace,
		Logger:    sdklog.NewStructuredLogger(s.logger),
	})
	if err != nil {
		return nil, fmt.Errorf("dial temporal at %s: %w", s.hostPort, err)
	}
	return c, nil
}

// ensureSearchAttributes registers whatever start-dev did not (e.g. attributes added to an
// existing --db-filename namespace), so callers can rely on every requested attribute existing.
func (s *Server) ensureSearchAttributes(ctx context.Context, want map[string]enumspb.IndexedValueType) error {
	if len(want) == 0 {
		return nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	existing, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.namespace})
	if err != nil {
		return fmt.Errorf("list search attributes of %s: %w", s.namespace, err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range want {
		got, ok := existing.GetCustomAttributes()[name]
		switch {
		case !ok:
			missing[name] = typ
		case got != typ:
			return fmt.Errorf("search attribute %s exists with type %s, want %s", name, got, typ)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	s.logger.Info("registering search attributes", "namespace", s.namespace, "count", len(missing))
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        s.namespace,
		SearchAttributes: missing,
	})
	var exists *serviceerror.AlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("add search attributes to %s: %w", s.namespace, err)
	}
	return nil
}

func parseSearchAttributeTypes(attrs map[string]string) (map[string]enumspb.IndexedValueType, error) {
	types := make(map[string]enumspb.IndexedValueType, len(attrs))
	for name, typeName := range attrs {
		typ, err := enumspb.IndexedValueTypeFromString(typeName)
		if err != nil || typ == enumspb.INDEXED_VALUE_TYPE_UNSPECIFIED {
			return nil, fmt.Errorf("search attribute %s: unknown type %q", name, typeName)
		}
		types[name] = typ
	}
	return types, nil
}

// HostPort returns the frontend address for client.Options.HostPort.
func (s *Server) HostPort() string { return s.hostPort }

// Namespace returns the namespace created at start.
func (s *Server) Namespace() string { return s.namespace }

// UIURL returns the Web UI address, or "" when running headless.
func (s *Server) UIURL() string {
	if s.uiPort <= 0 {
		return ""
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.uiPort))
}

// Stop terminates the server (SIGTERM, then SIGKILL after a grace period) and waits for it.
func (s *Server) Stop() error {
	if s == nil || s.proc == nil {
		return nil
	}
	err := s.stopProcess()
	s.removeOwnLogFile()
	if err != nil {
		return fmt.Errorf("stop temporal dev server: %w", err)
	}
	s.logger.Info("temporal dev server stopped", "host_port", s.hostPort)
	return nil
}

func (s *Server) stopProcess() error {
	killed, err := s.proc.StopWithin(stopGrace)
	if killed {
		s.logger.Warn("temporal dev server ignored SIGTERM and was killed", "grace", stopGrace)
	}
	return err
}

func (s *Server) removeOwnLogFile() {
	if s.ownLogFile {
		os.Remove(s.logFile)
	}
}
