package s3server

import "syscall"

// childProcAttr puts the child in its own process group (a terminal's Ctrl-C reaches only us,
// and Stop can signal everything the server spawned) and has the kernel send deathSig to it if
// we die first. The kernel ties that signal to the OS thread that started the child, and Go
// only ends a thread when a goroutine exits while locked to it (runtime.LockOSThread), which
// none of the callers do.
func childProcAttr(deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
}
