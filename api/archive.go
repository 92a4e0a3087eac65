package api

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/store"
)

// Archive formats of GET /api/v1/snapshots/{id}/archive.
const (
	archiveBundle = "bundle"
	archiveTar    = "tar"
)

// beforeArchiveStream runs between preparing an archive on disk and sending it; tests use it
// to damage a prepared file, the one failure that can only show once the answer has started.
var beforeArchiveStream func(dir string)

// archiveEntry is one file or directory of the tar, and what its bytes must hash to.
type archiveEntry struct {
	path string // on disk
	hdr  tar.Header
	// verify, when set, is the manifest's checksum of the file's bytes after the first skip
	// bytes (a pack, or the pack inside a bundle).
	verify *archive.FileInfo
	skip   int64
	// headerLen is the size of the tar header block(s) this entry writes.
	headerLen int64
}

// downloadArchive streams a snapshot as a tar: its bundle chain (format=bundle, restorable with
// stock git alone) or a bare repository (format=tar). The snapshot is first written to a
// scratch directory, verifying every checksum against the manifest, so a damaged backup is a
// JSON error and not a download; only then is the tar streamed from disk with an exact
// Content-Length, never held in memory. Packs are hashed again as they are sent: should a
// prepared file change under us, the connection is cut, so the client sees a truncated
// download instead of a wrong file.
func (h *handlers) downloadArchive(c *gin.Context) error {
	format := c.DefaultQuery("format", archiveBundle)
	if format != archiveBundle && format != archiveTar {
		return errInvalid("invalid_parameter", "query parameter format="+strconv.Quote(format)+" must be bundle or tar")
	}
	if h.deps.Archive == nil {
		return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "this API has no backup storage configured"}
	}
	sn, err := h.tenantSnapshot(c)
	if err != nil {
		return err
	}
	repo, err := h.deps.Store.GetRepository(c.Request.Context(), sn.TenantID, sn.RepositoryID)
	if err != nil {
		return failed("could not read the snapshot's repository", err)
	}
	scratch, err := os.MkdirTemp(h.deps.ScratchDir, "gitsec-archive-")
	if err != nil {
		return failed("could not prepare the download", err)
	}
	defer os.RemoveAll(scratch)

	base := archiveBaseName(repo.FullName, sn.ID, format)
	root := filepath.Join(scratch, base)
	entries, err := h.prepareArchive(c.Request.Context(), sn, repo, format, root)
	if err != nil {
		return err
	}
	modTime := sn.FinishedAt.UTC().Truncate(time.Second)
	size, err := sizeArchive(entries, modTime)
	if err != nil {
		return failed("could not prepare the download", err)
	}
	if beforeArchiveStream != nil {
		beforeArchiveStream(root)
	}

	c.Header("Content-Type", "application/x-tar")
	c.Header("Content-Disposition", `attachment; filename="`+base+`.tar"`)
	c.Header("Content-Length", strconv.FormatInt(size, 10))
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusOK)
	// The server's write timeout (a minute) suits JSON answers, not a repository: give the
	// stream time for its size at a slow 256 KiB/s, plus a margin, and still an end.
	deadline := time.Now().Add(5*time.Minute + time.Duration(size/(256<<10))*time.Second)
	if err := http.NewResponseController(c.Writer).SetWriteDeadline(deadline); err != nil {
		h.deps.Logger.WarnContext(c.Request.Context(), "cannot extend the write deadline of a download", "error", err.Error())
	}
	start := time.Now()
	if err := streamArchive(c.Writer, entries); err != nil {
		// The status line is sent: the only honest answer left is a cut connection.
		h.deps.Logger.ErrorContext(c.Request.Context(), "archive download aborted",
			"snapshot", sn.ID, "format", format, "request_id", c.GetString(ctxRequestID), "error", err.Error())
		panic(http.ErrAbortHandler)
	}
	h.deps.Logger.InfoContext(c.Request.Context(), "archive downloaded", "snapshot", sn.ID, "format", format,
		"bytes", size, "stream_ms", time.Since(start).Milliseconds())
	h.audit(c, sn.TenantID, "snapshot.downloaded", "snapshot", sn.ID, gin.H{"full_name": repo.FullName, "format": format, "bytes": size})
	return nil
}

// archiveBaseName is workspace-slug-snapshotid, the name of the tar and of its top directory.
func archiveBaseName(fullName, snapshotID, format string) string {
	name := strings.NewReplacer("/", "-", "\\", "-", `"`, "", " ", "-").Replace(fullName) + "-" + snapshotID
	if format == archiveBundle {
		name += "-bundles"
	}
	return name
}

// prepareArchive writes the snapshot into root and lists what the tar holds.
func (h *handlers) prepareArchive(ctx context.Context, sn store.Snapshot, repo store.Repository, format, root string) ([]archiveEntry, error) {
	key, err := archive.NewRepoKey(sn.TenantID.String(), repo.ProviderUUID)
	if err != nil {
		return nil, failed("could not read snapshot "+sn.ID, err)
	}
	verify := map[string]*archive.FileInfo{} // relative path -> checksum of its pack bytes
	switch format {
	case archiveBundle:
		paths, m, err := h.deps.Archive.ExportBundles(ctx, key, sn.ID, root, nil)
		if err != nil {
			return nil, archiveFailure(sn.ID, err)
		}
		for i, p := range paths {
			verify[filepath.Base(p)] = &m.Packs[i].Pack
		}
		if err := writeBundleInstructions(root, repo.FullName, m, paths); err != nil {
			return nil, failed("could not prepare the download", err)
		}
	case archiveTar:
		m, err := h.deps.Archive.Restore(ctx, key, sn.ID, root, nil)
		if err != nil {
			return nil, archiveFailure(sn.ID, err)
		}
		for i := range m.Packs {
			verify[filepath.Join("objects", "pack", m.Packs[i].Name+".pack")] = &m.Packs[i].Pack
		}
	}
	return listArchive(root, filepath.Base(root), verify)
}

// archiveFailure maps an error of writing the snapshot: a damaged backup says what does not
// match (the storage key and both checksums, nothing secret).
func archiveFailure(id string, err error) error {
	switch {
	case errors.Is(err, archive.ErrCorrupt):
		return &apiError{status: http.StatusInternalServerError, code: "backup_corrupt",
			message: "snapshot " + id + " cannot be downloaded: its backup is damaged: " + err.Error(), cause: err}
	case errors.Is(err, archive.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "snapshot " + id + " is not in backup storage", cause: err}
	}
	return failed("could not read snapshot "+id+" from backup storage", err)
}

// listArchive walks root in lexical order (bundles in fetch order, directories before their
// files) into tar entries named below top/.
func listArchive(root, top string, verify map[string]*archive.FileInfo) ([]archiveEntry, error) {
	var out []archiveEntry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		name := top
		if rel != "." {
			name = top + "/" + filepath.ToSlash(rel)
		}
		e := archiveEntry{path: path}
		switch {
		case d.IsDir():
			e.hdr = tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}
		case info.Mode().IsRegular():
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			e.hdr = tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: info.Size()}
			if want := verify[rel]; want != nil {
				e.verify, e.skip = want, info.Size()-want.Size
				if e.skip < 0 {
					return fmt.Errorf("%s is shorter than the pack it holds", rel)
				}
			}
		default:
			return fmt.Errorf("%s is neither a file nor a directory", rel)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the prepared archive: %w", err)
	}
	return out, nil
}

// sizeArchive fixes every header and returns the exact size of the tar: each header as
// archive/tar encodes it (long names take extra PAX blocks), each file padded to 512 bytes,
// and the two zero blocks that end the archive.
func sizeArchive(entries []archiveEntry, modTime time.Time) (int64, error) {
	var total int64
	for i := range entries {
		e := &entries[i]
		e.hdr.ModTime = modTime
		e.hdr.Format = tar.FormatPAX
		var buf bytes.Buffer
		if err := tar.NewWriter(&buf).WriteHeader(&e.hdr); err != nil {
			return 0, fmt.Errorf("tar header of %s: %w", e.hdr.Name, err)
		}
		e.headerLen = int64(buf.Len())
		total += e.headerLen + (e.hdr.Size+511)/512*512
	}
	return total + 1024, nil
}

// streamArchive writes the tar, hashing the pack bytes of every entry that has a checksum.
func streamArchive(w io.Writer, entries []archiveEntry) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	tw := tar.NewWriter(bw)
	for i := range entries {
		e := &entries[i]
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return fmt.Errorf("write %s: %w", e.hdr.Name, err)
		}
		if e.hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := copyVerified(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish the tar: %w", err)
	}
	return bw.Flush()
}

func copyVerified(tw *tar.Writer, e *archiveEntry) error {
	f, err := os.Open(e.path)
	if err != nil {
		return fmt.Errorf("send %s: %w", e.hdr.Name, err)
	}
	defer f.Close()
	if e.verify == nil {
		if _, err := io.CopyN(tw, f, e.hdr.Size); err != nil {
			return fmt.Errorf("send %s: %w", e.hdr.Name, err)
		}
		return nil
	}
	if _, err := io.CopyN(tw, f, e.skip); err != nil {
		return fmt.Errorf("send %s: %w", e.hdr.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), f)
	if err != nil {
		return fmt.Errorf("send %s: %w", e.hdr.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != e.verify.Size || got != e.verify.SHA256 {
		return fmt.Errorf("send %s: sent %d pack bytes with sha256 %s, manifest says %d bytes with sha256 %s: %w",
			e.hdr.Name, n, got, e.verify.Size, e.verify.SHA256, archive.ErrCorrupt)
	}
	return nil
}

// writeBundleInstructions adds README.txt and restore.sh next to the bundles, so the download
// says how to get the repository back with nothing but git.
func writeBundleInstructions(root, fullName string, m *archive.Manifest, bundles []string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	var names []string
	for _, b := range bundles {
		names = append(names, filepath.Base(b))
	}
	list := strings.Join(names, ", ")
	if list == "" {
		list = "none: the repository was empty"
	}
	readme := fmt.Sprintf(`GitSec snapshot %s of %s (taken %s)

These are standard git bundles (format gitsec-backup/1, docs/backup-format.md): apply them in
lexical order to get a bare repository whose references equal the snapshot's (%d refs, HEAD %s).

Bundles: %s

With stock git:

    git clone --mirror 0001.bundle repo.git
    git -C repo.git fetch --prune "$PWD/0002.bundle" '+refs/*:refs/*'   # each further bundle, in order

or run ./restore.sh [target.git] (default ./repo.git), which does exactly that and runs
git fsck. Push it anywhere with: git -C repo.git push --mirror <url>
`, m.ID, fullName, m.Created.UTC().Format(time.RFC3339), len(m.Refs), m.Head, list)
	script := `#!/bin/sh
# Restores the bundles next to this script into a bare repository with stock git.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
target=${1:-$dir/repo.git}
first=1
for b in "$dir"/*.bundle; do
	[ -e "$b" ] || { git init --quiet --bare "$target"; echo "empty repository restored into $target"; exit 0; }
	if [ "$first" = 1 ]; then
		git clone --quiet --mirror "$b" "$target"
		first=0
	else
		git -C "$target" fetch --quiet --prune "$b" '+refs/*:refs/*'
	fi
done
git -C "$target" fsck --strict
echo "restored into $target"
`
	if err := os.WriteFile(filepath.Join(root, "README.txt"), []byte(readme), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "restore.sh"), []byte(script), 0o755)
}
