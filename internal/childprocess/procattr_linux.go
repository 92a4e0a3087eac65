package childprocess

import "syscall"

// sysProcAttr puts the child in its own process group and has the kernel send deathSig to it if
// we die first. The kernel ties that signal to the OS thread that started the child, and Go only
// ends a thread when a goroutine exits while locked to it (runtime.LockOSThread), which none of
// the callers do.
func sysProcAttr(cred *syscall.Credential, deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig, Credential: cred}
}
