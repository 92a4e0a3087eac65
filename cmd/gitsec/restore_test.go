package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/gitmirror"
	"github.com/gitsec/gitsec/internal/gitmirror/gitmirrortest"
)

// backedUpStorage makes file:// storage holding two snapshots of one
// repository, taken with the real backup path.
func backedUpStorage(t *testing.T) (url string, src *gitmirrortest.Source, latest *archive.Manifest) {
	t.Helper()
	ctx := context.Background()
	url = "file://" + t.TempDir()
	st, err := archive.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src = gitmirrortest.NewSource(t)
	mirror, err := gitmirror.Open(filepath.Join(t.TempDir(), "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}
	defer mirror.Close()
	req := archive.SnapshotRequest{
		Tenant:     "tenant-a",
		Repository: archive.Repository{Provider: "bitbucket", UUID: "{0F0E0D0C-1111-4222-8333-444455556666}", FullName: "acme/Widgets"},
		Trigger:    archive.Trigger{Kind: domain.TriggerInitial},
	}
	for i, content := range []string{"one\n", "two\n"} {
		src.Commit("main", "a.txt", content)
		if _, err := mirror.Fetch(ctx, src.URL, nil, nil); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			req.Trigger.Kind = domain.TriggerWebhook
		}
		res, err := st.SnapshotMirror(ctx, mirror, req)
		if err != nil {
			t.Fatal(err)
		}
		latest = res.Manifest
	}
	return url, src, latest
}

func TestSnapshotsListAndRestore(t *testing.T) {
	url, src, latest := backedUpStorage(t)

	out, err := runCLI(t, nil, "snapshots", "list", "--storage", url, "--repository", "acme/widgets")
	if err != nil {
		t.Fatalf("snapshots list: %v\n%s", err, out)
	}
	if !strings.Contains(out, "acme/Widgets") || !strings.Contains(out, latest.ID) || !strings.Contains(out, "webhook") || !strings.Contains(out, "initial") {
		t.Fatalf("snapshots list output:\n%s", out)
	}
	if strings.Index(out, latest.ID) > strings.Index(out, "initial") {
		t.Fatalf("snapshots are not listed newest first:\n%s", out)
	}

	dir := filepath.Join(t.TempDir(), "restored.git")
	out, err = runCLI(t, nil, "restore", "--storage", url, "--tenant", "tenant-a",
		"--repository", "{0F0E0D0C-1111-4222-8333-444455556666}", "--snapshot", "latest", "--to", dir)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if !strings.Contains(out, "[2/2]") || !strings.Contains(out, "restored snapshot "+latest.ID) {
		t.Fatalf("restore output lacks progress or summary:\n%s", out)
	}
	if got := gitmirrortest.ForEachRef(t, dir); !got.Equal(src.Refs()) {
		t.Fatalf("restored refs %v, source %v", got, src.Refs())
	}
	gitmirrortest.Git(t, dir, "fsck", "--strict", "--no-dangling")

	bundles := filepath.Join(t.TempDir(), "bundles")
	out, err = runCLI(t, nil, "restore", "--storage", url, "--repository", "acme/widgets", "--to", bundles, "--bundle")
	if err != nil {
		t.Fatalf("restore --bundle: %v\n%s", err, out)
	}
	repo := filepath.Join(t.TempDir(), "from-bundles.git")
	gitmirrortest.Git(t, bundles, "clone", "--quiet", "--mirror", filepath.Join(bundles, "0001.bundle"), repo)
	gitmirrortest.Git(t, repo, "fetch", "--quiet", "--prune", filepath.Join(bundles, "0002.bundle"), "+refs/*:refs/*")
	if got := gitmirrortest.ForEachRef(t, repo); !got.Equal(latest.Refs) {
		t.Fatalf("refs from bundles %v, want %v", got, latest.Refs)
	}

	other := filepath.Join(t.TempDir(), "export")
	if out, err = runCLI(t, nil, "export-bundles", "--storage", url, "--repository", "acme/widgets", "--to", other); err != nil {
		t.Fatalf("export-bundles: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(other); len(entries) != 2 {
		t.Fatalf("export-bundles wrote %d files", len(entries))
	}
}

func TestRestoreNamesBadValues(t *testing.T) {
	url, _, _ := backedUpStorage(t)
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectErrors(t, []badArgs{
		{[]string{"restore", "--storage", url, "--repository", "acme/widgets", "--snapshot", "yesterday", "--to", t.TempDir()}, `"yesterday"`},
		{[]string{"restore", "--storage", url, "--repository", "acme/widgets", "--to", nonEmpty}, nonEmpty},
		{[]string{"restore", "--storage", url, "--repository", "acme/gadgets", "--to", t.TempDir()}, `"acme/gadgets"`},
		{[]string{"restore", "--storage", url, "--repository", "acme/widgets", "--tenant", "../etc", "--to", t.TempDir()}, `"../etc"`},
		{[]string{"restore", "--storage", "not a url", "--repository", "acme/widgets", "--to", t.TempDir()}, `"not a url"`},
		{[]string{"snapshots", "list", "--storage", url, "--repository", "no-such-uuid"}, `"no-such-uuid"`},
		{[]string{"restore", "--storage", url, "--repository", "acme/widgets", "--snapshot", "20200101T000000.000Z-00000000", "--to", t.TempDir()}, "20200101T000000.000Z-00000000"},
	})
}

// badArgs is a command line that must fail with an error naming want.
type badArgs struct {
	args []string
	want string
}

func expectErrors(t *testing.T, cases []badArgs) {
	t.Helper()
	for _, c := range cases {
		out, err := runCLI(t, nil, c.args...)
		if err == nil {
			t.Errorf("%v succeeded:\n%s", c.args, out)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %q does not name %s", c.args, err, c.want)
		}
	}
}
