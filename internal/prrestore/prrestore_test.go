package prrestore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/prrestore"
)

type world struct {
	emu *emulator.Server
}

func startEmulator(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Seed: &emulator.Seed{
			Users: []emulator.SeedUser{{Username: "alice", DisplayName: "Alice Anders"}, {Username: "bob", DisplayName: "Bob Berg"},
				{Username: "carol", DisplayName: "Carol Chen"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Members: []string{"bob", "carol"},
				Repositories: []emulator.SeedRepository{{Slug: "api", Generate: &emulator.Generate{
					Commits: 30, Branches: 1, PullRequests: 8,
					PRStates: []string{"OPEN", "MERGED", "OPEN", "DECLINED", "OPEN", "SUPERSEDED", "OPEN", "MERGED"}}}}}},
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
		cancel()
	})
	return &world{emu: emu}
}

func (w *world) token(t *testing.T, user string, scopes ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"user": user, "scopes": scopes})
	resp, err := http.Post(w.emu.URL()+"/_emulator/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("issue token: %d %v", resp.StatusCode, err)
	}
	return tr.AccessToken
}

func (w *world) client(token string) *bitbucket.Client {
	return bitbucket.New(bitbucket.Options{
		APIBaseURL: w.emu.URL(), GitBaseURL: w.emu.URL(),
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "bearer"}),
		Limiter:     bitbucket.NewLimiter(100000, 1000),
		Logger:      slog.New(slog.DiscardHandler),
		MaxAttempts: 3, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
}

func (w *world) gitURL(token, fullName string) string {
	u, _ := url.Parse(w.emu.URL() + "/" + fullName + ".git")
	u.User = url.UserPassword("x-token-auth", token)
	return u.String()
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// records reads every pull request of a repository into export records, as a backup would.
func records(t *testing.T, c *bitbucket.Client, workspace, slug string) []archive.PullRequestRecord {
	t.Helper()
	ctx := context.Background()
	listed, err := c.ListPullRequests(ctx, workspace, slug, bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates})
	if err != nil {
		t.Fatal(err)
	}
	var out []archive.PullRequestRecord
	for _, l := range listed {
		pr, err := c.GetPullRequest(ctx, workspace, slug, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		rec := archive.PullRequestRecord{ID: pr.ID, Title: pr.Title, State: pr.State, Draft: pr.Draft, Description: pr.Description,
			Source:            archive.BranchRecord{Branch: pr.Source.Branch.Name, Repository: workspace + "/" + slug},
			Destination:       archive.BranchRecord{Branch: pr.Destination.Branch.Name, Repository: workspace + "/" + slug},
			CloseSourceBranch: pr.CloseSourceBranch, CreatedOn: pr.CreatedOn, UpdatedOn: pr.UpdatedOn}
		if pr.Author != nil {
			rec.Author = &archive.Person{UUID: pr.Author.UUID, AccountID: pr.Author.AccountID, Nickname: pr.Author.Nickname, DisplayName: pr.Author.DisplayName}
		}
		out = append(out, rec)
	}
	return out
}

// bigDescription is about 1 MB of Markdown with multi-byte text, emoji and lines, valid UTF-8.
func bigDescription() string {
	var b strings.Builder
	line := "Grüße aus Zürich — naïve café, 日本語のテキスト, emoji 👋🏽✓, Ελληνικά, עברית, and **bold** text. "
	for b.Len() < 1_000_000-len(line) {
		b.WriteString(line)
		if b.Len()%(len(line)*4) == 0 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func TestRecreateOpenPullRequestsIntoANewRepository(t *testing.T) {
	w := startEmulator(t)
	ctx := context.Background()
	restoreToken := w.token(t, "alice", "account", "repository:admin", "repository:write", "pullrequest:write")
	restorer := &bitbucket.Writer{Client: w.client(restoreToken)}
	prs := records(t, restorer.Client, "acme", "api")
	if len(prs) != 8 {
		t.Fatalf("%d pull requests in the source, want 8", len(prs))
	}
	// Listed newest first, as Bitbucket does: the restore has to order them itself.
	if prs[0].ID < prs[len(prs)-1].ID {
		t.Fatalf("records are not newest first: %d .. %d", prs[0].ID, prs[len(prs)-1].ID)
	}
	open := map[int64]*archive.PullRequestRecord{}
	for i := range prs {
		if prs[i].State == "OPEN" {
			open[prs[i].ID] = &prs[i]
		}
	}
	if len(open) != 4 {
		t.Fatalf("%d open pull requests, want 4", len(open))
	}
	var ids []int64
	for id := range open {
		ids = append(ids, id)
	}
	first, second, missing, fourth := open[1], open[3], open[5], open[7]
	if first == nil || second == nil || missing == nil || fourth == nil {
		t.Fatalf("open pull requests = %v, want 1, 3, 5 and 7", ids)
	}
	first.Author = nil // the original author's account was deleted
	second.Description = bigDescription()
	second.Draft, second.CloseSourceBranch = true, true
	fourth.Description = ""

	// The restored repository: main and the open pull requests' branches except #5's.
	if _, err := restorer.CreateRepository(ctx, "acme", "restored", bitbucket.CreateRepositoryRequest{IsPrivate: true}); err != nil {
		t.Fatal(err)
	}
	mirror := t.TempDir()
	git(t, mirror, "clone", "-q", "--mirror", w.gitURL(restoreToken, "acme/api"), ".")
	push := []string{"push", "-q", w.gitURL(restoreToken, "acme/restored"), "refs/heads/main:refs/heads/main"}
	for _, pr := range []*archive.PullRequestRecord{first, second, fourth} {
		push = append(push, "refs/heads/"+pr.Source.Branch+":refs/heads/"+pr.Source.Branch)
	}
	git(t, mirror, push...)
	branches, err := restorer.ListBranches(ctx, "acme", "restored")
	if err != nil || len(branches) != 4 {
		t.Fatalf("restored branches = %v, %v", branches, err)
	}
	have := map[string]bool{}
	for _, b := range branches {
		have[b.Name] = true
	}

	archiveURL := func(id int64) string { return fmt.Sprintf("https://gitsec.example/snapshots/s1/pull-requests/%d", id) }
	rep := prrestore.RecreateOpenPullRequests(ctx, restorer, prrestore.Target{Workspace: "acme", Slug: "restored"}, prs,
		prrestore.Options{ArchiveURL: archiveURL, BranchExists: func(name string) bool { return have[name] }})
	if rep.Restored != 3 || rep.Failed != 1 || rep.Skipped != 4 || len(rep.Results) != 4 {
		t.Fatalf("report = %+v", rep)
	}
	if len(rep.NeverRestorable) == 0 || !strings.Contains(strings.Join(rep.NeverRestorable, "\n"), "comments") {
		t.Errorf("never restorable = %v", rep.NeverRestorable)
	}
	var lastNew int64
	for i, res := range rep.Results {
		if i > 0 && res.OriginalID < rep.Results[i-1].OriginalID {
			t.Errorf("results out of original order: %+v", rep.Results)
		}
		if res.OriginalID == missing.ID {
			if res.Restored || res.Reason != prrestore.ReasonSourceBranchMissing || !strings.Contains(res.Detail, missing.Source.Branch) {
				t.Errorf("PR #%d with its branch missing: %+v", res.OriginalID, res)
			}
			continue
		}
		if !res.Restored || res.NewID == 0 || res.Reason != "" || !strings.Contains(res.URL, "/acme/restored/pull-requests/") {
			t.Errorf("PR #%d: %+v", res.OriginalID, res)
			continue
		}
		if res.NewID <= lastNew {
			t.Errorf("new ids do not keep the original order: %+v", rep.Results)
		}
		lastNew = res.NewID
		orig := open[res.OriginalID]
		got, err := restorer.GetPullRequest(ctx, "acme", "restored", res.NewID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Title != orig.Title || got.State != "OPEN" || got.Source.Branch.Name != orig.Source.Branch ||
			got.Destination.Branch.Name != orig.Destination.Branch || got.Draft != orig.Draft || got.CloseSourceBranch != orig.CloseSourceBranch {
			t.Errorf("PR #%d re-created as %+v", orig.ID, got)
		}
		author := `\(deleted user\)`
		if orig.Author != nil {
			author = orig.Author.DisplayName
		}
		header := fmt.Sprintf("_Restored by GitSec._ Originally pull request #%d, opened by **%s** on %s.",
			orig.ID, author, orig.CreatedOn.UTC().Format("2006-01-02 15:04 UTC"))
		if !strings.HasPrefix(got.Description, header+"\nArchived copy with its comments, reviews, tasks and activity: <"+archiveURL(orig.ID)+">") {
			t.Errorf("PR #%d description starts %q, want %q", orig.ID, prefix(got.Description, 300), header)
		}
		if orig.Description == "" {
			if strings.Contains(got.Description, "---") {
				t.Errorf("PR #%d without a description got a separator: %q", orig.ID, got.Description)
			}
		} else if !strings.HasSuffix(got.Description, "\n\n---\n\n"+orig.Description) {
			t.Errorf("PR #%d description does not end with the original (%d bytes, got %d)", orig.ID, len(orig.Description), len(got.Description))
		}
		if !utf8.ValidString(got.Description) {
			t.Errorf("PR #%d description is not valid UTF-8", orig.ID)
		}
	}
	if got, _ := restorer.GetPullRequest(ctx, "acme", "restored", rep.Results[1].NewID); len(got.Description) < 1_000_000 {
		t.Errorf("the 1 MB description came back with %d bytes", len(got.Description))
	}

	// Without BranchExists, Bitbucket itself refuses the missing branch: an API error.
	rep = prrestore.RecreateOpenPullRequests(ctx, restorer, prrestore.Target{Workspace: "acme", Slug: "restored"},
		[]archive.PullRequestRecord{*missing}, prrestore.Options{})
	if rep.Restored != 0 || rep.Failed != 1 || rep.Results[0].Reason != prrestore.ReasonAPIError ||
		!strings.Contains(rep.Results[0].Detail, "400") || !strings.Contains(rep.Results[0].Detail, missing.Source.Branch) {
		t.Errorf("missing branch without a check: %+v", rep.Results)
	}
	// Destination missing: a pull request into a branch the target lacks.
	intoRelease := *fourth
	intoRelease.Destination.Branch = "release/9"
	rep = prrestore.RecreateOpenPullRequests(ctx, restorer, prrestore.Target{Workspace: "acme", Slug: "restored"},
		[]archive.PullRequestRecord{intoRelease}, prrestore.Options{BranchExists: func(name string) bool { return have[name] }})
	if r := rep.Results[0]; r.Restored || r.Reason != prrestore.ReasonDestinationBranchMissing || !strings.Contains(r.Detail, "release/9") {
		t.Errorf("missing destination: %+v", r)
	}
	// A grant with only the backup app's scopes cannot open pull requests: reported, not fatal.
	reader := &bitbucket.Writer{Client: w.client(w.token(t, "alice", "account", "repository", "pullrequest"))}
	rep = prrestore.RecreateOpenPullRequests(ctx, reader, prrestore.Target{Workspace: "acme", Slug: "restored"},
		[]archive.PullRequestRecord{*fourth}, prrestore.Options{})
	if r := rep.Results[0]; r.Restored || r.Reason != prrestore.ReasonAPIError || !strings.Contains(r.Detail, "403") {
		t.Errorf("restore with read-only scopes: %+v", r)
	}
}

func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

type fakeCreator struct {
	calls []bitbucket.CreatePullRequestRequest
	fail  map[string]error
	cut   context.CancelFunc
}

func (f *fakeCreator) CreatePullRequest(_ context.Context, _, _ string, req bitbucket.CreatePullRequestRequest) (*bitbucket.PullRequest, error) {
	f.calls = append(f.calls, req)
	if f.cut != nil && len(f.calls) == 2 {
		f.cut()
		return nil, context.Canceled
	}
	if err := f.fail[req.SourceBranch]; err != nil {
		return nil, err
	}
	if req.SourceBranch == "nil-answer" {
		return nil, nil
	}
	pr := &bitbucket.PullRequest{ID: int64(100 + len(f.calls))}
	return pr, nil
}

func openPR(id int64, branch string) archive.PullRequestRecord {
	return archive.PullRequestRecord{ID: id, Title: fmt.Sprintf("PR %d", id), State: "OPEN",
		Source: archive.BranchRecord{Branch: branch}, Destination: archive.BranchRecord{Branch: "main"},
		CreatedOn: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func TestRecreateReportsEveryOutcome(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeCreator{fail: map[string]error{"boom": errors.New("bitbucket POST: 500 Internal Server Error")}}
	prs := []archive.PullRequestRecord{openPR(3, "boom"), openPR(1, "ok"), openPR(2, "nil-answer"), openPR(4, ""),
		{ID: 9, State: "MERGED"}, {ID: 10, State: "DECLINED"}}
	rep := prrestore.RecreateOpenPullRequests(ctx, f, prrestore.Target{Workspace: "w", Slug: "s"}, prs, prrestore.Options{})
	want := []struct {
		id       int64
		restored bool
		reason   string
	}{{1, true, ""}, {2, false, prrestore.ReasonAPIError}, {3, false, prrestore.ReasonAPIError}, {4, false, prrestore.ReasonSourceBranchMissing}}
	if len(rep.Results) != len(want) || rep.Skipped != 2 || rep.Restored != 1 || rep.Failed != 3 {
		t.Fatalf("report = %+v", rep)
	}
	for i, w := range want {
		if r := rep.Results[i]; r.OriginalID != w.id || r.Restored != w.restored || r.Reason != w.reason {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
	}
	if !strings.Contains(rep.Results[2].Detail, "500") || len(f.calls) != 3 {
		t.Errorf("API error detail %q after %d calls", rep.Results[2].Detail, len(f.calls))
	}

	// A cancelled restore marks the rest canceled without calling Bitbucket.
	ctx2, cancel2 := context.WithCancel(context.Background())
	f2 := &fakeCreator{cut: cancel2}
	rep = prrestore.RecreateOpenPullRequests(ctx2, f2, prrestore.Target{}, []archive.PullRequestRecord{openPR(1, "a"), openPR(2, "b"), openPR(3, "c")}, prrestore.Options{})
	if len(f2.calls) != 2 || !rep.Results[0].Restored || rep.Results[1].Reason != prrestore.ReasonCanceled || rep.Results[2].Reason != prrestore.ReasonCanceled {
		t.Errorf("cancelled restore: %d calls, %+v", len(f2.calls), rep.Results)
	}
}

func TestDescriptionHeader(t *testing.T) {
	pr := openPR(42, "topic")
	pr.Author = &archive.Person{DisplayName: "Mallory [click](https://evil.example) ![x](y) <b>*_`#|~\nnext"}
	pr.Description = "Original **text**\n\nwith lines"
	got := prrestore.Description(&pr, nil)
	wantHead := "_Restored by GitSec._ Originally pull request #42, opened by **Mallory \\[click\\]\\(https://evil.example\\) \\!\\[x\\]\\(y\\) \\<b\\>\\*\\_\\`\\#\\|\\~ next** on 2026-03-04 05:06 UTC." +
		"\nIts comments, reviews, tasks and activity are kept in the GitSec archive."
	if got != wantHead+"\n\n---\n\n"+pr.Description {
		t.Errorf("description =\n%q\nwant\n%q", got, wantHead+"\n\n---\n\n"+pr.Description)
	}
	pr.Author = nil
	pr.CreatedOn = time.Time{}
	got = prrestore.Description(&pr, func(int64) string { return "https://g.example/a b<c>" })
	if !strings.HasPrefix(got, "_Restored by GitSec._ Originally pull request #42, opened by **\\(deleted user\\)** on an unknown date.\n"+
		"Archived copy with its comments, reviews, tasks and activity: <https://g.example/a%20b%3Cc%3E>") {
		t.Errorf("description = %q", got)
	}
	if got := prrestore.Description(&pr, func(int64) string { return "" }); !strings.Contains(got, "kept in the GitSec archive") {
		t.Errorf("empty archive link: %q", got)
	}
}
