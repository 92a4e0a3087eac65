package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/workflows"
)

func TestRetentionRoutes(t *testing.T) {
	a := newArchiveFixture(t, "file://"+t.TempDir(), 0)
	a.withDrillWorker(t)
	inst := "/api/v1/installations/" + a.instID.String()
	repo := "/api/v1/repositories/" + a.repoID.String()

	// GitSec's default until the installation has its own.
	status, body := a.do(t, "GET", inst+"/retention-policy", a.tokenA, "")
	p, _ := body["policy"].(map[string]any)
	if status != 200 || body["source"] != "default" || p["keep_daily"] != 30.0 || p["keep_monthly"] != 12.0 || p["keep_within"] != "168h0m0s" || p["keep_before_destructive"] != true {
		t.Fatalf("default policy = %d %v", status, body)
	}
	// Bad values are 400s naming the value, and change nothing.
	for body, want := range map[string]string{
		`{"keep_within":"soon"}`:     `"soon"`,
		`{"keep_daily":-1}`:          "keep-daily -1",
		`{"keep_dayly":7}`:           "keep_dayly",
		`{"keep_last":"three"}`:      "keep_last",
		`{"keep_within":"0d"}`:       `"0d"`,
		`{"keep_last":1}{"other":1}`: "more than one JSON value",
	} {
		status, resp := a.do(t, "PUT", inst+"/retention-policy", a.tokenA, body)
		e, _ := resp["error"].(map[string]any)
		if status != 400 || e["code"] == nil || !strings.Contains(e["message"].(string), want) {
			t.Errorf("PUT %s = %d %v, want a 400 naming %s", body, status, resp, want)
		}
	}
	if _, body := a.do(t, "GET", inst+"/retention-policy", a.tokenA, ""); body["source"] != "default" {
		t.Fatalf("a refused policy was stored: %v", body)
	}
	// Another tenant sees neither the installation nor the repository.
	for _, path := range []string{inst + "/retention-policy", repo + "/retention", repo + "/retention-plan"} {
		if status, _ := a.do(t, "GET", path, a.tokenB, ""); status != 404 {
			t.Errorf("GET %s as another tenant = %d, want 404", path, status)
		}
	}

	status, body = a.do(t, "PUT", inst+"/retention-policy", a.tokenA, `{"keep_last":1,"keep_within":"2d"}`)
	if p, _ := body["policy"].(map[string]any); status != 200 || body["source"] != "installation" || p["keep_last"] != 1.0 || p["keep_within"] != "48h0m0s" {
		t.Fatalf("PUT installation policy = %d %v", status, body)
	}
	status, body = a.do(t, "GET", repo+"/retention", a.tokenA, "")
	if status != 200 || body["source"] != "installation" || body["last_run"] != nil {
		t.Fatalf("repository retention = %d %v", status, body)
	}
	status, body = a.do(t, "PUT", repo+"/retention-policy", a.tokenA, `{"keep_last":1}`)
	if status != 200 || body["source"] != "repository" {
		t.Fatalf("PUT repository policy = %d %v", status, body)
	}

	// The dry-run plan: keep-last 1 keeps the latest, and the first because it introduced the
	// pack the latest lists first.
	status, body = a.do(t, "GET", repo+"/retention-plan", a.tokenA, "")
	if status != 200 || len(body["forget"].([]any)) != 0 || len(body["keep"].([]any)) != 2 {
		t.Fatalf("plan = %d %v", status, body)
	}

	// Legal hold: a reason is required; the hold shows on the snapshot and in the plan.
	if status, resp := a.do(t, "PUT", "/api/v1/snapshots/"+a.first.ID+"/legal-hold", a.tokenA, `{"reason":"  "}`); status != 400 {
		t.Fatalf("legal hold without a reason = %d %v", status, resp)
	}
	status, body = a.do(t, "PUT", "/api/v1/snapshots/"+a.first.ID+"/legal-hold", a.tokenA, `{"reason":"case 2026-17"}`)
	hold, _ := body["snapshot"].(map[string]any)["legal_hold"].(map[string]any)
	if status != 200 || hold["reason"] != "case 2026-17" || hold["by"] == "" {
		t.Fatalf("PUT legal hold = %d %v", status, body)
	}
	if status, _ := a.do(t, "PUT", "/api/v1/snapshots/"+a.first.ID+"/legal-hold", a.tokenB, `{"reason":"x"}`); status != 404 {
		t.Fatalf("another tenant's legal hold = %d, want 404", status)
	}
	_, body = a.do(t, "GET", repo+"/retention-plan", a.tokenA, "")
	var reasons []string
	for _, d := range body["decisions"].([]any) {
		d := d.(map[string]any)
		if d["snapshot_id"] == a.first.ID {
			for _, r := range d["reasons"].([]any) {
				reasons = append(reasons, r.(string))
			}
		}
	}
	if !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, "legal hold") && strings.Contains(r, "case 2026-17") }) {
		t.Fatalf("the plan's reasons for the held snapshot = %v", reasons)
	}

	// A manual run through the workflow records its outcome on the repository.
	status, body = a.do(t, "POST", inst+"/retention-runs", a.tokenA, "")
	if status != 202 || body["workflow_id"] != workflows.RetentionManualWorkflowID(a.instID.String()) {
		t.Fatalf("POST retention-runs = %d %v", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res workflows.RetentionResult
	if err := a.deps.Temporal.GetWorkflow(ctx, body["workflow_id"].(string), "").Get(ctx, &res); err != nil || res.Repositories != 1 || res.Refused != 0 {
		t.Fatalf("retention run = %+v, %v", res, err)
	}
	status, body = a.do(t, "GET", repo+"/retention", a.tokenA, "")
	run, _ := body["last_run"].(map[string]any)
	if status != 200 || run["status"] != "applied" || run["kept"] != 2.0 {
		t.Fatalf("repository retention after the run = %d %v", status, body)
	}

	// Release, then inherit again.
	status, body = a.do(t, "DELETE", "/api/v1/snapshots/"+a.first.ID+"/legal-hold", a.tokenA, "")
	if status != 200 || body["snapshot"].(map[string]any)["legal_hold"] != nil {
		t.Fatalf("DELETE legal hold = %d %v", status, body)
	}
	if status, body := a.do(t, "DELETE", repo+"/retention-policy", a.tokenA, ""); status != 200 || body["source"] != "installation" {
		t.Fatalf("DELETE repository policy = %d %v", status, body)
	}
	if status, body := a.do(t, "DELETE", inst+"/retention-policy", a.tokenA, ""); status != 200 || body["source"] != "default" {
		t.Fatalf("DELETE installation policy = %d %v", status, body)
	}
	events, err := a.store.ListAuditEvents(context.Background(), a.tenantID, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, ev := range events {
		actions[ev.Action]++
	}
	if actions["retention_policy.changed"] != 4 || actions["snapshot.legal_hold_set"] != 1 || actions["snapshot.legal_hold_released"] != 1 || actions["retention.run_requested"] != 1 {
		t.Fatalf("audit actions = %v", actions)
	}
}
