// Package browsertest starts Debian's Chromium headless for tests that drive the dashboard
// through chromedp. It never downloads a browser: scripts/install-tools.sh installs the
// distribution's package, and a missing browser fails the test with the command that fixes it.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// ExecPath finds the browser: $GITSEC_CHROMIUM, then chromium on PATH, then /usr/bin/chromium.
func ExecPath() (string, error) {
	if p := os.Getenv("GITSEC_CHROMIUM"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	return "", exec.ErrNotFound
}

// Options size the window.
type Options struct {
	Width, Height int
}

// New starts a fresh browser (its own profile, so no cookie is shared between tests) and
// returns a tab's context; the browser is closed when the test ends.
func New(t testing.TB, o Options) context.Context {
	t.Helper()
	path, err := ExecPath()
	if err != nil {
		t.Fatalf("no Chromium for the browser tests: install Debian's chromium package (bash scripts/install-tools.sh does, as root) or set GITSEC_CHROMIUM; %v", err)
	}
	if o.Width == 0 {
		o.Width, o.Height = 1280, 900
	}
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	// The flags keep Chromium from calling home: this machine's network is closed, and every
	// refused background connection would slow the start and clutter the log.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// Starting the browser here makes a broken installation fail at once, with its reason. The
	// first call must not carry a timeout: its context is the browser's lifetime.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return ctx
}
