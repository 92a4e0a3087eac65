//go:build unix

package gitmirror

import (
	"os/exec"
	"syscall"
)

// killProcessGroupOnCancel puts git in its own process group and kills the
// whole group on cancellation: git fetch runs git-remote-https and
// index-pack as children, which would otherwise outlive it.
func killProcessGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
