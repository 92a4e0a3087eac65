package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"golang.org/x/sync/errgroup"

	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/webhooks"
	"github.com/gitsec/gitsec/workflows"
)

// TestRepositoryEventsFollowUpstream: renames, deletions, creations and pushes to repositories
// created since the last sync reach the rows through webhooks alone, without a sync.
func TestRepositoryEventsFollowUpstream(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	web := e.repository("acme-corp", instID, "acme/web")
	e.waitSnapshotCount("acme-corp", web, 1)

	// Rename: same row (UUID, inclusion, snapshots), new name.
	e.emulatorREST("alice", "PUT", "/2.0/repositories/acme/web", `{"name":"web-renamed"}`)
	e.waitFor("the rename to reach the row", time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories/"+web["id"].(string), "acme-corp", "")
		return body["repository"].(map[string]any)["full_name"] == "acme/web-renamed"
	})
	if n := len(e.snapshots("acme-corp", web)); n != 1 {
		t.Fatalf("renamed repository has %d snapshots, want its 1 kept", n)
	}

	// A move to another project (the name unchanged) reaches the row too.
	e.emulatorREST("alice", "PUT", "/2.0/repositories/acme/web-renamed", `{"project":{"key":"WEB"}}`)
	e.waitFor("the project move to reach the row", time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories/"+web["id"].(string), "acme-corp", "")
		p := body["repository"].(map[string]any)["project"].(map[string]any)
		return p["key"] == "WEB" && p["name"] == "Web"
	})

	// Deletion: marked deleted upstream, every backup kept.
	lab := e.repository("acme-corp", instID, "acme-labs/lab-2")
	e.emulatorREST("alice", "DELETE", "/2.0/repositories/acme-labs/lab-2", "")
	e.waitFor("the deletion to reach the row", time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories/"+lab["id"].(string), "acme-corp", "")
		return body["repository"].(map[string]any)["status"] == "deleted_upstream"
	})

	// Creation: the new repository is added by the installation's default rule.
	e.emulatorREST("alice", "POST", "/2.0/repositories/acme/fresh", `{"scm":"git","is_private":true}`)
	e.waitFor("the created repository to be listed", time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&q=acme/fresh", "acme-corp", "")
		return len(body["repositories"].([]any)) == 1
	})
	fresh := e.repository("acme-corp", instID, "acme/fresh")
	if fresh["included"] != true {
		t.Fatalf("created repository = %v, want included by default", fresh)
	}

	// A push to a repository whose repo:created never arrived adds it and backs it up.
	e.addFaults(emulator.FaultRule{Target: "webhook", Kind: "drop", Event: "repo:created", Count: 1})
	e.emulatorREST("alice", "POST", "/2.0/repositories/acme/late", `{"scm":"git"}`)
	e.emulatorPOST("/_emulator/repositories/acme/late/push", `{"commits":2}`)
	e.waitFor("the pushed unknown repository to be listed", time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&q=acme/late", "acme-corp", "")
		return len(body["repositories"].([]any)) == 1
	})
	late := e.repository("acme-corp", instID, "acme/late")
	tip := e.emulatorGET("alice", "/2.0/repositories/acme/late/refs/branches/main")["target"].(map[string]any)["hash"].(string)
	if snap := e.waitSnapshotWithRef("acme-corp", late, "refs/heads/main", tip); snap["trigger"] != "webhook" {
		t.Fatalf("snapshot of the late repository = %v", snap)
	}

	// The audit log says what the webhooks changed.
	_, body := e.call("GET", "/api/v1/audit-events?limit=200", "acme-corp", "")
	actions := map[string]bool{}
	for _, ev := range body["audit_events"].([]any) {
		ev := ev.(map[string]any)
		if ev["actor"] == "system:webhook" {
			actions[ev["action"].(string)] = true
		}
	}
	for _, want := range []string{"repository.renamed", "repository.project_changed", "repository.deleted_upstream", "repository.added"} {
		if !actions[want] {
			t.Errorf("audit log lacks %s from the webhooks: %v", want, actions)
		}
	}
}

// TestOlderPushAfterNewerNeverRollsBack: deliveries can arrive out of order; an older push
// that arrives last still leaves the backup at what the server has.
func TestOlderPushAfterNewerNeverRollsBack(t *testing.T) {
	e := newConnectEnv(t)
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/api")
	e.waitSnapshotCount("acme-corp", repo, 1)
	older := e.gitPush("alice", "acme/api", "main", "one.txt")
	e.waitSnapshotWithRef("acme-corp", repo, "refs/heads/main", older)
	newer := e.gitPush("alice", "acme/api", "main", "two.txt")
	e.waitSnapshotWithRef("acme-corp", repo, "refs/heads/main", newer)
	before := len(e.snapshots("acme-corp", repo))

	// The older push's delivery, arriving late (Bitbucket retried it, say).
	hookUUID, secret := e.hook("acme-corp", instID, "acme")
	late := delivery{instID: instID, event: "repo:push", requestUUID: uuid.NewString(), hookUUID: hookUUID, secret: secret,
		body: pushBody(repo, "main", older)}
	if status, out := e.deliver(late); status != 202 {
		t.Fatalf("late delivery = %d %v", status, out)
	}
	e.waitFor("the late delivery's backup run", time.Minute, func() bool {
		for _, d := range e.storedDeliveries("acme-corp", instID) {
			if d.DeliveryUUID.String() == late.requestUUID {
				return d.ProcessedAt != nil
			}
		}
		return false
	})
	waitWorkflow(t, e, e.backupWorkflowID("acme-corp", repo))
	snaps := e.snapshots("acme-corp", repo)
	if len(snaps) != before {
		t.Fatalf("the late delivery made %d new snapshot(s); the server had not changed", len(snaps)-before)
	}
	if got := e.manifestRefs("acme-corp", repo, snaps[0]["id"].(string))["refs/heads/main"]; got != newer {
		t.Fatalf("latest snapshot has main at %s, want the newer push %s", got, newer)
	}
}

func (e *connectEnv) backupWorkflowID(tenant string, repo map[string]any) string {
	return workflows.BackupWorkflowID(e.backupTarget(tenant, repo))
}

// stageRuns counts the backup runs (StageBackup activities) in the workflow's current run.
func (e *connectEnv) stageRuns(workflowID string) int {
	e.t.Helper()
	it := e.temporal.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	n := 0
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			e.t.Fatal(err)
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.ActivityType.GetName() == workflows.StageBackupActivity {
			n++
		}
	}
	return n
}

// pushedTips are the branch tips the installation's stored push deliveries report, by ref.
func (e *connectEnv) pushedTips(tenant, instID string) map[string]string {
	e.t.Helper()
	tips := map[string]string{}
	rows := e.storedDeliveries(tenant, instID)
	for i := len(rows) - 1; i >= 0; i-- { // oldest first: a later push wins
		var a webhooks.Action
		if err := json.Unmarshal(rows[i].Action, &a); err != nil {
			e.t.Fatal(err)
		}
		for _, r := range a.Refs {
			if r.New != "" {
				tips[r.Name] = r.New
			}
		}
	}
	return tips
}

// waitSnapshotWithTips waits for a snapshot whose ref map holds every tip and returns it.
func (e *connectEnv) waitSnapshotWithTips(tenant string, repo map[string]any, tips map[string]string, limit time.Duration) map[string]any {
	e.t.Helper()
	var found map[string]any
	missing := len(tips)
	e.waitFor(fmt.Sprintf("a snapshot of %s with all %d pushed tips", repo["full_name"], len(tips)), limit, func() bool {
		snaps := e.snapshots(tenant, repo)
		if len(snaps) == 0 {
			return false
		}
		refs := e.manifestRefs(tenant, repo, snaps[0]["id"].(string))
		missing = 0
		for ref, hash := range tips {
			if refs[ref] != hash {
				missing++
			}
		}
		found = snaps[0]
		return missing == 0
	})
	return found
}

// burst pushes one commit to each of n new branches of repo through the emulator, as fast as
// it takes them, and returns the branch names.
func (e *connectEnv) burst(fullName, prefix string, n int) []string {
	e.t.Helper()
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s-%02d", prefix, i)
		e.emulatorPOST("/_emulator/repositories/"+fullName+"/push", `{"branch":"`+name+`","commits":1}`)
		names = append(names, "refs/heads/"+name)
	}
	return names
}

// TestPushBurstCoalesces: 50 pushes to one repository within a few seconds become one or two
// backups with the default coalescing settings, never two at once, and every pushed tip is in
// the last snapshot.
func TestPushBurstCoalesces(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{coalescing: &backupqueue.Settings{QuietPeriod: 5 * time.Second, MaxWait: time.Minute}})
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/api")
	e.waitSnapshotCount("acme-corp", repo, 1)
	wfID := e.backupWorkflowID("acme-corp", repo)
	runsBefore := e.stageRuns(wfID)

	started := time.Now()
	branches := e.burst("acme/api", "burst", 50)
	t.Logf("50 pushes took %.1f s", time.Since(started).Seconds())
	e.waitFor("50 stored push deliveries", time.Minute, func() bool {
		return len(e.pushedTips("acme-corp", instID)) >= 50
	})
	tips := e.pushedTips("acme-corp", instID)
	for _, b := range branches {
		if tips[b] == "" {
			t.Fatalf("no delivery reported %s", b)
		}
	}
	snap := e.waitSnapshotWithTips("acme-corp", repo, tips, 2*time.Minute)
	finished, _ := time.Parse(time.RFC3339Nano, snap["finished_at"].(string))
	// Let a trailing run (if any) finish before counting.
	time.Sleep(7 * time.Second)
	runs := e.stageRuns(wfID) - runsBefore
	t.Logf("50 pushes -> %d backup run(s); every tip in a snapshot %.1f s after the first push", runs, finished.Sub(started).Seconds())
	if runs < 1 || runs > 2 {
		t.Fatalf("50 pushes made %d backup runs, want 1 or 2", runs)
	}
	results := map[string]int{}
	for _, d := range e.storedDeliveries("acme-corp", instID) {
		results[d.Result]++
	}
	t.Logf("delivery results: %v", results)
	if results["backup_requested"] < 1 || results["backup_requested"]+results["coalesced"] != len(e.storedDeliveries("acme-corp", instID)) {
		t.Fatalf("delivery results = %v, want every push requested or covered by a request", results)
	}
	if overlapping(e.snapshots("acme-corp", repo)) {
		t.Fatalf("two backups of the repository ran at once: %v", e.snapshots("acme-corp", repo))
	}
}

// overlapping reports two snapshots (newest first) whose runs overlapped.
func overlapping(snaps []map[string]any) bool {
	for i := 0; i+1 < len(snaps); i++ {
		newer, _ := time.Parse(time.RFC3339Nano, snaps[i]["started_at"].(string))
		older, _ := time.Parse(time.RFC3339Nano, snaps[i+1]["finished_at"].(string))
		if newer.Before(older) {
			return true
		}
	}
	return false
}

// TestTemporalOutageDuringPushBurst: with the API cut off from Temporal for 30 s, a burst of 50
// pushes is stored and acknowledged on first delivery; once Temporal is back the re-driver
// signals the rows and every pushed tip reaches a snapshot.
func TestTemporalOutageDuringPushBurst(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{partitionAPI: true})
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/api")
	e.waitSnapshotCount("acme-corp", repo, 1)

	e.apiTemporal.Cut()
	cut := time.Now()
	e.burst("acme/api", "outage", 50)
	e.waitFor("50 stored push deliveries", time.Minute, func() bool {
		return len(e.pushedTips("acme-corp", instID)) >= 50
	})
	// The emulator logs an attempt once it has the answer.
	var pushes []emulator.Delivery
	e.waitFor("the emulator to log 50 push deliveries", time.Minute, func() bool {
		var delivered struct{ Deliveries []emulator.Delivery }
		e.emulatorAdmin("GET", "/_emulator/deliveries", "", &delivered)
		pushes = pushes[:0]
		for _, d := range delivered.Deliveries {
			if d.Event == "repo:push" && strings.Contains(d.URL, instID) {
				pushes = append(pushes, d)
			}
		}
		return len(pushes) >= 50
	})
	for _, d := range pushes {
		if d.Attempt != 1 || d.Status != 202 {
			t.Fatalf("a delivery during the outage = %+v, want 202 on the first attempt", d)
		}
	}
	if unprocessed := e.unprocessedDeliveries("acme-corp", instID); unprocessed != 50 {
		t.Fatalf("%d deliveries unprocessed during the outage, want all 50 waiting", unprocessed)
	}
	time.Sleep(time.Until(cut.Add(30 * time.Second)))
	e.apiTemporal.Restore()
	restored := time.Now()

	e.waitSnapshotWithTips("acme-corp", repo, e.pushedTips("acme-corp", instID), 2*time.Minute)
	t.Logf("every pushed tip in a snapshot %.1f s after Temporal came back", time.Since(restored).Seconds())
	e.waitFor("the outbox to drain", time.Minute, func() bool { return e.unprocessedDeliveries("acme-corp", instID) == 0 })
}

func (e *connectEnv) unprocessedDeliveries(tenant, instID string) int {
	n := 0
	for _, d := range e.storedDeliveries(tenant, instID) {
		if d.ProcessedAt == nil {
			n++
		}
	}
	return n
}

// TestPostgresOutageAnswers503: without Postgres nothing can be stored, so the receiver answers
// 503 and Bitbucket retries; the retry after Postgres is back is stored and acted on.
func TestPostgresOutageAnswers503(t *testing.T) {
	e := newConnectEnvWith(t, connectOptions{partitionAPI: true})
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/api")
	hookUUID, secret := e.hook("acme-corp", instID, "acme")
	d := delivery{instID: instID, event: "repo:push", requestUUID: uuid.NewString(), hookUUID: hookUUID, secret: secret,
		body: pushBody(repo, "main", strings.Repeat("cd", 20))}

	e.apiPostgres.Cut()
	if status, out := e.deliver(d); status != 503 || errorCode(t, out) != "unavailable" {
		t.Fatalf("delivery without Postgres = %d %v", status, out)
	}
	e.apiPostgres.Restore()
	d.attempt = 2
	// A pooled connection that died in the outage may fail the first request after it with
	// another 503; Bitbucket retries that too, so the retry is repeated for a few seconds.
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, out := e.deliver(d)
		if status == 202 {
			break
		}
		if status != 503 || time.Now().After(deadline) {
			t.Fatalf("Bitbucket's retry = %d %v", status, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.waitFor("the retried delivery to be processed", time.Minute, func() bool {
		for _, row := range e.storedDeliveries("acme-corp", instID) {
			if row.DeliveryUUID.String() == d.requestUUID {
				return row.Attempt == 2 && row.ProcessedAt != nil && row.Result == "backup_requested"
			}
		}
		return false
	})
}

// TestTwoHundredRepositoriesPushedAtOnce: a push to each of 200 repositories at once backs every
// one of them up, bounded by the worker's concurrency, and every pushed tip is in a snapshot.
func TestTwoHundredRepositoriesPushedAtOnce(t *testing.T) {
	const n = 200
	seed := &emulator.Seed{Users: []emulator.SeedUser{{Username: "alice"}}}
	ws := emulator.SeedWorkspace{Slug: "fleet", Admins: []string{"alice"}}
	for i := range n {
		ws.Repositories = append(ws.Repositories, emulator.SeedRepository{Slug: fmt.Sprintf("repo-%03d", i)})
	}
	seed.Workspaces = append(seed.Workspaces, ws)
	e := newConnectEnvWith(t, connectOptions{seed: seed, emulatorDir: fastTempDir(t)})
	// Nothing is backed up at onboarding (the webhook backups are under test): inclusion is
	// turned on after discovery, which starts no backup by itself.
	e.stopWorker()
	instID, wfID := e.startConnect("acme-corp", "alice")
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/repositories:bulk", "acme-corp", `{"default_included":false}`); status != 200 {
		t.Fatalf("default_included=false: %d %v", status, body)
	}
	e.startWorker()
	if res, err := e.waitOnboarding(wfID); err != nil || res.Status != "active" {
		t.Fatalf("onboarding = %+v, %v", res, err)
	}
	if status, body := e.call("POST", "/api/v1/installations/"+instID+"/repositories:bulk", "acme-corp", `{"include":["fleet/*"]}`); status != 200 {
		t.Fatalf("include fleet/*: %d %v", status, body)
	}

	started := time.Now()
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			resp, err := http.Post(e.emu.URL()+fmt.Sprintf("/_emulator/repositories/fleet/repo-%03d/push", i), "application/json", strings.NewReader(`{"commits":1}`))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				return fmt.Errorf("push to repo-%03d: %d", i, resp.StatusCode)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pushes took %.1f s", n, time.Since(started).Seconds())
	e.waitFor(fmt.Sprintf("%d stored push deliveries", n), 2*time.Minute, func() bool {
		return len(e.storedDeliveries("acme-corp", instID)) >= n
	})
	tips := map[string]string{} // repository UUID -> pushed main tip
	for _, d := range e.storedDeliveries("acme-corp", instID) {
		var a webhooks.Action
		if err := json.Unmarshal(d.Action, &a); err != nil {
			t.Fatal(err)
		}
		for _, r := range a.Refs {
			tips[a.Repository.UUID] = r.New
		}
	}
	if len(tips) != n {
		t.Fatalf("deliveries name %d repositories, want %d", len(tips), n)
	}
	e.waitFor(fmt.Sprintf("all %d repositories backed up", n), 8*time.Minute, func() bool {
		_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&limit=500", "acme-corp", "")
		done := 0
		for _, r := range body["repositories"].([]any) {
			if r.(map[string]any)["last_snapshot_id"] != nil {
				done++
			}
		}
		return done == n
	})
	t.Logf("%d repositories backed up %.1f s after the first push", n, time.Since(started).Seconds())
	_, body := e.call("GET", "/api/v1/repositories?installation="+instID+"&limit=500", "acme-corp", "")
	for _, r := range body["repositories"].([]any) {
		r := r.(map[string]any)
		if got := e.manifestRefs("acme-corp", r, r["last_snapshot_id"].(string))["refs/heads/main"]; got != tips[r["uuid"].(string)] {
			t.Fatalf("%s: snapshot has main at %q, pushed %q", r["full_name"], got, tips[r["uuid"].(string)])
		}
		if r["behind"] != false {
			t.Fatalf("%s is behind after its backup: %v", r["full_name"], r)
		}
	}
}
