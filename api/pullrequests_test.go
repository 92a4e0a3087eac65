package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/store"
)

// exportFixture is the API with backup storage, tenant A's repository acme/widgets recorded
// with two snapshots in storage and in Postgres: first (taken before exports existed) and
// latest (the sample pull requests and metadata).
type exportFixture struct {
	*fixture
	first, latest *archive.Manifest
}

func newExportFixture(t *testing.T, incomplete string) *exportFixture {
	t.Helper()
	ctx := context.Background()
	f := newFixture(t)
	arch := f.withStorage(t)

	instID := f.installationA(t)
	_, me := f.do(t, "GET", "/api/v1/me", f.tokenA, "")
	tenantID := uuid.MustParse(me["tenant"].(map[string]any)["id"].(string))
	repoID, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: tenantID, InstallationID: instID,
		ProviderUUID: "{0F0E0D0C-1111-4222-8333-444455556666}", FullName: "acme/widgets", MainBranch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	repo := archive.Repository{Provider: "bitbucket", UUID: "{0F0E0D0C-1111-4222-8333-444455556666}", FullName: "acme/widgets"}
	first := archivetest.FirstSnapshot(t, arch, tenantID.String(), repo)
	latest := archivetest.Commit(t, arch, first, archivetest.Exports{
		PullRequests: archivetest.SamplePullRequests(), Metadata: archivetest.SampleMetadata(), Incomplete: incomplete,
	})
	key, _ := archive.NewRepoKey(tenantID.String(), repo.UUID)
	for _, m := range []*archive.Manifest{first, latest} {
		parent := &m.Parent
		if m.Parent == "" {
			parent = nil
		}
		if err := f.store.RecordSnapshot(ctx, store.Snapshot{ID: m.ID, TenantID: tenantID, RepositoryID: repoID, ManifestKey: key.ManifestKey(m.ID),
			Trigger: m.Trigger.Kind, ParentID: parent, StartedAt: m.Created, FinishedAt: m.Created}); err != nil {
			t.Fatal(err)
		}
	}
	return &exportFixture{fixture: f, first: first, latest: latest}
}

// withStorage restarts the API with file:// backup storage and returns it.
func (f *fixture) withStorage(t *testing.T) *archive.Store {
	t.Helper()
	arch, err := archive.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arch.Close() })
	f.deps.Archive = arch
	f.serve(t)
	return arch
}

func ids(t *testing.T, body map[string]any) []int64 {
	t.Helper()
	list, ok := body["pull_requests"].([]any)
	if !ok {
		t.Fatalf("no pull_requests list: %v", body)
	}
	out := []int64{}
	for _, item := range list {
		out = append(out, int64(item.(map[string]any)["id"].(float64)))
	}
	return out
}

func sameIDs(a []int64, b ...int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSnapshotPullRequestRoutes(t *testing.T) {
	f := newExportFixture(t, "")
	base := "/api/v1/snapshots/" + f.latest.ID

	status, body := f.do(t, "GET", base+"/pull-requests", f.tokenA, "")
	if status != 200 || !sameIDs(ids(t, body), 1, 2, 3, 4) || body["next_cursor"] != nil {
		t.Fatalf("list = %d %v", status, body)
	}
	export := body["export"].(map[string]any)
	if export["complete"] != true || export["records"] != 4.0 || export["states"].(map[string]any)["MERGED"] != 1.0 {
		t.Fatalf("export = %v", export)
	}
	first := body["pull_requests"].([]any)[0].(map[string]any)
	if first["comment_count"] != 6.0 || first["task_count"] != 2.0 || first["resolved_task_count"] != 1.0 ||
		first["approvals"].([]any)[0].(map[string]any)["display_name"] != "Bob Builder" || first["comments"] != nil {
		t.Fatalf("summary of #1 = %v", first)
	}
	if third := body["pull_requests"].([]any)[2].(map[string]any); third["author"] != nil {
		t.Fatalf("the deleted author of #3 is %v, want null", third["author"])
	}

	// Paging, filters.
	status, body = f.do(t, "GET", base+"/pull-requests?limit=3", f.tokenA, "")
	if status != 200 || !sameIDs(ids(t, body), 1, 2, 3) || body["next_cursor"] != "3" {
		t.Fatalf("page 1 = %d %v", status, body)
	}
	status, body = f.do(t, "GET", base+"/pull-requests?limit=3&cursor=3", f.tokenA, "")
	if status != 200 || !sameIDs(ids(t, body), 4) || body["next_cursor"] != nil {
		t.Fatalf("page 2 = %d %v", status, body)
	}
	for query, want := range map[string][]int64{
		"state=merged":         {2},
		"state=OPEN":           {1},
		"q=WIDGET%20cache":     {1},
		"q=fast":               {1}, // the description
		"q=cobol&state=OPEN":   {},
		"q=o&limit=1&cursor=1": {3}, // #2 "Fix the build" has no o
	} {
		status, body = f.do(t, "GET", base+"/pull-requests?"+query, f.tokenA, "")
		if status != 200 || !sameIDs(ids(t, body), want...) {
			t.Errorf("?%s = %d %v, want %v", query, status, body, want)
		}
	}

	// One pull request, threaded.
	status, body = f.do(t, "GET", base+"/pull-requests/1", f.tokenA, "")
	if status != 200 {
		t.Fatalf("get #1 = %d %v", status, body)
	}
	pr := body["pull_request"].(map[string]any)
	comments := pr["comments"].([]any)
	if len(comments) != 4 || pr["description"] != "Caches widgets.\n\n* fast\n* small" || pr["description_html"] != nil {
		t.Fatalf("#1 = %v", pr)
	}
	c10 := comments[0].(map[string]any)
	r11 := c10["replies"].([]any)[0].(map[string]any)
	r12 := r11["replies"].([]any)[0].(map[string]any)
	if c10["id"] != 10.0 || r11["id"] != 11.0 || r12["id"] != 12.0 || len(r12["replies"].([]any)) != 0 {
		t.Fatalf("comment 10's thread = %v", c10)
	}
	c13 := comments[1].(map[string]any)
	if c13["inline"].(map[string]any)["path"] != "cache/cache.go" || c13["resolution"] == nil || c13["html"] != nil {
		t.Fatalf("comment 13 = %v", c13)
	}
	if tasks := pr["tasks"].([]any); len(tasks) != 2 || tasks[0].(map[string]any)["comment_id"] != 13.0 {
		t.Fatalf("tasks = %v", pr["tasks"])
	}

	// Metadata.
	status, body = f.do(t, "GET", base+"/metadata", f.tokenA, "")
	if status != 200 || body["metadata"].(map[string]any)["main_branch"] != "main" ||
		body["metadata"].(map[string]any)["branch_restrictions"].(map[string]any)["status"] != "not_permitted" {
		t.Fatalf("metadata = %d %v", status, body)
	}

	// The snapshot itself carries the export's counts; the one before exports does not.
	status, body = f.do(t, "GET", base, f.tokenA, "")
	prs, _ := body["snapshot"].(map[string]any)["pull_requests"].(map[string]any)
	if status != 200 || prs["complete"] != true || prs["states"].(map[string]any)["OPEN"] != 1.0 || prs["records"] != 4.0 {
		t.Fatalf("snapshot = %d %v", status, body)
	}
	status, body = f.do(t, "GET", "/api/v1/snapshots/"+f.first.ID, f.tokenA, "")
	if _, has := body["snapshot"].(map[string]any)["pull_requests"]; status != 200 || has {
		t.Fatalf("snapshot before exports = %d %v", status, body)
	}
}

func TestSnapshotPullRequestErrors(t *testing.T) {
	f := newExportFixture(t, "")
	base := "/api/v1/snapshots/" + f.latest.ID
	cases := []struct {
		token, path string
		status      int
		code, names string
	}{
		{f.tokenA, base + "/pull-requests/42", 404, "not_found", "pull request 42"},
		{f.tokenA, base + "/pull-requests/abc", 404, "not_found", "abc"},
		{f.tokenA, "/api/v1/snapshots/" + f.first.ID + "/pull-requests", 404, "no_export", "before exports existed"},
		{f.tokenA, "/api/v1/snapshots/" + f.first.ID + "/pull-requests/1", 404, "no_export", f.first.ID},
		{f.tokenA, "/api/v1/snapshots/" + f.first.ID + "/metadata", 404, "no_export", "metadata"},
		{f.tokenA, "/api/v1/snapshots/20200101T000000.000Z-00000000/pull-requests", 404, "not_found", "20200101T000000.000Z-00000000"},
		{f.tokenA, base + "/pull-requests?state=CLOSED", 400, "invalid_parameter", `"CLOSED"`},
		{f.tokenA, base + "/pull-requests?limit=0", 400, "invalid_parameter", "limit"},
		{f.tokenA, base + "/pull-requests?limit=201", 400, "invalid_parameter", "limit"},
		{f.tokenA, base + "/pull-requests?cursor=x1", 400, "invalid_parameter", `"x1"`},
		{f.tokenA, base + "/pull-requests?q=" + strings.Repeat("a", 201), 400, "invalid_parameter", "q"},
		// Tenant B sees none of tenant A's snapshots.
		{f.tokenB, base, 404, "not_found", f.latest.ID},
		{f.tokenB, base + "/pull-requests", 404, "not_found", f.latest.ID},
		{f.tokenB, base + "/pull-requests/1", 404, "not_found", f.latest.ID},
		{f.tokenB, base + "/metadata", 404, "not_found", f.latest.ID},
	}
	for _, c := range cases {
		status, body := f.do(t, "GET", c.path, c.token, "")
		if status != c.status || errorCode(t, body) != c.code {
			t.Errorf("%s = %d %v, want %d %s", c.path, status, body, c.status, c.code)
			continue
		}
		if msg := body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, c.names) {
			t.Errorf("%s: message %q does not name %s", c.path, msg, c.names)
		}
	}
}

func TestIncompleteExportIsReported(t *testing.T) {
	f := newExportFixture(t, "Bitbucket rate limit reached")
	status, body := f.do(t, "GET", "/api/v1/snapshots/"+f.latest.ID+"/pull-requests/1", f.tokenA, "")
	export, _ := body["export"].(map[string]any)
	if status != 200 || export["complete"] != false || export["reason"] != "Bitbucket rate limit reached" {
		t.Fatalf("get #1 of an incomplete export = %d %v", status, body)
	}
}

func TestPullRequestRoutesWithoutStorage(t *testing.T) {
	f := newFixture(t)
	status, body := f.do(t, "GET", "/api/v1/snapshots/20200101T000000.000Z-00000000/pull-requests", f.tokenA, "")
	if status != 503 || errorCode(t, body) != "unavailable" {
		t.Fatalf("without storage = %d %v", status, body)
	}
}
