package api_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/archive/archivetest"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

// shape renders a JSON value's structure: objects as their sorted keys with the shape of each
// value, arrays as the shape of their first element, scalars as their JSON type.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ":" + shape(x[k])
		}
		return "{" + strings.Join(parts, ",") + "}"
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return "[" + shape(x[0]) + "]"
	case string:
		return "s"
	case float64:
		return "n"
	case bool:
		return "b"
	case nil:
		return "null"
	}
	return "?"
}

// Scripts read these responses by field name: the JSON shapes are pinned, so a refactor of the
// response types cannot rename, drop or add a field unnoticed.
func TestResponseShapesArePinned(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tenv := testenv.Temporal(t)
	tc, err := client.NewLazyClient(client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	f.deps.Temporal, f.deps.TaskQueue = tc, tenv.TaskQueue
	f.serve(t)

	instID := f.installationA(t)
	_, me := f.do(t, "GET", "/api/v1/me", f.tokenA, "")
	inst, err := f.store.GetInstallation(ctx, uuid.MustParse(me["tenant"].(map[string]any)["id"].(string)), instID)
	if err != nil {
		t.Fatal(err)
	}
	wsID, err := f.store.UpsertWorkspace(ctx, store.Workspace{TenantID: inst.TenantID, InstallationID: instID, ProviderUUID: "{ws-1}", Slug: "acme", Name: "Acme", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	repoID, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: inst.TenantID, InstallationID: instID, WorkspaceID: &wsID,
		ProviderUUID: "{repo-1}", FullName: "acme/widgets", MainBranch: "main", SizeBytes: 42})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	snapID := "20260101T120000.000Z-0123abcd"
	if err := f.store.RecordSnapshot(ctx, store.Snapshot{ID: snapID, TenantID: inst.TenantID, RepositoryID: repoID, ManifestKey: "k",
		Trigger: "manual", RefsCount: 1, PacksCount: 1, StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	// A snapshot with exports in storage (recorded without a parent, like the one above, so
	// that the listings keep their shape).
	arch := f.withStorage(t)
	stored := archivetest.Commit(t, arch, archivetest.FirstSnapshot(t, arch, inst.TenantID.String(), archive.Repository{Provider: "bitbucket", UUID: "{repo-1}", FullName: "acme/widgets"}),
		archivetest.Exports{PullRequests: archivetest.SamplePullRequests(), Metadata: archivetest.SampleMetadata()})
	if err := f.store.RecordSnapshot(ctx, store.Snapshot{ID: stored.ID, TenantID: inst.TenantID, RepositoryID: repoID, ManifestKey: "k",
		Trigger: "webhook", RefsCount: 1, PacksCount: 1, StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	exported := "/api/v1/snapshots/" + stored.ID
	if status, body := f.do(t, "PATCH", "/api/v1/repositories/"+repoID.String(), f.tokenA, `{"included":true}`); status != 200 {
		t.Fatalf("patch = %d %v", status, body)
	}

	const (
		repo = "{behind:b,created_at:s,full_name:s,id:s,included:b,installation_id:s,is_private:b,last_backup_at:s,last_backup_error:s,last_backup_status:s," +
			"last_checked_at:s,last_drill:null,last_push_at:null,last_snapshot_at:s,last_snapshot_id:s,main_branch:s,project:{key:s,name:s},size_bytes:n," +
			"snapshot_count:n,status:s,stored_bytes:n,updated_at:s,uuid:s,workspace:s}"
		snap = "{bytes_uploaded:n,duration_ms:n,finished_at:s,id:s,last_drill:null,legal_hold:null,manifest_key:s,packs:n,parent_id:null,pushed_at:null,refs:n,repository_id:s," +
			"started_at:s,total_bytes:n,trigger:s}"
		exportStatus = "{complete:b,reason:s,records:n,states:{DECLINED:n,MERGED:n,OPEN:n,SUPERSEDED:n}}"
		// GET /api/v1/snapshots/{id} adds the pull request export's counts when it has one.
		snapWithExport = "{bytes_uploaded:n,duration_ms:n,finished_at:s,id:s,last_drill:null,legal_hold:null,manifest_key:s,packs:n,parent_id:null," +
			"pull_requests:" + exportStatus + ",pushed_at:null,refs:n,repository_id:s,started_at:s,total_bytes:n,trigger:s}"
		drillStatus = "{duration_ms:n,finished_at:null,id:s,reason:s,snapshot_id:s,started_at:s,status:s,trigger:s}"
		drill       = "{duration_ms:n,finished_at:null,full_name:s,id:s,reason:s,repository_id:s,snapshot_id:s,started_at:s,status:s,steps:[],trigger:s,workflow_id:s}"
		person      = "{account_id:s,display_name:s,name:s,nickname:s,uuid:s}"
		branch      = "{branch:s,commit:s,commit_resolved:b,repository:s}"
		prFields    = "approvals:[" + person + "],author:" + person + ",changes_requested:[" + person + "],comment_count:n,created_on:s," +
			"deleted_upstream:b,destination:" + branch + ",draft:b,id:n,resolved_task_count:n,source:" + branch + ",state:s,task_count:n,title:s,updated_on:s"
		prSummary = "{" + prFields + "}"
		// The first comment of the sample has a reply, which has a reply.
		comment     = "{created_on:s,deleted:b,id:n,inline:null,pending:b,raw:s,replies:%s,resolution:null,updated_on:s,user:" + person + "}"
		pullRequest = "{activity:[{comment_id:n,date:s,destination_commit:s,kind:s,reason:s,source_commit:s,state:s,title:s,user:" + person + "}]," +
			"approvals:[" + person + "],author:" + person + ",changes_requested:[" + person + "],close_source_branch:b,closed_by:null,comment_count:n," +
			"comments:[%s],commits:[{author:s,date:s,hash:s,message:s}],created_on:s,deleted_upstream:b,description:s,destination:" + branch + "," +
			"draft:b,gaps:[],id:n,merge_commit:s,participants:[{approved:b,participated_on:null,role:s,state:s,user:" + person + "}],pinned_ref:s," +
			"reason:s,resolved_task_count:n,reviewers:[" + person + "],source:" + branch + ",state:s,task_count:n," +
			"tasks:[{comment_id:n,created_on:s,creator:" + person + ",id:n,pending:b,raw:s,resolved_by:null,resolved_on:null,state:s,updated_on:s}]," +
			"title:s,updated_on:s,url:s}"
		// The metadata is the backup format's RepositoryMetadata (docs/backup-format.md).
		metadata = "{branch_restrictions:{items:[],status:s},branching_model:{branch_types:[{enabled:b,kind:s,prefix:s}],development:{use_mainbranch:b},status:s}," +
			"default_reviewers:{status:s,users:[{account_id:s,display_name:s,nickname:s,uuid:s}]},description:s,fork_policy:s,format:s,full_name:s," +
			"has_issues:b,has_wiki:b,is_private:b,language:s,main_branch:s,name:s,project:{key:s,name:s},scm:s,slug:s,uuid:s,workspace:{name:s,slug:s}}"
		installation = "{account:{name:s,uuid:s},account_name:s,account_uuid:s,created_at:s,default_included:b,id:s,progress:{}," +
			"provider:s,repositories:{deleted_upstream:n,included:n,total:n},status:s,status_message:s,updated_at:s," +
			"workspaces:[{admin:b,id:s,name:s,slug:s,status:s,updated_at:s,uuid:s,webhook_registered:b}]}"
		// GET /api/v1/installations/{id} adds the webhook health.
		installationDetail = "{account:{name:s,uuid:s},account_name:s,account_uuid:s,created_at:s,default_included:b,id:s,progress:{}," +
			"provider:s,repositories:{deleted_upstream:n,included:n,total:n},restore_app:{connect_url:s,granted:b},status:s,status_message:s,updated_at:s," +
			"webhooks:{deliveries_24h:n,last_delivery_at:null,rejected_24h:{},unprocessed:n}," +
			"workspaces:[{admin:b,id:s,name:s,slug:s,status:s,updated_at:s,uuid:s,webhook_registered:b}]}"
	)
	cases := []struct{ method, path, body, want string }{
		{"GET", "/healthz", "", "{status:s,version:s}"},
		{"GET", "/readyz", "", "{checks:{postgres:{duration_ms:n,status:s}},status:s}"},
		{"GET", "/api/v1/me", "", "{open_alerts:n,tenant:{created_at:s,id:s,name:s}}"},
		{"GET", "/api/v1/installations", "", "{installations:[" + installation + "]}"},
		{"GET", "/api/v1/installations/" + instID.String(), "", "{installation:" + installationDetail + ",progress_source:s}"},
		{"GET", "/api/v1/installations/" + instID.String() + "/webhook-deliveries", "", "{deliveries:[]}"},
		{"GET", "/api/v1/repositories?limit=1", "", "{repositories:[" + repo + "],total:n}"},
		{"GET", "/api/v1/activity?limit=1", "", "{failing:[],failing_total:n,next_cursor:s,recent:[{bytes_uploaded:n,duration_ms:n,finished_at:s," +
			"full_name:s,refs_count:n,repository_id:s,snapshot_id:s,started_at:s,total_bytes:n,trigger:s}]}"},
		{"GET", "/api/v1/repositories/" + repoID.String(), "", "{repository:" + repo + "}"},
		{"GET", "/api/v1/repositories/" + repoID.String() + "/snapshots?limit=1", "", "{next_cursor:s,snapshots:[" + snap + "]}"},
		{"GET", "/api/v1/snapshots/" + snapID, "", "{snapshot:" + snap + "}"},
		{"GET", exported, "", "{snapshot:" + snapWithExport + "}"},
		{"GET", exported + "/pull-requests?limit=1", "", "{export:" + exportStatus + ",next_cursor:s,pull_requests:[" + prSummary + "]}"},
		{"GET", exported + "/pull-requests/1", "", "{export:" + exportStatus + ",pull_request:" +
			fmt.Sprintf(pullRequest, fmt.Sprintf(comment, "["+fmt.Sprintf(comment, "["+fmt.Sprintf(comment, "[]")+"]")+"]")) + "}"},
		{"GET", exported + "/metadata", "", "{metadata:" + metadata + "}"},
		{"GET", "/api/v1/repositories/" + repoID.String() + "/backup-status", "", "{last_backup_at:s,last_backup_status:s,last_snapshot_id:s,repository_id:s,state:s}"},
		{"GET", "/api/v1/audit-events?limit=1", "", "{audit_events:[{action:s,actor:s,created_at:s,details:{full_name:s},id:n,target_id:s,target_type:s}],next_cursor:s}"},
		{"POST", "/api/v1/installations/" + instID.String() + "/repositories:bulk", `{"include":["acme/*"],"default_included":true}`,
			"{changed_to_excluded:n,changed_to_included:n,default_included:b,matched_exclude:n,matched_include:n}"},
		{"POST", "/api/v1/tokens", `{"name":"ci"}`, "{created_at:s,display_prefix:s,id:s,name:s,note:s,token:s}"},
		{"GET", "/api/v1/alerts", "", "{alerts:[]}"},
		// No worker runs here: the drill stays running, which is the shape a client sees first.
		{"POST", "/api/v1/repositories/" + repoID.String() + "/drills", `{"snapshot_id":"` + snapID + `"}`, "{drill_id:s,repository_id:s,snapshot_id:s,status:s,workflow_id:s}"},
		{"GET", "/api/v1/repositories/" + repoID.String() + "/drills", "", "{drills:[" + drill + "]}"},
		{"GET", "/api/v1/repositories/" + repoID.String(), "", "{repository:" + strings.Replace(repo, "last_drill:null", "last_drill:"+drillStatus, 1) + "}"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			status, raw, body := f.send(t, c.method, c.path, f.tokenA, c.body, "")
			if status >= 300 {
				t.Fatalf("%s %s = %d %s", c.method, c.path, status, raw)
			}
			if got := shape(body); got != c.want {
				t.Fatalf("%s %s shape changed:\n got %s\nwant %s\nbody %s", c.method, c.path, got, c.want, raw)
			}
		})
	}

	// A failed backup puts the repository at the top of the activity feed.
	if err := f.store.RecordBackupFailure(ctx, inst.TenantID, repoID, "Bitbucket answered 403", now); err != nil {
		t.Fatal(err)
	}
	const failing = "{error:s,failed_at:s,full_name:s,last_backup_at:s,repository_id:s,workspace:s}"
	if _, raw, body := f.send(t, "GET", "/api/v1/activity?limit=1", f.tokenA, "", ""); !strings.HasPrefix(shape(body), "{failing:["+failing+"],failing_total:n,") {
		t.Fatalf("GET /api/v1/activity shape changed:\n got %s\nwant failing:[%s]\nbody %s", shape(body), failing, raw)
	}
}
