package childprocess

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// parentEnv makes the test binary act as the parent in TestChildDiesWithParent; its value is the
// log file for the child.
const parentEnv = "CHILDPROCESS_TEST_PARENT_LOG"

func TestMain(m *testing.M) {
	if logFile := os.Getenv(parentEnv); logFile != "" {
		actAsParent(logFile)
		return
	}
	os.Exit(m.Run())
}

// actAsParent starts a child, reports its PID and waits to be killed.
func actAsParent(logFile string) {
	p, err := Start(exec.Command("sleep", "300"), Options{LogFile: logFile, StopSignal: syscall.SIGTERM})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(p.Pid())
	select {}
}

func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"="+filepath.Join(t.TempDir(), "child.log"))
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatalf("start the parent: %v", err)
	}
	t.Cleanup(func() {
		_ = parent.Process.Kill()
		_ = parent.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read the child's PID from the parent: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent said %q instead of a PID", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if !alive(child) {
		t.Fatalf("child %d is not running before its parent dies", child)
	}

	// SIGKILL: the parent gets no chance to call Stop.
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	waitGone(t, child, "the child outlived its killed parent")
}
