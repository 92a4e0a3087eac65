package api_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

// dashboardTenant is one tenant's seeded repositories for the dashboard's reads.
type dashboardTenant struct {
	id, inst, ws uuid.UUID
	repos        map[string]uuid.UUID
}

// seedDashboardTenant records an installation of the token's tenant with the named
// repositories (workspace/slug), in project CORE.
func (f *fixture) seedDashboardTenant(t *testing.T, token, workspace string, names ...string) dashboardTenant {
	t.Helper()
	ctx := context.Background()
	_, me := f.do(t, "GET", "/api/v1/me", token, "")
	d := dashboardTenant{id: uuid.MustParse(me["tenant"].(map[string]any)["id"].(string)), repos: map[string]uuid.UUID{}}
	var err error
	if d.inst, err = f.store.CreateInstallation(ctx, d.id, "bitbucket"); err != nil {
		t.Fatal(err)
	}
	if d.ws, err = f.store.UpsertWorkspace(ctx, store.Workspace{TenantID: d.id, InstallationID: d.inst, ProviderUUID: "{" + workspace + "}", Slug: workspace}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		id, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: d.id, InstallationID: d.inst, WorkspaceID: &d.ws,
			ProviderUUID: "{" + n + "}", FullName: n, ProjectKey: "CORE", ProjectName: "Core <platform>"})
		if err != nil {
			t.Fatal(err)
		}
		d.repos[n] = id
	}
	return d
}

func (f *fixture) snapshotAt(t *testing.T, d dashboardTenant, name, id string, finished time.Time, uploaded int64) {
	t.Helper()
	if err := f.store.RecordSnapshot(context.Background(), store.Snapshot{ID: id, TenantID: d.id, RepositoryID: d.repos[name], ManifestKey: "k",
		Trigger: domain.TriggerSchedule, RefsCount: 3, PacksCount: 1, BytesUploaded: uploaded, TotalBytes: 10 * uploaded,
		StartedAt: finished.Add(-1500 * time.Millisecond), FinishedAt: finished}); err != nil {
		t.Fatal(err)
	}
}

func repositoryNames(body map[string]any) string {
	var names []string
	for _, r := range body["repositories"].([]any) {
		names = append(names, r.(map[string]any)["full_name"].(string))
	}
	return strings.Join(names, ",")
}

// The repository list and detail carry the project, the snapshot count and the stored bytes;
// the list filters by last backup state and says how many repositories match on every page.
func TestRepositoryListForTheDashboard(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.seedDashboardTenant(t, f.tokenA, "acme", "acme/api", "acme/web", "acme/docs", "acme/empty", "acme/infra")
	b := f.seedDashboardTenant(t, f.tokenB, "globex", "globex/api")
	now := time.Now().UTC().Truncate(time.Millisecond)
	f.snapshotAt(t, a, "acme/api", "20260101T000000.000Z-00000001", now.Add(-2*time.Hour), 4000)
	f.snapshotAt(t, a, "acme/api", "20260101T010000.000Z-00000002", now.Add(-time.Hour), 96)
	f.snapshotAt(t, a, "acme/web", "20260101T000000.000Z-00000003", now.Add(-3*time.Hour), 7)
	f.snapshotAt(t, b, "globex/api", "20260101T000000.000Z-00000009", now, 1<<20)
	if err := f.store.RecordBackupFailure(ctx, a.id, a.repos["acme/web"], "Bitbucket answered 403", now); err != nil {
		t.Fatal(err)
	}
	if err := f.store.RecordBackupCheck(ctx, a.id, a.repos["acme/empty"], domain.BackupUnchanged, now); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.SetRepositoryIncluded(ctx, a.id, a.repos["acme/docs"], false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.MarkIncludedPendingBackup(ctx, a.id, a.inst); err != nil {
		t.Fatal(err)
	}

	status, body := f.do(t, "GET", "/api/v1/repositories", f.tokenA, "")
	if status != 200 || body["total"] != float64(5) {
		t.Fatalf("list = %d %v", status, body)
	}
	byName := map[string]map[string]any{}
	for _, r := range body["repositories"].([]any) {
		r := r.(map[string]any)
		byName[r["full_name"].(string)] = r
	}
	api := byName["acme/api"]
	if p, _ := api["project"].(map[string]any); p["key"] != "CORE" || p["name"] != "Core <platform>" {
		t.Fatalf("project = %v", api["project"])
	}
	for name, want := range map[string]string{"acme/api": "2/4096", "acme/web": "1/7", "acme/docs": "0/0", "acme/empty": "0/0"} {
		r := byName[name]
		if got := fmt.Sprintf("%v/%v", r["snapshot_count"], r["stored_bytes"]); got != want {
			t.Errorf("%s snapshot_count/stored_bytes = %s, want %s", name, got, want)
		}
	}
	_, detail := f.do(t, "GET", "/api/v1/repositories/"+a.repos["acme/api"].String(), f.tokenA, "")
	if r := detail["repository"].(map[string]any); r["snapshot_count"] != float64(2) || r["stored_bytes"] != float64(4096) || r["project"].(map[string]any)["key"] != "CORE" {
		t.Fatalf("detail = %v", detail)
	}
	// PATCH answers the same repository, statistics included.
	_, patched := f.do(t, "PATCH", "/api/v1/repositories/"+a.repos["acme/api"].String(), f.tokenA, `{"included":false}`)
	if r := patched["repository"].(map[string]any); r["snapshot_count"] != float64(2) || r["stored_bytes"] != float64(4096) {
		t.Fatalf("patch = %v", patched)
	}
	f.do(t, "PATCH", "/api/v1/repositories/"+a.repos["acme/api"].String(), f.tokenA, `{"included":true}`)

	// status filters over the row's last backup state, alone or comma-separated, with the
	// other filters; total counts the matches.
	for _, c := range []struct{ query, want string }{
		{"status=succeeded", "acme/api,acme/empty"},
		{"status=failed", "acme/web"},
		{"status=queued", "acme/infra"},
		{"status=never", "acme/docs"},
		{"status=never,failed", "acme/docs,acme/web"},
		{"status=succeeded&q=api", "acme/api"},
		{"status=never&included=true", ""},
		{"status=failed&workspace=globex", ""},
		{"status=failed&installation=" + a.inst.String(), "acme/web"},
	} {
		status, body := f.do(t, "GET", "/api/v1/repositories?"+c.query, f.tokenA, "")
		if status != 200 || repositoryNames(body) != c.want || body["total"] != float64(len(body["repositories"].([]any))) {
			t.Errorf("?%s = %d %s (total %v), want %s", c.query, status, repositoryNames(body), body["total"], c.want)
		}
	}
	// The total ignores the cursor.
	var names []string
	cursor := ""
	for {
		_, page := f.do(t, "GET", "/api/v1/repositories?limit=2&cursor="+url.QueryEscape(cursor), f.tokenA, "")
		if page["total"] != float64(5) {
			t.Fatalf("page total = %v", page["total"])
		}
		names = append(names, repositoryNames(page))
		if cursor, _ = page["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if got := strings.Join(names, "|"); got != "acme/api,acme/docs|acme/empty,acme/infra|acme/web" {
		t.Fatalf("pages = %s", got)
	}

	// An unknown status is a 400 naming it and listing the allowed ones; running says where
	// to ask instead.
	for _, c := range []struct{ value, says string }{
		{"broken", `"broken" is not a backup status; use one or more (comma-separated) of never, queued, succeeded, failed`},
		{"failed,pending", `"pending" is not a backup status`},
		{"running", "GET /api/v1/repositories/{id}/backup-status"},
	} {
		status, body := f.do(t, "GET", "/api/v1/repositories?status="+c.value, f.tokenA, "")
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != 400 || errorCode(t, body) != "invalid_parameter" || !strings.Contains(msg, c.says) {
			t.Errorf("status=%s = %d %v, want 400 invalid_parameter saying %q", c.value, status, body, c.says)
		}
	}

	// The other tenant sees its own repository only, with its own numbers.
	_, other := f.do(t, "GET", "/api/v1/repositories?status=succeeded", f.tokenB, "")
	if repositoryNames(other) != "globex/api" || other["total"] != float64(1) ||
		other["repositories"].([]any)[0].(map[string]any)["stored_bytes"] != float64(1<<20) {
		t.Fatalf("tenant B = %v", other)
	}
}

// GET /api/v1/activity: the failing repositories first (newest failure first, only those still
// backed up), then the latest snapshots of every repository, paged newest first; another
// tenant's backups never appear.
func TestActivityFeed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.seedDashboardTenant(t, f.tokenA, "acme", "acme/api", "acme/web", "acme/docs", "acme/old", "acme/gone")
	b := f.seedDashboardTenant(t, f.tokenB, "globex", "globex/api")
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := 0; i < 5; i++ {
		f.snapshotAt(t, a, "acme/api", fmt.Sprintf("20260101T00000%d.000Z-0000000%d", i, i), now.Add(time.Duration(i-10)*time.Minute), int64(i))
	}
	f.snapshotAt(t, a, "acme/web", "20260101T000009.000Z-00000009", now.Add(-30*time.Second), 9)
	f.snapshotAt(t, b, "globex/api", "20260101T000010.000Z-00000010", now, 10)

	fail := func(d dashboardTenant, name, reason string, at time.Time) {
		t.Helper()
		if err := f.store.RecordBackupFailure(ctx, d.id, d.repos[name], reason, at); err != nil {
			t.Fatal(err)
		}
	}
	fail(a, "acme/web", "Bitbucket answered 403 <forbidden>", now.Add(-time.Minute))
	fail(a, "acme/docs", "clone timed out", now)
	fail(a, "acme/old", "excluded since", now)
	fail(a, "acme/gone", "deleted since", now)
	fail(b, "globex/api", "tenant B's failure", now)
	if _, err := f.store.SetRepositoryIncluded(ctx, a.id, a.repos["acme/old"], false); err != nil {
		t.Fatal(err)
	}
	if err := f.store.MarkRepositoryDeletedUpstream(ctx, a.id, a.repos["acme/gone"]); err != nil {
		t.Fatal(err)
	}

	status, body := f.do(t, "GET", "/api/v1/activity?limit=4", f.tokenA, "")
	if status != 200 {
		t.Fatalf("activity = %d %v", status, body)
	}
	failing := body["failing"].([]any)
	if len(failing) != 2 || body["failing_total"] != float64(2) {
		t.Fatalf("failing = %v (total %v), want docs then web", failing, body["failing_total"])
	}
	docs, web := failing[0].(map[string]any), failing[1].(map[string]any)
	if docs["full_name"] != "acme/docs" || docs["error"] != "clone timed out" || docs["last_backup_at"] != nil || docs["workspace"] != "acme" {
		t.Fatalf("first failing = %v", docs)
	}
	if web["full_name"] != "acme/web" || web["error"] != "Bitbucket answered 403 <forbidden>" || web["last_backup_at"] == nil || web["failed_at"] == nil ||
		web["repository_id"] != a.repos["acme/web"].String() {
		t.Fatalf("second failing = %v", web)
	}

	var ids []string
	page := body
	for n := 0; ; n++ {
		for _, r := range page["recent"].([]any) {
			r := r.(map[string]any)
			ids = append(ids, r["snapshot_id"].(string))
			if r["full_name"] == "globex/api" {
				t.Fatalf("tenant A sees tenant B's snapshot %v", r)
			}
			if r["duration_ms"] != float64(1500) || r["refs_count"] != float64(3) || r["trigger"] != "schedule" || r["total_bytes"] != 10*r["bytes_uploaded"].(float64) {
				t.Fatalf("recent entry = %v", r)
			}
		}
		cursor, _ := page["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if n > 3 {
			t.Fatal("the cursor never ends")
		}
		_, page = f.do(t, "GET", "/api/v1/activity?limit=4&cursor="+url.QueryEscape(cursor), f.tokenA, "")
	}
	want := "20260101T000009.000Z-00000009,20260101T000004.000Z-00000004,20260101T000003.000Z-00000003,20260101T000002.000Z-00000002," +
		"20260101T000001.000Z-00000001,20260101T000000.000Z-00000000"
	if got := strings.Join(ids, ","); got != want {
		t.Fatalf("recent, newest first over two pages:\n got %s\nwant %s", got, want)
	}

	_, other := f.do(t, "GET", "/api/v1/activity", f.tokenB, "")
	if fs := other["failing"].([]any); len(fs) != 1 || fs[0].(map[string]any)["error"] != "tenant B's failure" {
		t.Fatalf("tenant B failing = %v", other["failing"])
	}
	if rs := other["recent"].([]any); len(rs) != 1 || rs[0].(map[string]any)["full_name"] != "globex/api" {
		t.Fatalf("tenant B recent = %v", other["recent"])
	}

	for _, q := range []string{"limit=0", "limit=201", "cursor=bm9wZQ", "cursor=%25%25"} {
		if status, body := f.do(t, "GET", "/api/v1/activity?"+q, f.tokenA, ""); status != 400 || errorCode(t, body) != "invalid_parameter" {
			t.Errorf("?%s = %d %v, want 400 invalid_parameter", q, status, body)
		}
	}
	if status, _ := f.do(t, "GET", "/api/v1/activity", "", ""); status != 401 {
		t.Fatalf("without a token = %d", status)
	}
}
