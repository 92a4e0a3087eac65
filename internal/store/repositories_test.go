package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

// tenantWithInstallation creates a tenant with one installation and workspace.
func tenantWithInstallation(t *testing.T, st *store.Store, name string) (tenantID, instID, wsID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	ten, err := st.CreateTenant(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if instID, err = st.CreateInstallation(ctx, ten.ID, "bitbucket"); err != nil {
		t.Fatal(err)
	}
	if wsID, err = st.UpsertWorkspace(ctx, store.Workspace{TenantID: ten.ID, InstallationID: instID, ProviderUUID: "{ws-" + name + "}", Slug: name}); err != nil {
		t.Fatal(err)
	}
	return ten.ID, instID, wsID
}

// The project is recorded by discovery and follows renames and moves; a caller that was not
// told the project (an abbreviated payload) leaves it alone.
func TestRepositoryProjectFollowsUpstream(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	tenantID, instID, wsID := tenantWithInstallation(t, st, "acme")
	upsert := func(name string, project store.Project) uuid.UUID {
		t.Helper()
		id, _, err := st.UpsertRepository(ctx, store.Repository{TenantID: tenantID, InstallationID: instID, WorkspaceID: &wsID,
			ProviderUUID: "{r-1}", FullName: name, ProjectKey: project.Key, ProjectName: project.Name})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	want := func(step string, id uuid.UUID, name string, project store.Project) {
		t.Helper()
		r, err := st.GetRepository(ctx, tenantID, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.FullName != name || r.ProjectKey != project.Key || r.ProjectName != project.Name {
			t.Fatalf("%s: repository = %s in %q/%q, want %s in %q/%q", step, r.FullName, r.ProjectKey, r.ProjectName, name, project.Key, project.Name)
		}
	}
	core, web := store.Project{Key: "CORE", Name: "Core"}, store.Project{Key: "WEB", Name: "Web"}
	id := upsert("acme/api", core)
	want("discovered", id, "acme/api", core)
	upsert("acme/api", store.Project{})
	want("upserted without a project", id, "acme/api", core)
	upsert("acme/api", web)
	want("re-discovered in another project", id, "acme/api", web)
	if err := st.MoveRepository(ctx, tenantID, id, "acme/api-2", nil, store.Project{}); err != nil {
		t.Fatal(err)
	}
	want("renamed by an action without a project", id, "acme/api-2", web)
	if err := st.MoveRepository(ctx, tenantID, id, "acme/api-2", nil, core); err != nil {
		t.Fatal(err)
	}
	want("moved to another project", id, "acme/api-2", core)
	if err := st.RenameRepository(ctx, tenantID, "{r-1}", "acme/api-3", store.Project{Key: "CORE", Name: "Core platform"}); err != nil {
		t.Fatal(err)
	}
	want("renamed with its project renamed", id, "acme/api-3", store.Project{Key: "CORE", Name: "Core platform"})
	// Atlassian's documented repo:updated names the project's key without its name.
	if err := st.MoveRepository(ctx, tenantID, id, "acme/api-3", nil, store.Project{Key: "CORE"}); err != nil {
		t.Fatal(err)
	}
	want("told the same key without a name", id, "acme/api-3", store.Project{Key: "CORE", Name: "Core platform"})
	if err := st.MoveRepository(ctx, tenantID, id, "acme/api-3", nil, store.Project{Key: "WEB"}); err != nil {
		t.Fatal(err)
	}
	want("told another key without a name", id, "acme/api-3", store.Project{Key: "WEB"})
}

// The list carries each repository's snapshot count and stored bytes (the sum of what its
// snapshots uploaded), the total the filter matches on every page, and filters by last backup
// state; another tenant's rows count for nothing.
func TestListRepositoriesStatsTotalAndStatus(t *testing.T) {
	ctx := context.Background()
	st := openMigrated(t)
	tenantID, instID, wsID := tenantWithInstallation(t, st, "acme")
	otherTenant, otherInst, otherWS := tenantWithInstallation(t, st, "globex")
	repo := func(tenant, inst, ws uuid.UUID, name string) uuid.UUID {
		t.Helper()
		id, _, err := st.UpsertRepository(ctx, store.Repository{TenantID: tenant, InstallationID: inst, WorkspaceID: &ws,
			ProviderUUID: "{" + name + "}", FullName: name})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	snapshot := func(tenant, repoID uuid.UUID, id string, uploaded, total int64) {
		t.Helper()
		now := time.Now().UTC()
		if err := st.RecordSnapshot(ctx, store.Snapshot{ID: id, TenantID: tenant, RepositoryID: repoID, ManifestKey: "k", Trigger: domain.TriggerManual,
			BytesUploaded: uploaded, TotalBytes: total, StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	api := repo(tenantID, instID, wsID, "acme/api")
	web := repo(tenantID, instID, wsID, "acme/web")
	docs := repo(tenantID, instID, wsID, "acme/docs")
	repo(tenantID, instID, wsID, "acme/empty")
	snapshot(tenantID, api, "20260101T000000.000Z-00000001", 1000, 1000)
	snapshot(tenantID, api, "20260101T010000.000Z-00000002", 200, 1200)
	snapshot(tenantID, web, "20260101T000000.000Z-00000003", 70, 70)
	if err := st.RecordBackupFailure(ctx, tenantID, web, "403 from Bitbucket", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.MarkRepositoriesDeletedUpstream(ctx, tenantID, instID, wsID, []string{"{acme/api}", "{acme/web}", "{acme/empty}"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.MarkIncludedPendingBackup(ctx, tenantID, instID); err != nil {
		t.Fatal(err)
	}
	// docs is deleted upstream, so it was not marked pending: it stays "never".
	if r, err := st.GetRepository(ctx, tenantID, docs); err != nil || r.LastBackupStatus != domain.BackupNever {
		t.Fatalf("docs = %+v, %v", r, err)
	}
	other := repo(otherTenant, otherInst, otherWS, "globex/api")
	snapshot(otherTenant, other, "20260101T000000.000Z-00000009", 5, 5)

	list := func(f store.RepositoryFilter) store.RepositoryPage {
		t.Helper()
		page, err := st.ListRepositories(ctx, tenantID, f)
		if err != nil {
			t.Fatal(err)
		}
		return page
	}
	all := list(store.RepositoryFilter{})
	if all.Total != 4 || len(all.Repositories) != 4 {
		t.Fatalf("all: total %d, %d rows, want 4", all.Total, len(all.Repositories))
	}
	got := map[string]string{}
	for _, r := range all.Repositories {
		got[r.FullName] = fmt.Sprintf("%d/%d/%s", r.SnapshotCount, r.StoredBytes, r.LastBackupStatus)
	}
	want := map[string]string{"acme/api": "2/1200/succeeded", "acme/web": "1/70/failed", "acme/docs": "0/0/never", "acme/empty": "0/0/pending_backup"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("count/bytes/status = %v, want %v", got, want)
	}
	if r, err := st.GetRepository(ctx, tenantID, api); err != nil || r.SnapshotCount != 2 || r.StoredBytes != 1200 {
		t.Fatalf("GetRepository = %d snapshots, %d bytes, %v", r.SnapshotCount, r.StoredBytes, err)
	}
	if r, err := st.SetRepositoryIncluded(ctx, tenantID, api, true); err != nil || r.SnapshotCount != 2 || r.StoredBytes != 1200 || r.FullName != "acme/api" {
		t.Fatalf("SetRepositoryIncluded = %+v, %v", r, err)
	}

	// The total ignores the cursor: every page says how many match.
	first := list(store.RepositoryFilter{Limit: 3})
	second := list(store.RepositoryFilter{Limit: 3, Cursor: first.NextCursor})
	if first.Total != 4 || second.Total != 4 || len(first.Repositories) != 3 || len(second.Repositories) != 1 || second.NextCursor != "" {
		t.Fatalf("pages: %d+%d rows, totals %d and %d, next %q", len(first.Repositories), len(second.Repositories), first.Total, second.Total, second.NextCursor)
	}
	for _, c := range []struct {
		statuses []string
		want     string
	}{
		{[]string{domain.BackupFailed}, "acme/web"},
		{[]string{domain.BackupNever}, "acme/docs"},
		{[]string{domain.BackupPending}, "acme/empty"},
		{[]string{domain.BackupSucceeded, domain.BackupUnchanged}, "acme/api"},
		{[]string{domain.BackupNever, domain.BackupFailed}, "acme/docs,acme/web"},
	} {
		page := list(store.RepositoryFilter{BackupStatuses: c.statuses, Query: "acme/"})
		var names []string
		for _, r := range page.Repositories {
			names = append(names, r.FullName)
		}
		if strings.Join(names, ",") != c.want || page.Total != int64(len(names)) {
			t.Errorf("status %v: %v (total %d), want %s", c.statuses, names, page.Total, c.want)
		}
	}
	if page := list(store.RepositoryFilter{Query: "nothing"}); page.Total != 0 || len(page.Repositories) != 0 {
		t.Fatalf("no match: %+v", page)
	}
}

// At dashboard scale (1,200 repositories, 60,000 snapshots) a page of 500 with its statistics
// and total stays one cheap query: the statistics are joined to the page's rows only.
func TestListRepositoriesAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 60,000 snapshots")
	}
	ctx := context.Background()
	st, dbURL := openMigratedURL(t)
	tenantID, instID, _ := tenantWithInstallation(t, st, "acme")
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	const repos, perRepo = 1200, 50
	for _, q := range []string{
		`INSERT INTO repositories (tenant_id, installation_id, provider_uuid, full_name, project_key, project_name)
		 SELECT $1, $2, '{r-' || g || '}', 'acme/repo-' || lpad(g::text, 5, '0'), 'CORE', 'Core' FROM generate_series(1, ` + fmt.Sprint(repos) + `) g`,
		`INSERT INTO snapshots (id, tenant_id, repository_id, manifest_key, trigger, bytes_uploaded, total_bytes, started_at, finished_at)
		 SELECT r.full_name || '-' || g, r.tenant_id, r.id, 'k', 'schedule', 10, 10 * g, now(), now()
		   FROM repositories r, generate_series(1, ` + fmt.Sprint(perRepo) + `) g WHERE r.tenant_id = $1 AND $2::uuid IS NOT NULL`,
	} {
		if _, err := pool.Exec(ctx, q, tenantID, instID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{50, 500} {
		start := time.Now()
		pages, seen := 0, 0
		cursor := ""
		for {
			page, err := st.ListRepositories(ctx, tenantID, store.RepositoryFilter{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if page.Total != repos {
				t.Fatalf("total = %d, want %d", page.Total, repos)
			}
			for _, r := range page.Repositories {
				if r.SnapshotCount != perRepo || r.StoredBytes != 10*perRepo || r.ProjectKey != "CORE" {
					t.Fatalf("%s: %d snapshots, %d bytes, project %q", r.FullName, r.SnapshotCount, r.StoredBytes, r.ProjectKey)
				}
			}
			pages++
			seen += len(page.Repositories)
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		perPage := time.Since(start) / time.Duration(pages)
		t.Logf("limit %d: %d pages, %v per page", limit, pages, perPage)
		if seen != repos {
			t.Fatalf("paged %d repositories, want %d", seen, repos)
		}
		// Generous for a shared 2-core machine under -race (measured: see the log line); it
		// catches a plan gone quadratic, not a few milliseconds.
		if perPage > 500*time.Millisecond {
			t.Errorf("limit %d: %v per page", limit, perPage)
		}
	}
}
