package gitmirror

import "os/exec"

// OnGitCommand lets tests see each git command before it runs, after any
// hook already set; restore puts the previous hook back.
func OnGitCommand(f func(*exec.Cmd)) (restore func()) {
	previous := commandStarted
	commandStarted = func(c *exec.Cmd) {
		if previous != nil {
			previous(c)
		}
		f(c)
	}
	return func() { commandStarted = previous }
}
