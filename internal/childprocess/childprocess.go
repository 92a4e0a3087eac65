// Package childprocess runs a server binary as a child that should not outlive us: it gets its own
// process group (a terminal's Ctrl-C reaches only us, and we decide how the server stops; a kill
// reaches everything it spawned), on Linux a parent-death signal for when we die without stopping
// it, and its output in a log file whose tail explains a failed start.
//
// The server-specific parts (arguments, readiness checks, data directories) stay with the callers:
// pgcluster, temporaldev and s3server.
package childprocess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Options say how Start runs a child.
type Options struct {
	// LogFile receives the child's stdout and stderr, appended to what it already holds.
	LogFile string
	// StopSignal asks the child to shut down: Stop sends it, and on Linux the kernel sends it to
	// the child when this process dies without calling Stop.
	StopSignal syscall.Signal
	// SignalLeaderOnly sends StopSignal to the child alone rather than to its whole process group,
	// for a server that shuts its own children down in order (the Postgres postmaster; a SIGINT
	// sent to a backend directly would only cancel its query). The SIGKILL after the grace period
	// always goes to the whole group.
	SignalLeaderOnly bool
	// Credential runs the child as another OS user; nil keeps ours.
	Credential *syscall.Credential
}

// Process is a running child started by Start.
type Process struct {
	cmd              *exec.Cmd
	stopSignal       syscall.Signal
	signalLeaderOnly bool
	exited           chan struct{}
	exitErr          error
}

// Start starts cmd with its output appended to opts.LogFile, in its own process group. It sets
// cmd.Stdout, cmd.Stderr and cmd.SysProcAttr; the caller sets the rest (arguments, environment).
func Start(cmd *exec.Cmd, opts Options) (*Process, error) {
	logOut, err := os.OpenFile(opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	// The child holds its own descriptor once started.
	defer logOut.Close()
	cmd.Stdout, cmd.Stderr = logOut, logOut
	cmd.SysProcAttr = sysProcAttr(opts.Credential, opts.StopSignal)
	// exec's errors already name the binary.
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{
		cmd:              cmd,
		stopSignal:       opts.StopSignal,
		signalLeaderOnly: opts.SignalLeaderOnly,
		exited:           make(chan struct{}),
	}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid returns the child's process ID, which is also its process group ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Wait blocks until the child has exited and returns how it ended (nil for exit status 0).
func (p *Process) Wait() error {
	<-p.exited
	return p.exitErr
}

// WaitReady calls ready every interval until it returns nil. It gives up as soon as the child
// exits, so that a server that failed to start is reported at once rather than at ctx's deadline;
// when ctx ends first, the error wraps ctx.Err() and names ready's last error. ready should bound
// its own attempt, so that a server that accepts but never answers cannot stall the wait past ctx.
func (p *Process) WaitReady(ctx context.Context, interval time.Duration, ready func(context.Context) error) error {
	for {
		select {
		case <-p.exited:
			return p.exitedDuringStartup()
		default:
		}
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-p.exited:
		case <-time.After(interval):
		}
	}
}

func (p *Process) exitedDuringStartup() error {
	if p.exitErr == nil {
		return errors.New("exited during startup with status 0")
	}
	return fmt.Errorf("exited during startup: %v", p.exitErr)
}

// Stop sends the stop signal and waits for the child to exit; when ctx ends first, it kills the
// whole process group, so that no grandchild keeps the server's ports or files, and waits for
// the child again. killed reports whether the child had to be killed. Stopping a child that
// has already exited does nothing.
func (p *Process) Stop(ctx context.Context) (killed bool, err error) {
	select {
	case <-p.exited:
		return false, nil
	default:
	}
	pid := p.cmd.Process.Pid
	if p.signalLeaderOnly {
		if err := p.cmd.Process.Signal(p.stopSignal); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return false, fmt.Errorf("signal process %d: %w", pid, err)
		}
	} else if err := syscall.Kill(-pid, p.stopSignal); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("signal process group %d: %w", pid, err)
	}
	select {
	case <-p.exited:
		return false, nil
	case <-ctx.Done():
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.exited
	return true, nil
}

// StopWithin is Stop with a grace period of the given length.
func (p *Process) StopWithin(grace time.Duration) (killed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return p.Stop(ctx)
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a moment ago. Another process
// can still take it before the child binds it, which is why callers retry a start whose log says
// the address is in use.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTailLines is how much of a server log an error message carries: enough for the server's own
// explanation of a failed start, short enough to read.
const logTailLines = 30

// LogTail returns the last lines of the log file at path, headed by its path, for error messages.
// A log that cannot be read is described instead, since the caller is already reporting an error.
func LogTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	defer f.Close()
	// Only the end matters, and a long-running server's log can be large.
	const maxBytes = 8 << 10
	if info, err := f.Stat(); err == nil && info.Size() > maxBytes {
		_, _ = f.Seek(info.Size()-maxBytes, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return "server log " + path + ":\n" + LastLines(string(data), logTailLines)
}

// LastLines returns the last n lines of s, without a trailing newline.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
