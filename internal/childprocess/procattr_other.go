//go:build !linux

package childprocess

import "syscall"

// sysProcAttr puts the child in its own process group; without Linux's parent-death signal the
// child outlives a parent that is killed without calling Stop.
func sysProcAttr(cred *syscall.Credential, _ syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
