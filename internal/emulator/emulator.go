// Package emulator is a Bitbucket Cloud emulator for tests and demos: REST 2.0, OAuth 2.0,
// git smart HTTP (served by the real git http-backend over real bare repositories), signed
// webhook deliveries and injectable faults. It follows the shapes of the real API as
// recorded in shared/reference/fixtures; it never replaces the real client code path.
package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options configure Start.
type Options struct {
	Listen         string        // "127.0.0.1:0" in tests
	DataDir        string        // state directory the emulator owns; survives restarts
	Seed           *Seed         // applied only when DataDir holds no state yet
	AccessTokenTTL time.Duration // default 2h; short in tests
	Consumers      []Consumer    // extra OAuth consumers, merged by key on every start
	Logger         *slog.Logger
	Faults         []FaultRule // fault rules active from the start
	RateLimits     *RateLimits // per-user hourly budgets; nil disables them (the default)
	// OnRequest, when set, sees every request before it is served (the benchmark counts git
	// and REST requests with it).
	OnRequest func(*http.Request)
}

// Server is a running emulator.
type Server struct {
	opts    Options
	log     *slog.Logger
	dataDir string
	ttl     time.Duration

	mu sync.Mutex // guards st and everything derived from it
	st *state

	ln      net.Listener
	httpSrv *http.Server
	base    string

	faults    *faultSet
	limits    *rateLimiter
	hooks     *deliverer
	repoLocks sync.Map // full name -> *sync.Mutex, serialises ref updates per repository

	ctx    context.Context
	cancel context.CancelFunc
	served chan struct{}
}

// Start loads (or seeds) the state in opts.DataDir and serves until ctx is cancelled or
// Close is called.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("emulator: DataDir is required")
	}
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("emulator needs the git CLI (for http-backend and fast-import): %w", err)
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:7990"
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = 2 * time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "bitbucket-emulator")
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("emulator data dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "git"), 0o755); err != nil {
		return nil, fmt.Errorf("create emulator data dir: %w", err)
	}
	st, existed, err := loadState(dataDir)
	if err != nil {
		return nil, err
	}
	faults, err := newFaultSet(opts.Faults)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: log, dataDir: dataDir, ttl: opts.AccessTokenTTL, st: st,
		faults: faults, limits: newRateLimiter(opts.RateLimits),
		ctx: runCtx, cancel: cancel, served: make(chan struct{}),
	}
	s.hooks = newDeliverer(s)
	if !existed && opts.Seed != nil {
		started := time.Now()
		if err := s.applySeed(ctx, opts.Seed); err != nil {
			cancel()
			return nil, err
		}
		log.Info("seeded emulator", "repositories", len(st.Repositories), "duration", time.Since(started).Round(time.Millisecond))
	}
	for _, c := range opts.Consumers {
		upsertConsumer(st, c)
	}
	if err := st.save(dataDir); err != nil {
		cancel()
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("emulator listen on %s: %w", opts.Listen, err)
	}
	s.ln = ln
	s.base = "http://" + ln.Addr().String()
	handler := s.routes()
	if opts.OnRequest != nil {
		inner := handler
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			opts.OnRequest(r)
			inner.ServeHTTP(w, r)
		})
	}
	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.served)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("emulator server stopped", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-runCtx.Done():
		}
	}()
	log.Info("bitbucket emulator listening", "url", s.base, "data_dir", dataDir)
	return s, nil
}

// URL is the base URL: REST at URL()+"/2.0", OAuth at URL()+"/site/oauth2", git at
// URL()+"/{workspace}/{slug}.git".
func (s *Server) URL() string { return s.base }

// Close stops serving, waits briefly for in-flight webhook deliveries and saves the state.
func (s *Server) Close() error {
	select {
	case <-s.ctx.Done():
		<-s.served
		return nil
	default:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.httpSrv.Shutdown(shutdownCtx)
	if err != nil {
		_ = s.httpSrv.Close()
	}
	<-s.served
	s.cancel()
	s.hooks.wait(5 * time.Second)
	s.mu.Lock()
	saveErr := s.st.save(s.dataDir)
	s.mu.Unlock()
	if saveErr != nil {
		return saveErr
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("emulator shutdown: %w", err)
	}
	return nil
}

func (s *Server) apiBase() string { return s.base + "/2.0" }

func (s *Server) gitDir(workspace, slug string) string {
	return filepath.Join(s.dataDir, "git", workspace, slug+".git")
}

func (s *Server) repoLock(fullName string) *sync.Mutex {
	m, _ := s.repoLocks.LoadOrStore(fullName, &sync.Mutex{})
	return m.(*sync.Mutex)
}

// saveLocked persists the state; callers hold s.mu.
func (s *Server) saveLocked() error {
	if err := s.st.save(s.dataDir); err != nil {
		s.log.Error("save emulator state", "err", err)
		return err
	}
	return nil
}

func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	s.registerREST(api)
	oauth := http.NewServeMux()
	s.registerOAuth(oauth)
	admin := http.NewServeMux()
	s.registerAdmin(admin)
	git := s.gitHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "/_emulator/") {
			admin.ServeHTTP(w, r)
			return
		}
		s.withFaults(w, r, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case p == "/2.0" || strings.HasPrefix(p, "/2.0/"):
				api.ServeHTTP(w, r)
			case strings.HasPrefix(p, "/site/oauth2/"):
				oauth.ServeHTTP(w, r)
			case strings.Contains(p, ".git/") || strings.HasSuffix(p, ".git"):
				git.ServeHTTP(w, r)
			default:
				writeError(w, http.StatusNotFound, "Resource not found", nil)
			}
		})
	})
}

type obj = map[string]any

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeError answers with Bitbucket's error envelope.
func writeError(w http.ResponseWriter, status int, message string, detail any) {
	e := obj{"message": message}
	if detail != nil {
		e["detail"] = detail
	}
	writeJSON(w, status, obj{"type": "error", "error": e})
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000+00:00") }
