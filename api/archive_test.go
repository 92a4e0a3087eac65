package api_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/api"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

// archiveFixture is tenant A's acme/widgets backed up for real into storageURL: two snapshots
// (two packs) of a repository with branches and an annotated tag, recorded in Postgres.
type archiveFixture struct {
	*fixture
	storageURL string
	key        archive.RepoKey
	tenantID   uuid.UUID
	instID     uuid.UUID
	repoID     uuid.UUID
	first      *archive.Manifest
	latest     *archive.Manifest
}

func newArchiveFixture(t *testing.T, storageURL string, bigBlob int) *archiveFixture {
	t.Helper()
	ctx := context.Background()
	f := newFixture(t)
	arch, err := archive.Open(ctx, storageURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arch.Close() })
	f.deps.Archive = arch
	f.deps.ScratchDir = t.TempDir()
	f.serve(t)

	instID := f.installationA(t)
	_, me := f.do(t, "GET", "/api/v1/me", f.tokenA, "")
	tenantID := uuid.MustParse(me["tenant"].(map[string]any)["id"].(string))
	identity := archive.Repository{Provider: "bitbucket", UUID: "{0F0E0D0C-1111-4222-8333-444455556666}", FullName: "acme/widgets"}
	repoID, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: tenantID, InstallationID: instID,
		ProviderUUID: identity.UUID, FullName: identity.FullName, MainBranch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	a := &archiveFixture{fixture: f, storageURL: storageURL, tenantID: tenantID, instID: instID, repoID: repoID}
	a.key, _ = archive.NewRepoKey(tenantID.String(), identity.UUID)

	src := gitmirrortest.NewSource(t)
	mirror, err := gitmirror.Open(filepath.Join(t.TempDir(), "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mirror.Close() })
	backup := func() *archive.Manifest {
		t.Helper()
		if _, err := mirror.Fetch(ctx, src.URL, nil, nil); err != nil {
			t.Fatal(err)
		}
		res, err := arch.SnapshotMirror(ctx, mirror, archive.SnapshotRequest{Tenant: tenantID.String(), Repository: identity,
			Trigger: archive.Trigger{Kind: domain.TriggerManual}})
		if err != nil {
			t.Fatal(err)
		}
		m := res.Manifest
		var parent *string
		if m.Parent != "" {
			parent = &m.Parent
		}
		if err := f.store.RecordSnapshot(ctx, store.Snapshot{ID: m.ID, TenantID: tenantID, RepositoryID: repoID, ManifestKey: a.key.ManifestKey(m.ID),
			Trigger: m.Trigger.Kind, ParentID: parent, RefsCount: len(m.Refs), PacksCount: len(m.Packs), StartedAt: m.Created, FinishedAt: m.Created}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	c1 := src.Commit("main", "README.md", "hello\n")
	src.Commit("feature", "feature.txt", "wip\n")
	src.Tag("v1.0", c1)
	a.first = backup()
	big := "small\n"
	if bigBlob > 0 {
		raw := make([]byte, bigBlob)
		rand.Read(raw)
		big = base64.StdEncoding.EncodeToString(raw)
	}
	src.Commit("main", "data.bin", big)
	src.Commit("release", "notes.txt", "1.1\n")
	src.Git("update-ref", "-d", "refs/heads/feature")
	a.latest = backup()
	if len(a.latest.Packs) != 2 {
		t.Fatalf("latest snapshot has %d packs, want 2", len(a.latest.Packs))
	}
	return a
}

// download GETs the archive into dir/name and returns the response (body consumed).
func (a *archiveFixture) download(t *testing.T, path, token, dir string) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", a.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	out := filepath.Join(dir, "download.tar")
	file, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	_, err = io.Copy(file, resp.Body)
	return resp, out, err
}

func git(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func refLines(t *testing.T, repo string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(git(t, "-C", repo, "for-each-ref", "--format=%(refname) %(objectname)")), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func manifestLines(m *archive.Manifest) []string {
	var out []string
	for name, oid := range m.Refs {
		out = append(out, name+" "+oid)
	}
	sort.Strings(out)
	return out
}

func untar(t *testing.T, tarPath, dir string) {
	t.Helper()
	if out, err := exec.Command("tar", "-xf", tarPath, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar -xf: %v\n%s", err, out)
	}
}

func TestSnapshotArchiveRestoresWithStockGit(t *testing.T) {
	for name, url := range map[string]func(t *testing.T) string{
		"file": func(t *testing.T) string { return "file://" + t.TempDir() },
		"s3":   func(t *testing.T) string { return testenv.S3(t) },
	} {
		t.Run(name, func(t *testing.T) {
			a := newArchiveFixture(t, url(t), 0)
			checkArchives(t, a, a.latest)
			checkArchives(t, a, a.first)
		})
	}
}

func checkArchives(t *testing.T, a *archiveFixture, m *archive.Manifest) {
	t.Helper()
	want := manifestLines(m)

	// format=bundle: the chain, cloned and fetched by hand as the README says, and by restore.sh.
	dir := t.TempDir()
	resp, tarPath, err := a.download(t, "/api/v1/snapshots/"+m.ID+"/archive?format=bundle", a.tokenA, dir)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bundle download = %d, %v", resp.StatusCode, err)
	}
	base := "acme-widgets-" + m.ID + "-bundles"
	if got := resp.Header.Get("Content-Disposition"); got != `attachment; filename="`+base+`.tar"` {
		t.Errorf("Content-Disposition = %q", got)
	}
	st, _ := os.Stat(tarPath)
	if resp.Header.Get("Content-Length") != strconv.FormatInt(st.Size(), 10) || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Errorf("Content-Length %q Content-Type %q for %d bytes", resp.Header.Get("Content-Length"), resp.Header.Get("Content-Type"), st.Size())
	}
	untar(t, tarPath, dir)
	bundles, _ := filepath.Glob(filepath.Join(dir, base, "*.bundle"))
	if len(bundles) != len(m.Packs) {
		t.Fatalf("%d bundles for %d packs", len(bundles), len(m.Packs))
	}
	repo := filepath.Join(dir, "repo.git")
	git(t, "clone", "--quiet", "--mirror", bundles[0], repo)
	for _, b := range bundles[1:] {
		git(t, "-C", repo, "fetch", "--quiet", "--prune", b, "+refs/*:refs/*")
	}
	if got := refLines(t, repo); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bundle chain restores\n%v\nwant\n%v", got, want)
	}
	git(t, "-C", repo, "fsck", "--strict")
	script := filepath.Join(dir, base, "restore.sh")
	if out, err := exec.Command(script, filepath.Join(dir, "by-script.git")).CombinedOutput(); err != nil {
		t.Fatalf("restore.sh: %v\n%s", err, out)
	}
	if got := refLines(t, filepath.Join(dir, "by-script.git")); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("restore.sh restores\n%v\nwant\n%v", got, want)
	}
	if readme, err := os.ReadFile(filepath.Join(dir, base, "README.txt")); err != nil || !strings.Contains(string(readme), "git clone --mirror 0001.bundle") {
		t.Errorf("README.txt = %q, %v", readme, err)
	}

	// format=tar: a bare repository, as it is.
	dir = t.TempDir()
	resp, tarPath, err = a.download(t, "/api/v1/snapshots/"+m.ID+"/archive?format=tar", a.tokenA, dir)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("tar download = %d, %v", resp.StatusCode, err)
	}
	base = "acme-widgets-" + m.ID
	if got := resp.Header.Get("Content-Disposition"); got != `attachment; filename="`+base+`.tar"` {
		t.Errorf("Content-Disposition = %q", got)
	}
	untar(t, tarPath, dir)
	bare := filepath.Join(dir, base)
	if got := refLines(t, bare); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tar restores\n%v\nwant\n%v", got, want)
	}
	git(t, "-C", bare, "fsck", "--strict")
	if head := strings.TrimSpace(git(t, "-C", bare, "symbolic-ref", "HEAD")); head != m.Head {
		t.Errorf("HEAD = %s, want %s", head, m.Head)
	}
}

func TestSnapshotArchiveErrors(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	base := "/api/v1/snapshots/" + a.latest.ID + "/archive"
	for _, c := range []struct {
		token, path string
		status      int
		code, names string
	}{
		{a.tokenA, base + "?format=zip", 400, "invalid_parameter", `"zip"`},
		{a.tokenB, base + "?format=tar", 404, "not_found", a.latest.ID},
		{a.tokenB, base, 404, "not_found", a.latest.ID},
		{a.tokenA, "/api/v1/snapshots/20200101T000000.000Z-00000000/archive", 404, "not_found", "20200101T000000.000Z-00000000"},
	} {
		status, body := a.do(t, "GET", c.path, c.token, "")
		if status != c.status || errorCode(t, body) != c.code || !strings.Contains(body["error"].(map[string]any)["message"].(string), c.names) {
			t.Errorf("GET %s = %d %v, want %d %s naming %s", c.path, status, body, c.status, c.code, c.names)
		}
	}
}

func TestSnapshotArchiveRefusesTamperedPack(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	archivetest.FlipStoredByte(t, a.storageURL, a.key.PackKey(a.latest.Packs[1].Name))
	for _, format := range []string{"bundle", "tar"} {
		status, body := a.do(t, "GET", "/api/v1/snapshots/"+a.latest.ID+"/archive?format="+format, a.tokenA, "")
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != 500 || errorCode(t, body) != "backup_corrupt" || !strings.Contains(msg, "sha256") || !strings.Contains(msg, a.latest.Packs[1].Name) {
			t.Errorf("format=%s: %d %v, want 500 backup_corrupt naming the pack's checksum", format, status, body)
		}
	}
	// The first snapshot does not need that pack.
	if resp, _, err := a.download(t, "/api/v1/snapshots/"+a.first.ID+"/archive?format=tar", a.tokenA, t.TempDir()); err != nil || resp.StatusCode != 200 {
		t.Errorf("the first snapshot = %v, %v; want 200", resp, err)
	}
}

// A file that changes between preparation and sending (the checksum is known only once the
// status is out) must cut the download, never complete it with wrong bytes.
func TestSnapshotArchiveCutsTheConnectionWhenAPackChangesWhileSending(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	for _, format := range []string{"bundle", "tar"} {
		t.Cleanup(api.SetBeforeArchiveStream(func(dir string) {
			var victim string
			filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
				if err == nil && (strings.HasSuffix(path, ".pack") || strings.HasSuffix(path, "0002.bundle")) {
					victim = path
				}
				return nil
			})
			os.Chmod(victim, 0o644)
			data, err := os.ReadFile(victim)
			if err != nil {
				t.Error(err)
				return
			}
			data[len(data)-30] ^= 0xff
			if err := os.WriteFile(victim, data, 0o644); err != nil {
				t.Error(err)
			}
		}))
		resp, _, err := a.download(t, "/api/v1/snapshots/"+a.latest.ID+"/archive?format="+format, a.tokenA, t.TempDir())
		// A small archive is still in the server's buffer when the connection is cut, so the
		// client may see no status at all; either way it never gets a complete file.
		if resp == nil && !errors.Is(err, io.EOF) || resp != nil && (resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Errorf("format=%s: response %v, error %v; want a cut connection", format, resp, err)
		}
	}
	if !strings.Contains(a.logs.String(), "archive download aborted") {
		t.Errorf("no log line for the aborted download:\n%s", a.logs.String())
	}
}

// The download streams from disk at about the speed of reading the files: it reports both,
// for a snapshot with a 16 MiB blob (12 MiB of random bytes, base64: about 12 MiB of packs).
func TestSnapshotArchiveThroughput(t *testing.T) {
	storage := t.TempDir()
	a := newArchiveFixture(t, "file://"+storage, 12<<20)
	var packBytes int64
	startRead := time.Now()
	for _, p := range a.latest.Packs {
		f, err := os.Open(filepath.Join(storage, a.key.PackKey(p.Name)))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, f)
		f.Close()
		packBytes += n
	}
	read := time.Since(startRead)
	for _, format := range []string{"tar", "bundle"} {
		req, _ := http.NewRequest("GET", a.srv.URL+"/api/v1/snapshots/"+a.latest.ID+"/archive?format="+format, nil)
		req.Header.Set("Authorization", "Bearer "+a.tokenA)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != 200 || n < packBytes {
			t.Fatalf("format=%s: %d, %d bytes, %v\n%s", format, resp.StatusCode, n, err, a.logs.String())
		}
		t.Logf("format=%s: %d bytes in %v (%.0f MiB/s, preparation included); reading the stored packs: %d bytes in %v (%.0f MiB/s)",
			format, n, took.Round(time.Millisecond), float64(n)/(1<<20)/took.Seconds(), packBytes, read.Round(time.Millisecond),
			float64(packBytes)/(1<<20)/read.Seconds())
	}

	// A restore drill of the same snapshot, for its step timings.
	a.withDrillWorker(t)
	start := time.Now()
	d := a.drill(t, "")
	if d["status"] != "passed" {
		t.Fatalf("drill = %v", d)
	}
	t.Logf("restore drill of the same snapshot: %v end to end, %v ms recorded; steps %v", time.Since(start).Round(time.Millisecond), d["duration_ms"], d["steps"])
}

// An empty repository's snapshot has no pack: the bundle download holds only the instructions,
// and restore.sh makes an empty bare repository; the tar download is an empty bare repository.
func TestSnapshotArchiveOfAnEmptyRepository(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	ctx := context.Background()
	identity := archive.Repository{Provider: "bitbucket", UUID: "{22222222-3333-4444-8555-666666666666}", FullName: "acme/empty"}
	repoID, _, err := a.store.UpsertRepository(ctx, store.Repository{TenantID: a.tenantID, InstallationID: a.instID, ProviderUUID: identity.UUID, FullName: identity.FullName})
	if err != nil {
		t.Fatal(err)
	}
	m := archivetest.FirstSnapshot(t, a.deps.Archive, a.tenantID.String(), identity)
	key, _ := archive.NewRepoKey(a.tenantID.String(), identity.UUID)
	if err := a.store.RecordSnapshot(ctx, store.Snapshot{ID: m.ID, TenantID: a.tenantID, RepositoryID: repoID, ManifestKey: key.ManifestKey(m.ID),
		Trigger: m.Trigger.Kind, StartedAt: m.Created, FinishedAt: m.Created}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	resp, tarPath, err := a.download(t, "/api/v1/snapshots/"+m.ID+"/archive?format=bundle", a.tokenA, dir)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bundle download = %v, %v", resp, err)
	}
	untar(t, tarPath, dir)
	base := filepath.Join(dir, "acme-empty-"+m.ID+"-bundles")
	if bundles, _ := filepath.Glob(filepath.Join(base, "*.bundle")); len(bundles) != 0 {
		t.Fatalf("bundles of an empty repository: %v", bundles)
	}
	target := filepath.Join(dir, "restored.git")
	if out, err := exec.Command(filepath.Join(base, "restore.sh"), target).CombinedOutput(); err != nil {
		t.Fatalf("restore.sh: %v\n%s", err, out)
	}
	if refs := refLines(t, target); len(refs) != 0 {
		t.Fatalf("refs of the restored empty repository: %v", refs)
	}

	dir = t.TempDir()
	resp, tarPath, err = a.download(t, "/api/v1/snapshots/"+m.ID+"/archive?format=tar", a.tokenA, dir)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("tar download = %v, %v", resp, err)
	}
	untar(t, tarPath, dir)
	bare := filepath.Join(dir, "acme-empty-"+m.ID)
	if refs := refLines(t, bare); len(refs) != 0 {
		t.Fatalf("refs of the empty bare repository: %v", refs)
	}
	git(t, "-C", bare, "fsck", "--strict")
}

// The API server's write timeout (a minute in `gitsec api`) suits JSON answers; a download of a
// big repository takes longer, so the route extends its own deadline. Here the server's timeout
// is shorter than the time before the first byte: the download must still arrive whole.
func TestSnapshotArchiveOutlastsTheServerWriteTimeout(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	slow := httptest.NewUnstartedServer(a.srv.Config.Handler)
	slow.Config.WriteTimeout = 300 * time.Millisecond
	slow.Start()
	t.Cleanup(slow.Close)
	t.Cleanup(api.SetBeforeArchiveStream(func(string) { time.Sleep(600 * time.Millisecond) }))
	req, _ := http.NewRequest("GET", slow.URL+"/api/v1/snapshots/"+a.latest.ID+"/archive?format=tar", nil)
	req.Header.Set("Authorization", "Bearer "+a.tokenA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("download past the server's write timeout: %v", err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != resp.ContentLength {
		t.Fatalf("download past the server's write timeout: status %d, %d of %d bytes, %v", resp.StatusCode, n, resp.ContentLength, err)
	}
}
