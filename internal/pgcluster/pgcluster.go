// Package pgcluster runs a private Postgres cluster from the locally installed Postgres binaries:
// a throw-away one for tests and a long-lived one under .gitsec/ for `gitsec dev`.
//
// As root the server runs as the postgres OS user. When that user cannot reach the requested data
// directory (a clone in root's 0700 home), the cluster lives under RelocationRoot instead and the
// requested path becomes a link to it, so the same data is found again on the next start.
//
// The postmaster runs as a direct child (not daemonised through pg_ctl) in its own process group,
// so that it shuts down with its parent instead of outliving a killed test binary or dev stack.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/childprocess"
)

// Options configure a cluster. Dir is required.
type Options struct {
	// Dir is the data directory. It is created and initialised when it holds no cluster yet; an
	// existing cluster is reused with its data. It may become a link to a relocated cluster (see
	// RelocationRoot).
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// SkipFsync trades safety against OS crashes for speed (initdb --no-sync, fsync=off): for
	// throw-away clusters only.
	SkipFsync bool
	// BinDir holds initdb and postgres; empty means found on PATH or under /usr/lib/postgresql.
	BinDir string
	// LogFile receives the server's output; empty means server.log inside Dir.
	LogFile string
	Logger  *slog.Logger
}

// Cluster is a running Postgres server owned by this process.
type Cluster struct {
	dir        string // where the data is: Options.Dir, or the relocated directory it links to
	requested  string // Options.Dir, absolute
	home       string // the relocated cluster's home under RelocationRoot; empty when in place
	port       int
	logFile    string
	socketDir  string
	ownSockDir bool // socketDir was created by Start (the data dir path was too long for a socket)
	logger     *slog.Logger
	proc       *childprocess.Process
}

// superuser is the role initdb creates; trust auth makes it password-less on loopback only.
const superuser = "postgres"

// maxSocketPath is the usable length of sockaddr_un.sun_path on Linux (108 bytes with the NUL).
const maxSocketPath = 107

// Start initialises Dir when needed and starts the server, returning once it accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("start postgres: no data directory given")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	requested := dir
	dir, home, err := resolveDataDir(requested, cred, logger)
	if err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", requested, err)
	}
	if err := prepareDataDir(ctx, dir, binDir, cred, opts.SkipFsync, logger); err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}
	if err := waitForPreviousPostmaster(ctx, dir); err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}
	logFile := opts.LogFile
	if logFile == "" {
		logFile = filepath.Join(dir, "server.log")
	}

	// A free port can be taken between picking and binding, and a killed previous server's
	// children can hold its shared memory for a moment: both are worth a few retries.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = childprocess.FreePort(); err != nil {
				return nil, fmt.Errorf("start postgres: %w", err)
			}
		}
		c := &Cluster{dir: dir, requested: requested, home: home, port: port, logFile: logFile, logger: logger}
		if err := c.chooseSocketDir(cred); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		err := c.run(ctx, binDir, cred, opts.SkipFsync)
		if err == nil {
			logger.Info("postgres started", "dir", dir, "port", port)
			return c, nil
		}
		c.removeOwnSocketDir()
		lastErr = err
		tail := childprocess.LogTail(logFile)
		retryable := (opts.Port == 0 && strings.Contains(tail, "Address already in use")) ||
			strings.Contains(tail, "pre-existing shared memory block")
		if !retryable || ctx.Err() != nil {
			break
		}
		logger.Warn("postgres start failed, retrying", "dir", dir, "port", port, "err", err)
		if err := sleep(ctx, time.Second); err != nil {
			break
		}
	}
	return nil, fmt.Errorf("start postgres in %s: %w\n%s", dir, lastErr, childprocess.LogTail(logFile))
}

// run starts the postmaster and waits until it accepts connections, or stops it again.
func (c *Cluster) run(ctx context.Context, binDir string, cred *syscall.Credential, skipFsync bool) error {
	args := []string{
		"-D", c.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(c.port),
		"-c", "unix_socket_directories=" + c.socketDir,
		"-c", "logging_collector=off",
	}
	if skipFsync {
		// Commits still reach the OS before returning, so killing the server loses nothing;
		// only an OS crash can.
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	proc, err := childprocess.Start(exec.Command(filepath.Join(binDir, "postgres"), args...), childprocess.Options{
		LogFile: c.logFile,
		// SIGINT is Postgres's fast shutdown; the postmaster then stops its backends itself.
		StopSignal:       syscall.SIGINT,
		SignalLeaderOnly: true,
		Credential:       cred,
	})
	if err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	c.proc = proc
	err = proc.WaitReady(ctx, 100*time.Millisecond, c.checkServesDir)
	if err != nil {
		_, _ = proc.StopWithin(10 * time.Second)
		return fmt.Errorf("wait for postgres on port %d: %w", c.port, err)
	}
	return nil
}

// checkServesDir connects and makes sure the server answering is ours: with a fixed port, another
// server may be listening there while ours fails to bind.
func (c *Cluster) checkServesDir(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}
	if dataDir != c.dir {
		return fmt.Errorf("port %d is served by another postgres (data directory %s)", c.port, dataDir)
	}
	return nil
}

// URL returns a connection URL for database dbname as the superuser over TCP.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// Dir returns the absolute data directory the server uses: Options.Dir, or the relocated
// directory Options.Dir links to.
func (c *Cluster) Dir() string { return c.dir }

// SocketDir returns the directory holding the server's unix socket (for psql -h).
func (c *Cluster) SocketDir() string { return c.socketDir }

// CreateDatabase creates an empty database owned by the superuser.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDatabase drops a database if it exists, disconnecting its remaining sessions.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	return c.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to postgres on port %d: %w", c.port, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// Stop shuts the server down (fast shutdown: open sessions are disconnected) and waits for it.
// When ctx ends first the server is killed.
func (c *Cluster) Stop(ctx context.Context) error {
	if c == nil || c.proc == nil {
		return nil
	}
	// A wedged postmaster is killed with its whole group: its backends must not keep the port
	// and shared memory.
	killed, err := c.proc.Stop(ctx)
	c.removeOwnSocketDir()
	if err == nil && killed {
		err = fmt.Errorf("postgres did not shut down in time, killed: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("stop postgres in %s: %w", c.dir, err)
	}
	c.logger.Info("postgres stopped", "dir", c.dir, "port", c.port)
	return nil
}

func (c *Cluster) chooseSocketDir(cred *syscall.Credential) error {
	if len(filepath.Join(c.dir, ".s.PGSQL."+strconv.Itoa(c.port))) <= maxSocketPath {
		c.socketDir = c.dir
		return nil
	}
	dir, err := os.MkdirTemp(reachableTempParent(cred), "pgsock-")
	if err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	if err := chownTo(dir, cred); err != nil {
		os.Remove(dir)
		return err
	}
	c.socketDir, c.ownSockDir = dir, true
	return nil
}

func (c *Cluster) removeOwnSocketDir() {
	if c.ownSockDir {
		os.RemoveAll(c.socketDir)
	}
}

// prepareDataDir creates the directory and runs initdb unless it already holds a cluster.
func prepareDataDir(ctx context.Context, dir, binDir string, cred *syscall.Credential, skipFsync bool, logger *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create parent of data dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := chownTo(dir, cred); err != nil {
		return err
	}
	if err := checkReachable(dir, cred); err != nil {
		return err
	}
	args := []string{"-D", dir, "-U", superuser, "--auth=trust", "--encoding=UTF8", "--no-locale"}
	if skipFsync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	logger.Info("initialising postgres cluster", "dir", dir)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, childprocess.LastLines(out.String(), 30))
	}
	// initdb's defaults already allow trust only for local sockets and loopback addresses.
	return nil
}

// waitForPreviousPostmaster gives a postmaster that is still shutting down on dir (its parent
// was killed) time to exit. A postmaster.pid naming a dead process is stale and Postgres
// itself removes it on start.
func waitForPreviousPostmaster(ctx context.Context, dir string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		pid, alive := livePostmaster(dir)
		if !alive {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another postgres (PID %d) is running on this data directory; stop it with `pg_ctl stop -D %s`", pid, dir)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("wait for postgres PID %d to exit: %w", pid, err)
		}
	}
}

func livePostmaster(dir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	firstLine, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(firstLine))
	if err != nil || pid <= 0 {
		return 0, false
	}
	// The PID may have been reused by an unrelated process since the cluster was killed.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return pid, false
		}
		// No /proc (not Linux): fall back to asking whether the PID exists.
		return pid, syscall.Kill(pid, 0) == nil
	}
	return pid, bytes.Contains(cmdline, []byte("postgres")) && bytes.Contains(cmdline, []byte(dir))
}

// checkReachable fails early with a clear message when the server's OS user could not even
// reach the data directory (e.g. a checkout under /root while running as root), for the cases
// relocation does not cover: a link of the user's own making, a non-empty directory.
func checkReachable(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check data dir parents: %w", err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		mode := info.Mode().Perm()
		searchable := mode&0o001 != 0 ||
			(ok && st.Gid == cred.Gid && mode&0o010 != 0) ||
			(ok && st.Uid == cred.Uid && mode&0o100 != 0)
		if !searchable {
			return fmt.Errorf("the postgres OS user cannot reach %s: %s (mode %v) is not searchable by it", dir, p, mode)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// serverCredential returns the OS user to run Postgres as: Postgres refuses to run as root, so
// root delegates to the `postgres` user; anyone else runs it as themselves (nil).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a `postgres` OS user to run the server: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func chownTo(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("hand %s to the postgres user: %w", path, err)
	}
	return nil
}

// FindBinDir locates the directory holding initdb and postgres: the one initdb on PATH resolves
// to, else the highest version under /usr/lib/postgresql.
func FindBinDir() (string, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if resolved, err := filepath.EvalSymlinks(initdb); err == nil {
			dir := filepath.Dir(resolved)
			if isFile(filepath.Join(dir, "postgres")) {
				return dir, nil
			}
		}
	}
	candidates, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(candidates, func(i, j int) bool {
		return pgVersion(candidates[i]) > pgVersion(candidates[j])
	})
	for _, dir := range candidates {
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", errors.New("no Postgres binaries found (initdb on PATH or /usr/lib/postgresql/*/bin); install postgresql")
}

func pgVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
