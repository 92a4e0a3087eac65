package bitbucket

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// referenceDir finds shared/reference by walking up from the package directory (the checkout
// lives next to shared/ in /work), or takes GITSEC_REFERENCE_DIR. Missing fixtures fail the
// test: they are the only ground truth for payload shapes.
func referenceDir(tb testing.TB) string {
	tb.Helper()
	if dir := os.Getenv("GITSEC_REFERENCE_DIR"); dir != "" {
		return dir
	}
	start, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getwd: %v", err)
	}
	for dir := start; ; dir = filepath.Dir(dir) {
		candidate := filepath.Join(dir, "shared", "reference")
		if info, err := os.Stat(filepath.Join(candidate, "fixtures")); err == nil && info.IsDir() {
			return candidate
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	// A clone without shared/ beside it uses the copy kept in testdata (TestFixtureCopyInSync
	// keeps the two equal wherever both exist).
	if info, err := os.Stat(filepath.Join(start, "testdata", "reference", "fixtures")); err == nil && info.IsDir() {
		return filepath.Join(start, "testdata", "reference")
	}
	tb.Fatalf("shared/reference/fixtures not found above %s and no testdata copy (set GITSEC_REFERENCE_DIR); the Bitbucket fixture tests cannot run without it", start)
	return ""
}

// TestFixtureCopyInSync checks that testdata/reference/fixtures equals shared/reference/fixtures
// when the latter is present, so the copy never drifts from the recorded ground truth.
func TestFixtureCopyInSync(t *testing.T) {
	ref := referenceDir(t)
	local, _ := filepath.Abs(filepath.Join("testdata", "reference"))
	if abs, _ := filepath.Abs(ref); abs == local {
		t.Log("shared/reference is not beside this checkout; the testdata copy is the reference")
		return
	}
	shared := map[string][]byte{}
	root := filepath.Join(ref, "fixtures")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		shared[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range shared {
		got, err := os.ReadFile(filepath.Join(local, "fixtures", rel))
		if err != nil || string(got) != string(want) {
			t.Errorf("testdata/reference/fixtures/%s differs from shared/reference (copy it again: cp -r ../shared/reference/fixtures internal/bitbucket/testdata/reference/)", rel)
		}
	}
}

func readFixture(tb testing.TB, rel string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(referenceDir(tb), "fixtures", rel))
	if err != nil {
		tb.Fatalf("read fixture %s: %v", rel, err)
	}
	return data
}

// fixtureFiles lists the JSON files under fixtures/<sub>, relative to fixtures/.
func fixtureFiles(tb testing.TB, sub string) []string {
	tb.Helper()
	root := filepath.Join(referenceDir(tb), "fixtures")
	var files []string
	err := filepath.WalkDir(filepath.Join(root, sub), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".json") {
			rel, _ := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("list fixtures in %s: %v", sub, err)
	}
	if len(files) == 0 {
		tb.Fatalf("no fixtures found in %s", filepath.Join(root, sub))
	}
	sort.Strings(files)
	return files
}

var braceUUID = regexp.MustCompile(`^\{[0-9a-f-]*\}$`)

func requireUUID(t *testing.T, what, uuid string) {
	t.Helper()
	if !braceUUID.MatchString(uuid) {
		t.Errorf("%s uuid = %q, want a brace-wrapped UUID", what, uuid)
	}
}

func decodeJSON[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

func decodePage[T any](t *testing.T, data []byte) pageEnvelope[T] {
	t.Helper()
	page := decodeJSON[pageEnvelope[T]](t, data)
	if page.Values == nil {
		t.Fatalf("page has no values field")
	}
	return page
}

func checkRepository(t *testing.T, r Repository, full bool) {
	t.Helper()
	requireUUID(t, "repository", r.UUID)
	if r.FullName == "" || r.Name == "" {
		t.Errorf("repository %q: empty full_name or name", r.UUID)
	}
	if len(r.Raw) == 0 {
		t.Errorf("repository %q: Raw not kept", r.UUID)
	}
	if !full {
		return
	}
	if r.Slug == "" || r.Links.HTML.Href == "" || r.CreatedOn.IsZero() || r.UpdatedOn.IsZero() {
		t.Errorf("repository %q: slug/links.html/created_on/updated_on missing: %+v", r.FullName, r)
	}
	if !strings.HasSuffix(r.FullName, "/"+r.Slug) {
		t.Errorf("repository full_name %q does not end with slug %q", r.FullName, r.Slug)
	}
}

func checkRef(t *testing.T, ref Ref, wantType string) {
	t.Helper()
	if ref.Type != wantType || ref.Name == "" {
		t.Errorf("ref type/name = %q/%q, want type %q and a name", ref.Type, ref.Name, wantType)
	}
	if len(ref.Target.Hash) != 40 {
		t.Errorf("ref %s target hash %q is not a full object id", ref.Name, ref.Target.Hash)
	}
}

func checkPullRequest(t *testing.T, pr PullRequest) {
	t.Helper()
	if pr.ID <= 0 || pr.Title == "" {
		t.Errorf("pull request id/title = %d/%q", pr.ID, pr.Title)
	}
	switch pr.State {
	case PullRequestOpen, PullRequestMerged, PullRequestDeclined, PullRequestSuperseded:
	default:
		t.Errorf("pull request %d state %q", pr.ID, pr.State)
	}
	if pr.Source.Branch.Name == "" || pr.Destination.Branch.Name == "" {
		t.Errorf("pull request %d: source/destination branch missing", pr.ID)
	}
	if pr.Source.Commit == nil || pr.Source.Commit.Hash == "" || pr.Destination.Commit == nil || pr.Destination.Commit.Hash == "" {
		t.Errorf("pull request %d: source/destination commit missing", pr.ID)
	}
	if pr.Author == nil {
		t.Errorf("pull request %d: author missing", pr.ID)
	} else {
		requireUUID(t, "pull request author", pr.Author.UUID)
	}
	if pr.CreatedOn.IsZero() || pr.UpdatedOn.IsZero() {
		t.Errorf("pull request %d: timestamps missing", pr.ID)
	}
	if len(pr.Raw) == 0 {
		t.Errorf("pull request %d: Raw not kept", pr.ID)
	}
}

func checkComment(t *testing.T, c Comment) {
	t.Helper()
	if c.ID <= 0 || c.CreatedOn.IsZero() || c.Content.Markup == "" {
		t.Errorf("comment id/created_on/content = %d/%v/%+v", c.ID, c.CreatedOn, c.Content)
	}
	if c.User == nil {
		t.Errorf("comment %d: user missing", c.ID)
	} else {
		requireUUID(t, "comment user", c.User.UUID)
	}
	if len(c.Raw) == 0 {
		t.Errorf("comment %d: Raw not kept", c.ID)
	}
}

func checkHook(t *testing.T, h Hook) {
	t.Helper()
	requireUUID(t, "hook", h.UUID)
	if h.URL == "" || len(h.Events) == 0 || h.CreatedAt.IsZero() {
		t.Errorf("hook %s: url/events/created_at missing: %+v", h.UUID, h)
	}
	requireUUID(t, "hook subject", h.Subject.UUID)
}

func checkCommit(t *testing.T, c Commit) {
	t.Helper()
	if len(c.Hash) != 40 || c.Date.IsZero() || c.Author.Raw == "" {
		t.Errorf("commit hash/date/author = %q/%v/%q", c.Hash, c.Date, c.Author.Raw)
	}
}

func checkDiffStat(t *testing.T, d DiffStat) {
	t.Helper()
	if d.Status == "" || (d.Old == nil && d.New == nil) {
		t.Errorf("diffstat status/old/new = %q/%v/%v", d.Status, d.Old, d.New)
	}
	// A removed file's "new" side is recorded with an empty path, so only one side needs one.
	hasPath := false
	for _, side := range []*DiffStatFile{d.Old, d.New} {
		if side != nil && side.Path != "" {
			hasPath = true
		}
	}
	if !hasPath {
		t.Errorf("diffstat %s: no side has a path", d.Status)
	}
}

// restFixtureChecks decodes each REST fixture into the type the client uses for it.
var restFixtureChecks = map[string]func(t *testing.T, data []byte){
	"rest/user.json": func(t *testing.T, data []byte) {
		u := decodeJSON[User](t, data)
		requireUUID(t, "user", u.UUID)
		if u.AccountID == "" || u.DisplayName == "" || u.CreatedOn.IsZero() {
			t.Errorf("user = %+v", u)
		}
	},
	"rest/workspace.json": func(t *testing.T, data []byte) {
		w := decodeJSON[Workspace](t, data)
		requireUUID(t, "workspace", w.UUID)
		if w.Slug == "" || w.Name == "" || w.Type != "workspace" {
			t.Errorf("workspace = %+v", w)
		}
	},
	"rest/openapi-examples/user_workspaces_page.json": func(t *testing.T, data []byte) {
		page := decodePage[WorkspaceAccess](t, data)
		if len(page.Values) != 1 {
			t.Fatalf("got %d workspaces", len(page.Values))
		}
		access := page.Values[0]
		if !access.Administrator || access.Type != "workspace_access" || access.Workspace.Slug != "bbworkspace1" {
			t.Errorf("workspace access = %+v", access)
		}
		requireUUID(t, "workspace", access.Workspace.UUID)
	},
	"rest/repository.json":          func(t *testing.T, data []byte) { checkRepository(t, decodeJSON[Repository](t, data), true) },
	"rest/repository_amuniz.json":   func(t *testing.T, data []byte) { checkRepository(t, decodeJSON[Repository](t, data), true) },
	"rest/repository_nfalco79.json": checkNfalcoRepository,
	"rest/repositories_page.json": func(t *testing.T, data []byte) {
		page := decodePage[Repository](t, data)
		if len(page.Values) == 0 || page.Next == "" {
			t.Fatalf("repositories page: %d values, next %q", len(page.Values), page.Next)
		}
		for _, r := range page.Values {
			checkRepository(t, r, true)
		}
	},
	"rest/repositories_page_empty.json": func(t *testing.T, data []byte) {
		page := decodePage[Repository](t, data)
		if len(page.Values) != 0 || page.Next != "" || page.Size == nil || *page.Size != 0 {
			t.Errorf("empty page = %+v", page)
		}
	},
	"rest/branch.json":        func(t *testing.T, data []byte) { checkRef(t, decodeJSON[Branch](t, data), "branch") },
	"rest/tag.json":           checkTagFixture,
	"rest/branches_page.json": func(t *testing.T, data []byte) { checkRefPage(t, data, "branch") },
	"rest/branches_page_pagelen100.json": func(t *testing.T, data []byte) {
		checkRefPage(t, data, "branch")
	},
	"rest/openapi-examples/branches_page.json": func(t *testing.T, data []byte) {
		page := decodePage[Branch](t, data)
		for _, b := range page.Values {
			if b.Type != "branch" || b.Name == "" || b.Target.Hash == "" {
				t.Errorf("branch = %+v", b)
			}
		}
	},
	"rest/tags_page.json":            func(t *testing.T, data []byte) { checkRefPage(t, data, "tag") },
	"rest/tags_page_pagelen100.json": func(t *testing.T, data []byte) { checkRefPage(t, data, "tag") },
	"rest/pullrequest.json":          func(t *testing.T, data []byte) { checkPullRequest(t, decodeJSON[PullRequest](t, data)) },
	"rest/pullrequest_amuniz_1.json": func(t *testing.T, data []byte) {
		pr := decodeJSON[PullRequest](t, data)
		checkPullRequest(t, pr)
		if pr.Source.Commit.Hash != "bf0e8b7962c0" || pr.Destination.Repository == nil || pr.Destination.Repository.UUID != "{3deb8c29-778a-450c-8f69-3e50a18079df}" {
			t.Errorf("pull request 1 source/destination = %+v / %+v", pr.Source, pr.Destination)
		}
	},
	"rest/pullrequests_page.json": func(t *testing.T, data []byte) { checkPullRequestPage(t, data) },
	"rest/pullrequests_page_5_open.json": func(t *testing.T, data []byte) {
		prs := checkPullRequestPage(t, data)
		if len(prs) != 5 {
			t.Errorf("got %d pull requests, want 5", len(prs))
		}
	},
	"rest/pullrequest_comment.json": func(t *testing.T, data []byte) {
		c := decodeJSON[Comment](t, data)
		checkComment(t, c)
		if c.PullRequest == nil || c.PullRequest.ID != 3 {
			t.Errorf("comment pull request stub = %+v", c.PullRequest)
		}
	},
	"rest/pullrequest_comments_page.json": func(t *testing.T, data []byte) {
		page := decodePage[Comment](t, data)
		if len(page.Values) == 0 {
			t.Fatal("no comments")
		}
		for _, c := range page.Values {
			checkComment(t, c)
		}
	},
	"rest/openapi-examples/pullrequest_activity_update.json":   func(t *testing.T, data []byte) { checkActivityPage(t, data, "update") },
	"rest/openapi-examples/pullrequest_activity_approval.json": func(t *testing.T, data []byte) { checkActivityPage(t, data, "approval") },
	"rest/openapi-examples/pullrequest_activity_comment.json":  func(t *testing.T, data []byte) { checkActivityPage(t, data, "comment") },
	"rest/pullrequest_commits_fields.json": func(t *testing.T, data []byte) {
		page := decodePage[Commit](t, data)
		if len(page.Values) != 1 {
			t.Fatalf("got %d commits", len(page.Values))
		}
		checkCommit(t, page.Values[0])
	},
	"rest/commits_page.json":            func(t *testing.T, data []byte) { checkCommitPage(t, data) },
	"rest/commits_include_exclude.json": func(t *testing.T, data []byte) { checkCommitPage(t, data) },
	"rest/commit.json": func(t *testing.T, data []byte) {
		c := decodeJSON[Commit](t, data)
		checkCommit(t, c)
		if len(c.Parents) == 0 || c.Repository == nil {
			t.Errorf("commit parents/repository missing: %+v", c)
		}
	},
	"rest/diffstat_page.json":             func(t *testing.T, data []byte) { checkDiffStatPage(t, data) },
	"rest/pullrequest_diffstat_page.json": func(t *testing.T, data []byte) { checkDiffStatPage(t, data) },
	"rest/hook.json":                      func(t *testing.T, data []byte) { checkHook(t, decodeJSON[Hook](t, data)) },
	"rest/hook_created.json": func(t *testing.T, data []byte) {
		h := decodeJSON[Hook](t, data)
		checkHook(t, h)
		if !h.SecretSet || h.Subject.Type != "repository" {
			t.Errorf("hook secret_set/subject = %v/%+v", h.SecretSet, h.Subject)
		}
	},
	"rest/hooks_page.json":            func(t *testing.T, data []byte) { checkHookPage(t, data) },
	"rest/hooks_page_pagelen100.json": func(t *testing.T, data []byte) { checkHookPage(t, data) },
	"rest/error_repository_not_found.json": func(t *testing.T, data []byte) {
		err := newAPIError(http.MethodGet, "/2.0/repositories/dev/null", http.StatusNotFound, data)
		if err.Message != "Repository dev/null not found" || err.Detail != "" {
			t.Errorf("error = %+v", err)
		}
	},
}

// restFixturesNotModelled are recorded shapes of endpoints GitSec deliberately never calls.
var restFixturesNotModelled = map[string]string{
	"rest/statuses_page.json":               "build statuses are not backed up",
	"rest/status.json":                      "build statuses are not backed up",
	"rest/repository_permissions_page.json": "GET /2.0/user/permissions/repositories answers 410 (CHANGE-2770)",
	"rest/openapi-examples/user_permissions_workspaces_page.DEPRECATED.json": "GET /2.0/user/permissions/workspaces answers 410 (CHANGE-2770)",
	"rest/openapi-examples/workspaces_page.DEPRECATED.json":                  "GET /2.0/workspaces answers 410 (CHANGE-2770)",
	"rest/openapi-examples/hook_events.json":                                 "hook event catalogue is not needed: GitSec subscribes a fixed list",
	"rest/openapi-examples/hook_events_workspace_page.json":                  "hook event catalogue is not needed: GitSec subscribes a fixed list",
	"rest/openapi-examples/workspace_permissions_page.json":                  "admin status comes from /2.0/user/workspaces",
	"rest/openapi-examples/user_workspace_repository_permissions_page.json":  "repository permissions are not needed for backup",
}

func checkNfalcoRepository(t *testing.T, data []byte) {
	r := decodeJSON[Repository](t, data)
	checkRepository(t, r, true)
	if r.MainBranch == nil || r.MainBranch.Name != "master" || r.Size != 284698 || r.ForkPolicy != "allow_forks" {
		t.Errorf("repository mainbranch/size/fork_policy = %+v/%d/%q", r.MainBranch, r.Size, r.ForkPolicy)
	}
	if r.Project == nil || r.Project.Key != "PUB" || r.Workspace == nil || r.Workspace.Slug != "nfalco79" {
		t.Errorf("repository project/workspace = %+v/%+v", r.Project, r.Workspace)
	}
	if got := r.CloneLink("https"); got != "https://bitbucket.org/nfalco79/test-repos.git" {
		t.Errorf("https clone link = %q, want the caller's user name stripped", got)
	}
	if got := r.CloneLink("ssh"); got != "git@bitbucket.org:nfalco79/test-repos.git" {
		t.Errorf("ssh clone link = %q", got)
	}
}

func checkTagFixture(t *testing.T, data []byte) {
	tag := decodeJSON[Tag](t, data)
	checkRef(t, tag, "tag")
	if tag.Message == "" || tag.Tagger == nil || tag.Date.IsZero() {
		t.Errorf("annotated tag fields missing: %+v", tag)
	}
}

func checkRefPage(t *testing.T, data []byte, wantType string) {
	page := decodePage[Ref](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no refs")
	}
	for _, ref := range page.Values {
		checkRef(t, ref, wantType)
	}
}

func checkPullRequestPage(t *testing.T, data []byte) []PullRequest {
	page := decodePage[PullRequest](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no pull requests")
	}
	for _, pr := range page.Values {
		checkPullRequest(t, pr)
	}
	return page.Values
}

func checkActivityPage(t *testing.T, data []byte, wantKind string) {
	page := decodePage[Activity](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no activity")
	}
	for _, a := range page.Values {
		if a.Kind() != wantKind || a.PullRequest.ID == 0 || len(a.Raw) == 0 {
			t.Errorf("activity kind/pull request = %q/%d, want %q", a.Kind(), a.PullRequest.ID, wantKind)
		}
		switch wantKind {
		case "update":
			if a.Update.State == "" || a.Update.Date.IsZero() {
				t.Errorf("update = %+v", a.Update)
			}
		case "approval":
			if a.Approval.User == nil || a.Approval.Date.IsZero() {
				t.Errorf("approval = %+v", a.Approval)
			}
		case "comment":
			if a.Comment.ID == 0 || a.Comment.Inline == nil || a.Comment.Inline.From == nil {
				t.Errorf("comment = %+v", a.Comment)
			}
		}
	}
}

func checkCommitPage(t *testing.T, data []byte) {
	page := decodePage[Commit](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no commits")
	}
	for _, c := range page.Values {
		checkCommit(t, c)
	}
}

func checkDiffStatPage(t *testing.T, data []byte) {
	page := decodePage[DiffStat](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no diffstat entries")
	}
	for _, d := range page.Values {
		checkDiffStat(t, d)
	}
}

func checkHookPage(t *testing.T, data []byte) {
	page := decodePage[Hook](t, data)
	if len(page.Values) == 0 {
		t.Fatal("no hooks")
	}
	for _, h := range page.Values {
		checkHook(t, h)
	}
}

func TestEveryRESTFixtureDecodes(t *testing.T) {
	for _, rel := range fixtureFiles(t, "rest") {
		check, modelled := restFixtureChecks[rel]
		if !modelled {
			if _, skipped := restFixturesNotModelled[rel]; !skipped {
				t.Errorf("fixture %s is neither decoded nor listed as deliberately unused; add a check", rel)
			}
			continue
		}
		t.Run(rel, func(t *testing.T) { check(t, readFixture(t, rel)) })
	}
	for rel := range restFixtureChecks {
		if _, err := os.Stat(filepath.Join(referenceDir(t), "fixtures", rel)); err != nil {
			t.Errorf("check registered for missing fixture %s: %v", rel, err)
		}
	}
}
