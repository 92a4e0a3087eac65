package prsite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/prsite"
)

const (
	script  = `<script>alert(1)</script>`
	img     = `<img src=x onerror=alert(1)>`
	jsLink  = `[click me](javascript:alert(1))`
	unicode = "🎉 עברית‏ مرحبا 中文漢字 "
)

var evil = script + img + jsLink + unicode

func newStore(t *testing.T) (*archive.Store, *archive.Manifest) {
	t.Helper()
	st, err := archive.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	first := archivetest.FirstSnapshot(t, st, "tenant-a", archive.Repository{Provider: "bitbucket", UUID: "0f0e0d0c-1111-4222-8333-444455556666", FullName: "acme/widgets"})
	return st, first
}

// hostilePullRequests puts markup, a javascript: link and mixed scripts in
// every text a page shows, and a 1 MB description.
func hostilePullRequests() []archive.PullRequestRecord {
	prs := archivetest.SamplePullRequests()
	pr := &prs[0]
	pr.Title = "Title " + evil
	pr.Description = evil + "\n" + strings.Repeat("x", 1<<20)
	pr.DescriptionHTML = `<p>` + script + `<a href="javascript:alert(1)">rendered</a></p>`
	pr.Author = &archive.Person{DisplayName: "Mallory " + evil, UUID: "{m}"}
	pr.Source.Branch = "feature/" + script
	pr.Destination.Branch = "main" + img
	pr.URL = "javascript:alert(1)"
	for i := range pr.Comments {
		pr.Comments[i].Raw += " " + evil
		pr.Comments[i].HTML = script
	}
	pr.Comments[3].Inline.Path = "src/" + img + ".go"
	pr.Tasks[0].Raw = "Task " + evil
	pr.Commits[0].Message = "Commit " + evil
	pr.Commits[0].Author = "Eve " + img
	prs[1].URL = "https://bitbucket.org/acme/widgets/pull-requests/2"
	return prs
}

func TestHostileTextIsEscaped(t *testing.T) {
	st, first := newStore(t)
	md := archivetest.SampleMetadata()
	md.Description = "Repo " + evil
	md.Website = "javascript:alert(1)"
	m := archivetest.Commit(t, st, first, archivetest.Exports{PullRequests: hostilePullRequests(), Metadata: md})
	dir := filepath.Join(t.TempDir(), "site")
	res, err := prsite.Write(context.Background(), st, m, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.PullRequests != 4 || !res.Metadata {
		t.Fatalf("result %+v", res)
	}
	files := []string{"index.html", "pr/1.html", "pr/2.html", "pr/3.html", "pr/4.html"}
	attrOn := regexp.MustCompile(`(?i)<[a-z][^>]*\son[a-z]+\s*=`)
	jsHref := regexp.MustCompile(`(?i)(href|src)\s*=\s*["']?\s*javascript:`)
	pages := map[string]string{}
	for _, name := range files {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		page := string(raw)
		pages[name] = page
		if strings.Contains(strings.ToLower(page), "<script") {
			t.Errorf("%s holds an unescaped <script", name)
		}
		if attrOn.MatchString(page) || strings.Contains(page, "<img") {
			t.Errorf("%s holds an element with an event handler attribute: %q", name, attrOn.FindString(page))
		}
		if jsHref.MatchString(page) {
			t.Errorf("%s links to javascript: %q", name, jsHref.FindString(page))
		}
		if !strings.Contains(page, `content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`) {
			t.Errorf("%s lacks the Content-Security-Policy", name)
		}
		if strings.Contains(page, "ZgotmplZ") {
			t.Errorf("%s holds a value html/template had to neutralise: a link was not filtered first", name)
		}
	}
	pr := pages["pr/1.html"]
	for _, want := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		"&lt;img src=x onerror=alert(1)&gt;",
		"[click me](javascript:alert(1))",
		"🎉", "עברית", "مرحبا", "中文漢字",
		"Mallory &lt;script&gt;",
		"feature/&lt;script&gt;",
		"src/&lt;img src=x onerror=alert(1)&gt;.go:41-&gt;42",
		"Task &lt;script&gt;",
		"Commit &lt;script&gt;",
		strings.Repeat("x", 1<<20),
	} {
		if !strings.Contains(pr, want) {
			t.Errorf("pr/1.html lacks %q", want)
		}
	}
	if strings.Contains(pr, "rendered</a>") {
		t.Error("pr/1.html shows Bitbucket's rendered HTML")
	}
	if strings.Contains(pr, "On Bitbucket") {
		t.Error("pr/1.html links its javascript: URL")
	}
	if !strings.Contains(pages["pr/2.html"], `href="https://bitbucket.org/acme/widgets/pull-requests/2"`) {
		t.Error("pr/2.html lacks its https link to Bitbucket")
	}
	index := pages["index.html"]
	for _, want := range []string{"Repo &lt;script&gt;", "Title &lt;script&gt;", `href="pr/1.html"`, "not permitted", "<code>main</code>"} {
		if !strings.Contains(index, want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
}

func TestPagesShowTheReview(t *testing.T) {
	st, first := newStore(t)
	m := archivetest.Commit(t, st, first, archivetest.Exports{PullRequests: archivetest.SamplePullRequests(), Incomplete: "Bitbucket rate limit"})
	dir := t.TempDir()
	res, err := prsite.Write(context.Background(), st, m, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metadata {
		t.Fatal("result says metadata was written")
	}
	read := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	index := read("index.html")
	for _, want := range []string{"incomplete: Bitbucket rate limit", "no metadata export", `href="#state-OPEN">OPEN</a>: 1`,
		`href="#state-SUPERSEDED">SUPERSEDED</a>: 1`, "someone/widgets-fork:cobol", "(deleted user)"} {
		if !strings.Contains(index, want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	pr1 := read("pr/1.html")
	for _, want := range []string{
		"Bob Builder</td><td>reviewer</td><td><span class=\"mark mark-resolved\">approved",
		"changes requested",
		`cache/cache.go:41-&gt;42`, `cache/new.go:-&gt;7`,
		`mark-resolved">resolved</span> by Alice Liddell`,
		`mark-deleted">deleted`, `mark-pending">pending`,
		"(comment deleted)",
		"Add a benchmark", `href="#comment-13">comment #13`,
		"requested changes", "approved",
		"111111111111", "Add the widget cache\n\nWith tests.",
		"incomplete: Bitbucket rate limit",
	} {
		if !strings.Contains(pr1, want) {
			t.Errorf("pr/1.html lacks %q", want)
		}
	}
	// Replies are nested: 12 (a reply to 11, itself a reply to 10) sits two levels deep.
	i10, i11, i12 := strings.Index(pr1, `id="comment-10"`), strings.Index(pr1, `id="comment-11"`), strings.Index(pr1, `id="comment-12"`)
	if i10 < 0 || i10 > i11 || i11 > i12 || strings.Count(pr1[i10:i12], `class="replies"`) != 2 {
		t.Error("pr/1.html does not nest the replies of comment 10")
	}
	pr3 := read("pr/3.html")
	if !strings.Contains(pr3, "(deleted user)") || !strings.Contains(pr3, "commits: the source repository is gone") {
		t.Error("pr/3.html lacks the deleted user or the export gap")
	}
}

func TestSnapshotWithoutExports(t *testing.T) {
	st, first := newStore(t)
	if _, err := prsite.Write(context.Background(), st, first, t.TempDir()); !errors.Is(err, archive.ErrNoExport) {
		t.Fatalf("Write of a snapshot without exports: %v, want ErrNoExport", err)
	}
}
