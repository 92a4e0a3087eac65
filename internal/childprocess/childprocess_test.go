package childprocess

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startShell runs script under sh with its output in a fresh log file; the child is stopped (and
// killed if need be) when the test ends.
func startShell(t *testing.T, script string, opts Options) (*Process, string) {
	t.Helper()
	if opts.LogFile == "" {
		opts.LogFile = filepath.Join(t.TempDir(), "child.log")
	}
	if opts.StopSignal == 0 {
		opts.StopSignal = syscall.SIGTERM
	}
	p, err := Start(exec.Command("sh", "-c", script), opts)
	if err != nil {
		t.Fatalf("start sh: %v", err)
	}
	t.Cleanup(func() {
		if _, err := p.StopWithin(10 * time.Second); err != nil {
			t.Errorf("stop sh: %v", err)
		}
	})
	return p, opts.LogFile
}

// waitForBackgroundPID waits until the script has logged the PID of the process it started in the
// background (its last step before waiting), which also means its traps are in place.
func waitForBackgroundPID(t *testing.T, p *Process, logFile string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var pid int
	err := p.WaitReady(ctx, 20*time.Millisecond, func(context.Context) error {
		data, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		line, _, complete := strings.Cut(string(data), "\n")
		if !complete {
			return errors.New("no PID logged yet")
		}
		pid, err = strconv.Atoi(line)
		return err
	})
	if err != nil {
		t.Fatalf("wait for the background PID: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// alive reports whether pid names a process that has not exited. A zombie counts as exited: once
// reparented, nothing may reap it in a container.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if _, procErr := os.Stat("/proc/self/stat"); procErr == nil {
			return false
		}
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the command name, which is in parentheses and may itself contain some.
	_, rest, _ := strings.Cut(string(stat[strings.LastIndexByte(string(stat), ')'):]), " ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// waitGone fails the test unless pid exits within a generous bound: a signal is delivered at once,
// but the process takes a moment to end.
func waitGone(t *testing.T, pid int, why string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs: %s", pid, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOutputIsAppendedToLogFile(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "server.log")
	for _, word := range []string{"first", "second"} {
		p, _ := startShell(t, "echo "+word+"; echo "+word+"-err >&2", Options{LogFile: logFile})
		if err := p.Wait(); err != nil {
			t.Fatalf("sh: %v", err)
		}
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "first\nfirst-err\nsecond\nsecond-err\n"; string(data) != want {
		t.Fatalf("log = %q, want %q", data, want)
	}
}

func TestStopSignalsTheWholeGroup(t *testing.T) {
	p, logFile := startShell(t, "sleep 300 & echo $!; wait", Options{StopSignal: syscall.SIGTERM})
	grandchild := waitForBackgroundPID(t, p, logFile)
	killed, err := p.Stop(context.Background())
	if err != nil || killed {
		t.Fatalf("Stop = killed %v, err %v; want a clean stop", killed, err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("sh ended with %v, want the stop signal", err)
	}
	waitGone(t, grandchild, "the stop signal did not reach the child's own child")
}

func TestSignalLeaderOnlySparesItsChildren(t *testing.T) {
	p, logFile := startShell(t, "trap 'exit 0' TERM; sleep 300 & echo $!; wait",
		Options{StopSignal: syscall.SIGTERM, SignalLeaderOnly: true})
	grandchild := waitForBackgroundPID(t, p, logFile)
	killed, err := p.Stop(context.Background())
	if err != nil || killed {
		t.Fatalf("Stop = killed %v, err %v; want a clean stop", killed, err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("sh ended with %v, want its trap's exit 0", err)
	}
	if !alive(grandchild) {
		t.Fatal("the stop signal reached the leader's child although only the leader was to get it")
	}
}

func TestStopKillsGroupIgnoringTheSignal(t *testing.T) {
	// An ignored signal stays ignored in children, so the background sleep ignores it too.
	p, logFile := startShell(t, "trap '' TERM; sleep 300 & echo $!; wait", Options{StopSignal: syscall.SIGTERM})
	grandchild := waitForBackgroundPID(t, p, logFile)
	killed, err := p.StopWithin(100 * time.Millisecond)
	if err != nil || !killed {
		t.Fatalf("Stop = killed %v, err %v; want killed after the grace period", killed, err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("sh ended with %v, want SIGKILL", err)
	}
	waitGone(t, grandchild, "SIGKILL did not reach the child's own child")
}

func TestStopAfterExitDoesNothing(t *testing.T) {
	p, _ := startShell(t, "exit 0", Options{})
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	killed, err := p.Stop(context.Background())
	if err != nil || killed {
		t.Fatalf("Stop after exit = killed %v, err %v", killed, err)
	}
}

func TestWaitReadyReportsExitWithoutWaitingForDeadline(t *testing.T) {
	p, _ := startShell(t, "exit 3", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := p.WaitReady(ctx, 50*time.Millisecond, func(context.Context) error { return errors.New("not listening") })
	if err == nil || !strings.Contains(err.Error(), "exited during startup: exit status 3") {
		t.Fatalf("err = %v, want the exit status", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waited for the deadline instead of noticing the exit: %v", err)
	}
}

func TestWaitReadyGivesUpWhenContextEnds(t *testing.T) {
	p, _ := startShell(t, "exec sleep 300", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := p.WaitReady(ctx, time.Millisecond, func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return fmt.Errorf("attempt %d refused", calls)
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "attempt 3 refused") {
		t.Fatalf("err = %v, want context.Canceled naming the last attempt", err)
	}
}

func TestWaitReadyReturnsOnceReady(t *testing.T) {
	p, _ := startShell(t, "exec sleep 300", Options{})
	calls := 0
	err := p.WaitReady(context.Background(), time.Millisecond, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("WaitReady = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestStartFailures(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(exec.Command(filepath.Join(dir, "nope")), Options{LogFile: filepath.Join(dir, "log")})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing binary: err = %v, want it named", err)
	}
	_, err = Start(exec.Command("sh", "-c", "exit 0"), Options{LogFile: filepath.Join(dir, "missing", "log")})
	if err == nil || !strings.Contains(err.Error(), "open log file") {
		t.Fatalf("log in a missing directory: err = %v", err)
	}
}

func TestFreePortCanBeBound(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on the free port %d: %v", port, err)
	}
	l.Close()
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	var b strings.Builder
	// Long enough that only the end of the file is read.
	b.WriteString(strings.Repeat("x", 20<<10) + "\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := LogTail(path)
	var want strings.Builder
	want.WriteString("server log " + path + ":")
	for i := 11; i <= 40; i++ {
		fmt.Fprintf(&want, "\nline %d", i)
	}
	if got != want.String() {
		t.Fatalf("LogTail =\n%s\nwant\n%s", got, want.String())
	}

	missing := filepath.Join(t.TempDir(), "never-written.log")
	if got := LogTail(missing); !strings.HasPrefix(got, "(no server log: ") || !strings.Contains(got, missing) {
		t.Fatalf("LogTail of a missing file = %q", got)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"only\n\n", 1, "only"},
	} {
		if got := LastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
