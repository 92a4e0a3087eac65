package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
)

// exportedStorage makes file:// storage holding acme/widgets with a first
// snapshot without exports and a later one with the sample pull requests and
// metadata.
func exportedStorage(t *testing.T, incomplete string) (url string, first, latest *archive.Manifest) {
	t.Helper()
	url = "file://" + t.TempDir()
	st, err := archive.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	repo := archive.Repository{Provider: "bitbucket", UUID: "0f0e0d0c-1111-4222-8333-444455556666", FullName: "acme/widgets"}
	first = archivetest.FirstSnapshot(t, st, "tenant-a", repo)
	latest = archivetest.Commit(t, st, first, archivetest.Exports{
		PullRequests: archivetest.SamplePullRequests(), Metadata: archivetest.SampleMetadata(), Incomplete: incomplete,
	})
	return url, first, latest
}

// offline points the service's dependencies at closed ports: the offline
// commands must not need them.
func offline(t *testing.T) map[string]string {
	return map[string]string{
		"GITSEC_DATABASE_URL":     "postgres://u:p@127.0.0.1:" + strconv.Itoa(closedPort(t)) + "/x?connect_timeout=1",
		"GITSEC_TEMPORAL_ADDRESS": "127.0.0.1:" + strconv.Itoa(closedPort(t)),
	}
}

func TestPullRequestsList(t *testing.T) {
	url, first, latest := exportedStorage(t, "")
	out, err := runCLI(t, offline(t), "pull-requests", "list", "--storage", url, "--repository", "ACME/widgets")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	for _, want := range []string{latest.ID, "4 pull requests", "ID", "SOURCE -> DESTINATION", "#1", "OPEN", "Add the widget cache", "Alice Liddell",
		"feature/cache -> main", "1/2", "2026-03-03T11:00:00Z", "#3", "(deleted user)", "someone/widgets-fork:cobol -> main", "SUPERSEDED"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "incomplete") {
		t.Errorf("a complete export is reported incomplete:\n%s", out)
	}

	out, err = runCLI(t, nil, "pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--state", "merged", "--json")
	if err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	var doc struct {
		Snapshot string `json:"snapshot"`
		Export   struct {
			Complete bool           `json:"complete"`
			Records  int            `json:"records"`
			States   map[string]int `json:"states"`
		} `json:"export"`
		PullRequests []struct {
			ID       int64  `json:"id"`
			State    string `json:"state"`
			Comments int    `json:"comments"`
		} `json:"pull_requests"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("list --json is not JSON: %v\n%s", err, out)
	}
	if doc.Snapshot != latest.ID || !doc.Export.Complete || doc.Export.Records != 4 || doc.Export.States["OPEN"] != 1 ||
		len(doc.PullRequests) != 1 || doc.PullRequests[0].ID != 2 || doc.PullRequests[0].State != "MERGED" {
		t.Fatalf("list --state merged --json: %+v", doc)
	}

	// The snapshot before exports existed says so.
	_, err = runCLI(t, nil, "pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--snapshot", first.ID)
	if err == nil || !strings.Contains(err.Error(), first.ID) || !strings.Contains(err.Error(), "taken before exports existed") {
		t.Fatalf("list of a snapshot without exports: %v", err)
	}
}

func TestPullRequestsShow(t *testing.T) {
	url, _, latest := exportedStorage(t, "")
	out, err := runCLI(t, offline(t), "pull-requests", "show", "--storage", url, "--repository", "acme/widgets", "1")
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	for _, want := range []string{
		"#1 Add the widget cache", "State:        OPEN", "Author:       Alice Liddell",
		"feature/cache (111111111111) -> main (222222222222)",
		"  Caches widgets.\n\n  * fast\n  * small\n",
		"Bob Builder                    reviewer     approved",
		"carol                          reviewer     changes requested",
		"Alice Liddell                  participant  -",
		"  [#10] Bob Builder, 2026-03-01T10:00:00Z\n      Looks good overall.\n      [#11] Alice Liddell",
		"          [#12] Bob Builder, 2026-03-01T12:00:00Z\n              Reply to a reply.",
		"[#13] carol, 2026-03-02T09:00:00Z on cache/cache.go:41->42 [resolved by Alice Liddell 2026-03-03T10:00:00Z]",
		"on cache/new.go:->7",
		"[#15] Bob Builder, 2026-03-02T10:00:00Z [deleted]\n      (comment deleted)",
		"[#16] Alice Liddell, 2026-03-02T11:00:00Z [pending]",
		"Tasks (1 of 2 resolved):", "[ ] #100 Add a benchmark (carol, on comment #13)",
		"[x] #101 Update the docs (Bob Builder; resolved by Alice Liddell 2026-03-03T10:00:00Z)",
		"2026-03-02T09:10:00Z  carol requested changes", "Bob Builder approved",
		"Commits (1):", "111111111111  2026-03-01  Alice Liddell <alice@example.com>  Add the widget cache\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, nil, "pull-requests", "show", "--storage", url, "--repository", "acme/widgets", "--snapshot", latest.ID, "#3", "--json")
	if err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	var doc struct {
		PullRequest archive.PullRequestRecord `json:"pull_request"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.PullRequest.ID != 3 || doc.PullRequest.Author != nil {
		t.Fatalf("show --json: %v %+v\n%s", err, doc, out)
	}
	out, err = runCLI(t, nil, "pull-requests", "show", "--storage", url, "--repository", "acme/widgets", "3")
	if err != nil || !strings.Contains(out, "Author:       (deleted user)") || !strings.Contains(out, "[#30] (deleted user)") ||
		!strings.Contains(out, "Not exported: commits: the source repository is gone") {
		t.Fatalf("show 3: %v\n%s", err, out)
	}
}

func TestPullRequestsIncompleteExport(t *testing.T) {
	url, _, _ := exportedStorage(t, "Bitbucket rate limit reached")
	out, err := runCLI(t, nil, "pull-requests", "list", "--storage", url, "--repository", "acme/widgets")
	if err != nil || !strings.Contains(out, "is incomplete: Bitbucket rate limit reached") {
		t.Fatalf("list of an incomplete export: %v\n%s", err, out)
	}
	out, err = runCLI(t, nil, "pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--json")
	if err != nil || !strings.Contains(out, `"reason": "Bitbucket rate limit reached"`) || !strings.Contains(out, `"complete": false`) {
		t.Fatalf("list --json of an incomplete export: %v\n%s", err, out)
	}
}

func TestPullRequestsNameBadValues(t *testing.T) {
	url, _, _ := exportedStorage(t, "")
	expectErrors(t, []badArgs{
		{[]string{"pull-requests", "list", "--storage", url, "--repository", "acme/gadgets"}, `"acme/gadgets"`},
		{[]string{"pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--snapshot", "yesterday"}, `"yesterday"`},
		{[]string{"pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--snapshot", "20200101T000000.000Z-00000000"}, "20200101T000000.000Z-00000000"},
		{[]string{"pull-requests", "list", "--storage", url, "--repository", "acme/widgets", "--state", "CLOSED"}, `"CLOSED"`},
		{[]string{"pull-requests", "show", "--storage", url, "--repository", "acme/widgets", "42"}, "pull request 42 is not in snapshot"},
		{[]string{"pull-requests", "show", "--storage", url, "--repository", "acme/widgets", "abc"}, `"abc"`},
		{[]string{"pull-requests", "show", "--storage", url, "--repository", "acme/gadgets", "1"}, `"acme/gadgets"`},
		{[]string{"export-html", "--storage", url, "--repository", "acme/gadgets", "--to", t.TempDir()}, `"acme/gadgets"`},
		{[]string{"export-html", "--storage", url, "--repository", "acme/widgets", "--snapshot", "20200101T000000.000Z-00000000", "--to", t.TempDir()}, "20200101T000000.000Z-00000000"},
	})
}

func TestExportHTMLOffline(t *testing.T) {
	url, first, latest := exportedStorage(t, "")
	dir := filepath.Join(t.TempDir(), "site")
	env := offline(t)
	env["GITSEC_STORAGE_URL"] = url // no --storage: the variable is enough
	out, err := runCLI(t, env, "export-html", "--repository", "acme/widgets", "--to", dir)
	if err != nil {
		t.Fatalf("export-html: %v\n%s", err, out)
	}
	if !strings.Contains(out, "wrote 4 pull requests of acme/widgets (snapshot "+latest.ID+")") {
		t.Fatalf("export-html output:\n%s", out)
	}
	for _, name := range []string{"index.html", "pr/1.html", "pr/2.html", "pr/3.html", "pr/4.html"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), "Content-Security-Policy") {
			t.Errorf("%s lacks its Content-Security-Policy", name)
		}
	}
	index, _ := os.ReadFile(filepath.Join(dir, "index.html"))
	if !strings.Contains(string(index), "All the widgets.") || !strings.Contains(string(index), "not permitted") {
		t.Errorf("index.html lacks the repository metadata:\n%s", index)
	}
	if _, err := runCLI(t, nil, "export-html", "--storage", url, "--repository", "acme/widgets", "--to", dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("export-html into a non-empty directory: %v", err)
	}
	_, err = runCLI(t, nil, "export-html", "--storage", url, "--repository", "acme/widgets", "--snapshot", first.ID, "--to", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "taken before exports existed") {
		t.Fatalf("export-html of a snapshot without exports: %v", err)
	}
}
