package activities

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
)

// Mirrors are a per-worker cache under MirrorDir/<tenant>/<repository uuid>: any of them can be
// rebuilt from storage (hydrate), so removing one costs a download later, never data. Two
// things remove mirrors, both on the worker that owns the disk (no Temporal workflow can reach
// "every worker", so this is not an activity):
//   - CleanMirrors, which the worker runs periodically, drops the mirrors of repositories that
//     are no longer included (or deleted upstream, or of a removed installation);
//   - reserveMirrorSpace, before a backup fetches, evicts the least recently used mirrors of
//     other repositories while the mirrors would exceed MirrorMaxBytes.
// Neither touches a mirror that a backup on this worker is using (mirrorLeases).

// trashPrefix names mirrors being deleted: a rename takes a mirror out of use at once, and a
// crash mid-delete leaves a name the next cleanup recognises.
const trashPrefix = ".gitsec-trash-"

// mirrorLeases records the mirror directories in use on this worker and the space their
// running fetches reserved. The zero value is ready to use.
type mirrorLeases struct {
	mu       sync.Mutex
	inUse    map[string]int
	reserved map[string]int64
	// budget serialises space reservations so two fetches cannot both claim the last room.
	budget sync.Mutex
	// held maps a mirror directory to a channel closed when its backup ends (see hold).
	held map[string]chan struct{}
}

// hold makes the backups of one mirror on this worker take turns, and blocks until it is dir's
// turn or ctx ends; waiting is called once if it has to wait. Attempts of one backup go to the
// same host queue, so this is where a second attempt meets a first one that Temporal gave up
// on but that still runs: it waits for it (the first attempt learns of its end at its next
// heartbeat and stops) instead of fetching and uploading the same packs beside it.
func (l *mirrorLeases) hold(ctx context.Context, dir string, waiting func()) (release func(), err error) {
	told := false
	for {
		l.mu.Lock()
		busy, taken := l.held[dir]
		if !taken {
			if l.held == nil {
				l.held = map[string]chan struct{}{}
			}
			mine := make(chan struct{})
			l.held[dir] = mine
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				defer l.mu.Unlock()
				delete(l.held, dir)
				close(mine)
			}, nil
		}
		l.mu.Unlock()
		if !told {
			waiting()
			told = true
		}
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the backup running on mirror %s: %w", dir, ctx.Err())
		}
	}
}

// acquire marks dir in use until release is called; release also stamps the directory's
// modification time, which is what least-recently-used eviction sorts by.
func (l *mirrorLeases) acquire(dir string) (release func()) {
	l.mu.Lock()
	if l.inUse == nil {
		l.inUse = map[string]int{}
	}
	l.inUse[dir]++
	l.mu.Unlock()
	return func() {
		now := time.Now()
		_ = os.Chtimes(dir, now, now) // a mirror that was never created has nothing to stamp
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.inUse[dir]--; l.inUse[dir] <= 0 {
			delete(l.inUse, dir)
			delete(l.reserved, dir)
		}
	}
}

func (l *mirrorLeases) reserve(dir string, bytes int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reserved == nil {
		l.reserved = map[string]int64{}
	}
	l.reserved[dir] = bytes
}

// reservedBy sums the reservations of the in-use mirrors other than dir.
func (l *mirrorLeases) reservedBy(except string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for d, b := range l.reserved {
		if d != except {
			n += b
		}
	}
	return n
}

// retire moves dir out of the way unless it is in use, then deletes it. It reports whether
// the mirror was removed.
func (l *mirrorLeases) retire(root, dir string) (bool, error) {
	l.mu.Lock()
	if l.inUse[dir] > 0 {
		l.mu.Unlock()
		return false, nil
	}
	trash := filepath.Join(root, trashPrefix+randomSuffix())
	err := os.Rename(dir, trash)
	l.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("retire mirror %s: %w", dir, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return true, fmt.Errorf("delete retired mirror %s: %w", dir, err)
	}
	return true, nil
}

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mirrorEntry is one mirror directory found under MirrorDir.
type mirrorEntry struct {
	Dir      string
	Tenant   string
	UUID     string
	Size     int64
	LastUsed time.Time
}

// listMirrors finds the mirror directories under root. Only <tenant uuid>/<repository uuid>
// directories count: anything else under root (an operator's file, a hydration in progress,
// whose directory name starts with a dot) is neither measured as a mirror nor removed.
func listMirrors(root string) ([]mirrorEntry, error) {
	tenants, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list mirror directory: %w", err)
	}
	var out []mirrorEntry
	for _, t := range tenants {
		if !t.IsDir() || !isUUIDName(t.Name()) {
			continue
		}
		repos, err := os.ReadDir(filepath.Join(root, t.Name()))
		if err != nil {
			return nil, fmt.Errorf("list mirrors of tenant %s: %w", t.Name(), err)
		}
		for _, r := range repos {
			if !r.IsDir() || !isUUIDName(r.Name()) {
				continue
			}
			dir := filepath.Join(root, t.Name(), r.Name())
			info, err := r.Info()
			if err != nil {
				continue // removed meanwhile
			}
			size, err := gitmirror.DiskUsage(dir)
			if err != nil {
				return nil, err
			}
			out = append(out, mirrorEntry{Dir: dir, Tenant: t.Name(), UUID: r.Name(), Size: size, LastUsed: info.ModTime()})
		}
	}
	return out, nil
}

func isUUIDName(name string) bool {
	_, err := uuid.Parse(name)
	return err == nil && !strings.HasPrefix(name, "{")
}

// reserveMirrorSpace makes room for dir to grow by need bytes within MirrorMaxBytes, evicting
// the least recently used mirrors of other repositories that no backup is using. The caller
// holds dir's lease; the reservation lasts until that lease is released.
//
// Eviction rather than refusal: a mirror is only a cache, and an evicted one is hydrated from
// storage on its next backup, whereas refusing would leave a repository without backups for as
// long as the disk stays full. Only a repository that alone exceeds the budget fails, with a
// non-retryable error that names the setting to raise.
func (a *Backups) reserveMirrorSpace(dir string, need int64) error {
	limit := a.MirrorMaxBytes
	if limit <= 0 {
		return nil
	}
	if need < 0 {
		need = 0
	}
	a.mirrors.budget.Lock()
	defer a.mirrors.budget.Unlock()
	own, err := gitmirror.DiskUsage(dir)
	if err != nil {
		return err
	}
	if own+need > limit {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"the mirror needs about %d bytes but GITSEC_MIRROR_MAX_BYTES is %d: raise the limit", own+need, limit),
			domain.ErrTypeMirrorTooLarge, nil)
	}
	mirrors, err := listMirrors(a.MirrorDir)
	if err != nil {
		return err
	}
	used := need + a.mirrors.reservedBy(dir)
	for _, m := range mirrors {
		used += m.Size
	}
	if used <= limit {
		a.mirrors.reserve(dir, need)
		return nil
	}
	sort.Slice(mirrors, func(i, j int) bool { return mirrors[i].LastUsed.Before(mirrors[j].LastUsed) })
	for _, m := range mirrors {
		if m.Dir == dir {
			continue
		}
		removed, err := a.mirrors.retire(a.MirrorDir, m.Dir)
		if err != nil {
			return err
		}
		if !removed {
			continue
		}
		used -= m.Size
		a.Logger.Info("evicted mirror to stay within GITSEC_MIRROR_MAX_BYTES", "tenant", m.Tenant, "repository", m.UUID,
			"bytes", m.Size, "last_used", m.LastUsed)
		if used <= limit {
			a.mirrors.reserve(dir, need)
			return nil
		}
	}
	return temporal.NewApplicationError(fmt.Sprintf(
		"mirrors in use take the GITSEC_MIRROR_MAX_BYTES budget (%d bytes, about %d needed); retrying once they are done", limit, used),
		domain.ErrTypeMirrorDiskBusy)
}

// MirrorCleanup reports what CleanMirrors removed.
type MirrorCleanup struct {
	Kept       int
	Removed    []string // tenant/repository-uuid
	BytesFreed int64
}

// CleanMirrors removes the mirrors under a.MirrorDir whose repository is no longer included,
// no longer exists upstream, or belongs to a removed installation, and deletes leftovers of
// interrupted deletions. Mirrors in use by a backup on this worker are left alone.
//
// It is a function rather than a method so that it is never registered as a Temporal activity:
// every worker cleans its own disk, which no activity task routed by Temporal could target.
func CleanMirrors(ctx context.Context, a *Backups) (MirrorCleanup, error) {
	var res MirrorCleanup
	if a.MirrorDir == "" {
		return res, nil
	}
	if entries, err := os.ReadDir(a.MirrorDir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), trashPrefix) {
				if err := os.RemoveAll(filepath.Join(a.MirrorDir, e.Name())); err != nil {
					return res, fmt.Errorf("delete leftover %s: %w", e.Name(), err)
				}
			}
		}
	}
	mirrors, err := listMirrors(a.MirrorDir)
	if err != nil {
		return res, err
	}
	wanted := map[string]map[string]bool{} // tenant -> normalised repository UUIDs
	for _, m := range mirrors {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		keep, ok := wanted[m.Tenant]
		if !ok {
			keep = map[string]bool{}
			tenantID, err := uuid.Parse(m.Tenant)
			if err != nil {
				continue
			}
			uuids, err := a.Store.MirroredRepositories(ctx, tenantID)
			if err != nil {
				return res, err
			}
			for _, u := range uuids {
				keep[archive.NormalizeUUID(u)] = true
			}
			wanted[m.Tenant] = keep
		}
		if keep[m.UUID] {
			res.Kept++
			continue
		}
		removed, err := a.mirrors.retire(a.MirrorDir, m.Dir)
		if err != nil {
			return res, err
		}
		if !removed {
			res.Kept++
			continue
		}
		res.Removed = append(res.Removed, m.Tenant+"/"+m.UUID)
		res.BytesFreed += m.Size
		a.Logger.Info("removed mirror of a repository no longer backed up", "tenant", m.Tenant, "repository", m.UUID, "bytes", m.Size)
	}
	return res, nil
}
