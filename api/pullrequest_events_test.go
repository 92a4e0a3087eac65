package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/emulator"
)

// TestPullRequestCommentWebhookReachesTheSnapshot: a comment on a pull request, with nobody
// pushing, reaches a new snapshot through the webhook within seconds, and the API reads it from
// the snapshot's export, threaded under the comment it answers.
func TestPullRequestCommentWebhookReachesTheSnapshot(t *testing.T) {
	seed := defaultConnectSeed()
	comments := 1
	seed.Workspaces[0].Repositories = append(seed.Workspaces[0].Repositories, emulator.SeedRepository{
		Slug: "reviews", Generate: &emulator.Generate{Commits: 10, PullRequests: 3, CommentsPerPR: &comments},
	})
	e := newConnectEnvWith(t, connectOptions{seed: seed})
	instID, res := e.connect("acme-corp", "alice")
	if res.Status != "active" {
		t.Fatalf("onboarding = %+v", res)
	}
	repo := e.repository("acme-corp", instID, "acme/reviews")
	first := e.waitSnapshotCount("acme-corp", repo, 1)[0]
	_, body := e.call("GET", "/api/v1/snapshots/"+first["id"].(string)+"/pull-requests", "acme-corp", "")
	if prs, _ := body["pull_requests"].([]any); len(prs) != 3 {
		t.Fatalf("first snapshot's pull requests = %v", body)
	}

	// A reply to PR 1's first comment (its id as the archived copy shows it).
	_, body = e.call("GET", "/api/v1/snapshots/"+first["id"].(string)+"/pull-requests/1", "acme-corp", "")
	top := body["pull_request"].(map[string]any)["comments"].([]any)[0].(map[string]any)
	parent := int64(top["id"].(float64))
	req, _ := http.NewRequest("POST", e.emu.URL()+"/2.0/repositories/acme/reviews/pullrequests/1/comments",
		strings.NewReader(fmt.Sprintf(`{"content":{"raw":"Reply through the webhook <script>x</script>"},"parent":{"id":%d}}`, parent)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.emulatorToken("alice", "pullrequest:write"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("comment: %v %v", resp, err)
	}
	resp.Body.Close()
	commented := time.Now()

	snaps := e.waitSnapshotCount("acme-corp", repo, 2)
	second := snaps[0]
	if second["trigger"] != "webhook" || second["refs_count"] != first["refs_count"] {
		t.Fatalf("snapshot after the comment = %v (first %v)", second, first)
	}
	t.Logf("comment-to-snapshot: %.1f s", time.Since(commented).Seconds())
	status, body := e.call("GET", "/api/v1/snapshots/"+second["id"].(string)+"/pull-requests/1", "acme-corp", "")
	if status != 200 {
		t.Fatalf("GET pull request 1 = %d %v", status, body)
	}
	pr := body["pull_request"].(map[string]any)
	var found bool
	for _, c := range pr["comments"].([]any) {
		c := c.(map[string]any)
		if int64(c["id"].(float64)) != parent {
			continue
		}
		for _, r := range c["replies"].([]any) {
			if strings.HasPrefix(r.(map[string]any)["raw"].(string), "Reply through the webhook") {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("the reply is not threaded under comment %d: %v", parent, pr["comments"])
	}
}
