package pgcluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// RelocationRoot holds the clusters whose requested data directory the postgres OS user cannot
// reach: as root, a clone in root's 0700 home directory would otherwise have no working
// `make dev`. Each cluster gets <RelocationRoot>/<hash of the requested path>/ holding data/ (the
// cluster, owned by postgres) and owner (the requested path); the requested path becomes a symlink
// to data/, which is the record that lets restarts find the same data. A package variable so that
// a test can point it at a scratch directory.
var RelocationRoot = "/var/lib/gitsec/postgres"

// ownerFile names, inside a relocated cluster's home, the requested path it was made for.
const ownerFile = "owner"

// resolveDataDir returns the directory the server actually uses for the requested one, and the
// relocation home when the data lives under RelocationRoot. Only a server running as another
// user (root delegating to postgres) can need relocating.
func resolveDataDir(requested string, cred *syscall.Credential, logger *slog.Logger) (dir, home string, err error) {
	if cred == nil {
		return requested, "", nil
	}
	if err := os.MkdirAll(filepath.Dir(requested), 0o755); err != nil {
		return "", "", fmt.Errorf("create parent of data dir: %w", err)
	}
	info, err := os.Lstat(requested)
	switch {
	case err == nil && info.Mode()&os.ModeSymlink != 0:
		target, err := filepath.EvalSymlinks(requested)
		if err != nil {
			// Dangling: the relocated data was removed; start afresh below.
			break
		}
		home := filepath.Dir(target)
		if filepath.Dir(home) != filepath.Clean(RelocationRoot) {
			// A link of the user's own making: use it as it is.
			return target, "", nil
		}
		if ownerLinksHere(requested, home, target, logger) {
			return target, home, nil
		}
	case err == nil:
		if checkReachable(requested, cred) == nil {
			return requested, "", nil
		}
		if !isEmptyDir(requested) {
			return "", "", fmt.Errorf("%w; it already holds files, so move them to a directory the postgres user can reach and link %s there", checkReachable(requested, cred), requested)
		}
		// An empty leftover of a start that failed before relocation existed.
	case errors.Is(err, os.ErrNotExist):
		if checkReachable(requested, cred) == nil {
			return requested, "", nil
		}
	default:
		return "", "", fmt.Errorf("inspect data dir: %w", err)
	}
	return relocate(requested, cred, logger)
}

// ownerLinksHere decides whether requested, a link to the relocated cluster target, may use it:
// yes when it is the path the cluster was made for, or when that path no longer links to it (the
// directory holding the link was moved); no when the owner still links to it, because then
// requested is a copy and must not share the owner's running data.
func ownerLinksHere(requested, home, target string, logger *slog.Logger) bool {
	owner, err := os.ReadFile(filepath.Join(home, ownerFile))
	if err == nil && string(owner) == requested {
		return true
	}
	if err == nil && linksTo(string(owner), target) {
		logger.Info("postgres data dir is a copy of another one's link; giving it its own cluster", "dir", requested, "owner", string(owner))
		return false
	}
	if err := os.WriteFile(filepath.Join(home, ownerFile), []byte(requested), 0o644); err != nil {
		logger.Warn("record the new owner of a relocated postgres cluster", "dir", target, "error", err)
	}
	logger.Info("postgres data dir moved; keeping its relocated cluster", "dir", requested, "data", target)
	return true
}

// relocate makes a fresh cluster home under RelocationRoot for requested and links requested to
// its data directory.
func relocate(requested string, cred *syscall.Credential, logger *slog.Logger) (dir, home string, err error) {
	sum := sha256.Sum256([]byte(requested))
	home = filepath.Join(RelocationRoot, hex.EncodeToString(sum[:8]))
	if owner, err := os.ReadFile(filepath.Join(home, ownerFile)); err == nil && string(owner) != requested && linksTo(string(owner), filepath.Join(home, "data")) {
		// Taken over by a moved directory that used to live at requested.
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		home += "-" + hex.EncodeToString(suffix)
	} else if _, err := os.Lstat(home); err == nil {
		// Nothing links to it any more: its owner deleted the link (e.g. `rm -rf .gitsec` to start
		// from scratch), and the secrets key and storage that went with this data are gone too.
		logger.Warn("removing a relocated postgres cluster that nothing links to any more", "dir", home, "owner", string(owner))
		if err := os.RemoveAll(home); err != nil {
			return "", "", fmt.Errorf("remove stale cluster: %w", err)
		}
	}
	if err := os.MkdirAll(RelocationRoot, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", RelocationRoot, err)
	}
	if err := os.Mkdir(home, 0o755); err != nil {
		return "", "", fmt.Errorf("create relocated cluster home: %w", err)
	}
	// Whatever root's umask, postgres must be able to pass through.
	if err := os.Chmod(home, 0o755); err != nil {
		return "", "", fmt.Errorf("open relocated cluster home: %w", err)
	}
	if err := os.WriteFile(filepath.Join(home, ownerFile), []byte(requested), 0o644); err != nil {
		return "", "", fmt.Errorf("record owner of relocated cluster: %w", err)
	}
	dir = filepath.Join(home, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create relocated data dir: %w", err)
	}
	if err := chownTo(dir, cred); err != nil {
		return "", "", err
	}
	// Only a dangling link or an empty directory can be in the way here.
	if err := os.Remove(requested); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("replace %s with a link to the relocated cluster: %w", requested, err)
	}
	if err := os.Symlink(dir, requested); err != nil {
		return "", "", fmt.Errorf("link %s to the relocated cluster: %w", requested, err)
	}
	logger.Info("the postgres user cannot reach the data dir; the cluster lives elsewhere, linked from it", "requested", requested, "data", dir)
	return dir, home, nil
}

func linksTo(link, target string) bool {
	resolved, err := filepath.EvalSymlinks(link)
	return err == nil && resolved == target
}

func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}

// RemoveData deletes a stopped cluster's data for good: the data directory, and for a relocated
// cluster its home and the link to it. For throw-away clusters.
func (c *Cluster) RemoveData() error {
	if c.home == "" {
		if err := os.RemoveAll(c.dir); err != nil {
			return fmt.Errorf("remove postgres data: %w", err)
		}
		return nil
	}
	if linksTo(c.requested, c.dir) {
		if err := os.Remove(c.requested); err != nil {
			return fmt.Errorf("remove link to postgres data: %w", err)
		}
	}
	if err := os.RemoveAll(c.home); err != nil {
		return fmt.Errorf("remove postgres data: %w", err)
	}
	return nil
}

// reachableTempParent is where a socket directory goes: the temp dir, unless the server's user
// cannot reach it (TMPDIR inside a private home).
func reachableTempParent(cred *syscall.Credential) string {
	parent := os.TempDir()
	if checkReachable(filepath.Join(parent, "pgsock"), cred) != nil {
		return "/tmp"
	}
	return parent
}
