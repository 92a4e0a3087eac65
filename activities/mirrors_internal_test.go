package activities

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/domain"
)

// fakeMirror writes a directory of size bytes under root/tenant/<new uuid>, last used at the
// given time.
func fakeMirror(t *testing.T, root, tenant string, size int, lastUsed time.Time) string {
	t.Helper()
	dir := filepath.Join(root, tenant, uuid.NewString())
	if err := os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "objects", "pack", "pack-x.pack"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, lastUsed, lastUsed); err != nil {
		t.Fatal(err)
	}
	return dir
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func errorType(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Type()
	}
	return ""
}

// The disk budget evicts least recently used mirrors of other repositories, never one in use,
// and refuses a repository that alone exceeds it.
func TestReserveMirrorSpaceEvictsLeastRecentlyUsed(t *testing.T) {
	root := t.TempDir()
	tenant := uuid.NewString()
	now := time.Now()
	a := &Backups{MirrorDir: root, MirrorMaxBytes: 1000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	oldest := fakeMirror(t, root, tenant, 400, now.Add(-3*time.Hour))
	busy := fakeMirror(t, root, tenant, 300, now.Add(-2*time.Hour))
	target := fakeMirror(t, root, tenant, 100, now.Add(-time.Hour))
	stray := filepath.Join(root, "notes")
	if err := os.WriteFile(stray, make([]byte, 5000), 0o644); err != nil {
		t.Fatal(err)
	}

	releaseBusy := a.mirrors.acquire(busy)
	releaseTarget := a.mirrors.acquire(target)
	// 400+300+100 on disk and 500 to come: the oldest mirror goes, which is enough.
	if err := a.reserveMirrorSpace(target, 500); err != nil {
		t.Fatalf("reserve 500: %v", err)
	}
	if exists(oldest) || !exists(busy) || !exists(target) || !exists(stray) {
		t.Fatalf("after eviction: oldest=%t busy=%t target=%t stray=%t; want only the oldest gone",
			exists(oldest), exists(busy), exists(target), exists(stray))
	}
	// 300+100 on disk and 700 to come: only the busy mirror could go, so the caller retries.
	if err := a.reserveMirrorSpace(target, 700); errorType(err) != domain.ErrTypeMirrorDiskBusy {
		t.Fatalf("reserve 700 while the other mirror is in use: %v, want %s", err, domain.ErrTypeMirrorDiskBusy)
	}
	if !exists(busy) {
		t.Fatal("a mirror in use was evicted")
	}
	releaseBusy()
	if err := a.reserveMirrorSpace(target, 700); err != nil {
		t.Fatalf("reserve 700 once the other mirror is free: %v", err)
	}
	if exists(busy) {
		t.Fatal("the released mirror was not evicted")
	}
	// More than the whole budget: no retry can help.
	err := a.reserveMirrorSpace(target, 2000)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != domain.ErrTypeMirrorTooLarge || !appErr.NonRetryable() {
		t.Fatalf("reserve 2000: %v, want non-retryable %s", err, domain.ErrTypeMirrorTooLarge)
	}
	releaseTarget()
	if !exists(target) {
		t.Fatal("the target mirror itself was removed")
	}

	// Unlimited: nothing is measured or evicted.
	a.MirrorMaxBytes = 0
	if err := a.reserveMirrorSpace(target, 1<<40); err != nil {
		t.Fatalf("unlimited budget: %v", err)
	}
}

// A mirror being retired is invisible at once; a leftover of an interrupted deletion is not a
// mirror and is not measured.
func TestListMirrorsIgnoresEverythingButMirrors(t *testing.T) {
	root := t.TempDir()
	tenant := uuid.NewString()
	m := fakeMirror(t, root, tenant, 10, time.Now())
	for _, p := range []string{filepath.Join(root, trashPrefix+"x", "f"), filepath.Join(root, tenant, ".hydrate-x", "f"), filepath.Join(root, "not-a-tenant", uuid.NewString(), "f")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := listMirrors(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Dir != m || got[0].Size != 10 || got[0].Tenant != tenant {
		t.Fatalf("listMirrors = %+v, want only %s", got, m)
	}
}

// A second attempt of a backup waits for the first one on the same mirror instead of running
// beside it, gives up when its own context ends, and other mirrors are not held up.
func TestMirrorHoldMakesAttemptsTakeTurns(t *testing.T) {
	var l mirrorLeases
	ctx := context.Background()
	first, err := l.hold(ctx, "/m/a", func() { t.Error("the first attempt waited") })
	if err != nil {
		t.Fatal(err)
	}
	other, err := l.hold(ctx, "/m/b", func() { t.Error("another mirror waited") })
	if err != nil {
		t.Fatal(err)
	}
	other()

	waited := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		release, err := l.hold(ctx, "/m/a", func() { close(waited) })
		if err == nil {
			release()
		}
		got <- err
	}()
	<-waited
	select {
	case err := <-got:
		t.Fatalf("the second attempt went ahead (%v) while the first held the mirror", err)
	case <-time.After(100 * time.Millisecond):
	}
	first()
	if err := <-got; err != nil {
		t.Fatalf("second attempt after the first ended: %v", err)
	}

	held, err := l.hold(ctx, "/m/a", func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer held()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.hold(cancelled, "/m/a", func() {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("hold with a cancelled context = %v, want context.Canceled", err)
	}
}
