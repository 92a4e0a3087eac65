//go:build unix

package gitmirror

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrBusy means another fetch holds the mirror's lock, typically an earlier
// attempt of the same activity that has not stopped yet. Retrying later is
// safe.
var ErrBusy = errors.New("mirror is busy with another fetch")

// lock takes a non-blocking exclusive flock on a file inside the mirror. The
// kernel drops it when the process dies, so a crash never leaves it behind.
func (m *Mirror) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(m.dir, "gitsec.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open mirror lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", m.dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock mirror %s: %w", m.dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
