//go:build !linux

package pgcluster

import "syscall"

// childProcAttr puts the child in its own process group; without Linux's parent-death signal
// a server outlives a parent that is killed without calling Stop.
func childProcAttr(cred *syscall.Credential, _ syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
