//go:build !linux

package temporaldev

import "syscall"

// childProcAttr puts the child in its own process group; without Linux's parent-death signal
// the server outlives a parent that is killed without calling Stop.
func childProcAttr(syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
