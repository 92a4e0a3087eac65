package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixtures are the real recorded deliveries the bitbucket package keeps a copy of.
const fixtures = "../bitbucket/testdata/reference/fixtures/webhooks"

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

// Every recorded delivery parses into the action GitSec takes for its event.
func TestParseRecordedDeliveries(t *testing.T) {
	cases := []struct {
		file, event string
		kind        Kind
	}{
		{"repo_push.json", "repo:push", KindPush},
		{"repo_push_branch_created.json", "repo:push", KindPush},
		{"repo_push_branch_deleted.json", "repo:push", KindPush},
		{"repo_push_tag_created.json", "repo:push", KindPush},
		{"repo_push_tag_deleted.json", "repo:push", KindPush},
		{"repo_push_multiple_changes.json", "repo:push", KindPush},
		{"repo_push_empty_changes.json", "repo:push", KindPush},
		{"signed/repo_push_signed.json", "repo:push", KindPush},
		{"repo_updated.json", "repo:updated", KindRepositoryUpdated},
		{"repo_fork.json", "repo:fork", KindRecordOnly},
		{"repo_commit_status_created.json", "repo:commit_status_created", KindRecordOnly},
		{"pullrequest_created.json", "pullrequest:created", KindPullRequest},
		{"pullrequest_created_from_fork.json", "pullrequest:created", KindPullRequest},
		{"pullrequest_updated.json", "pullrequest:updated", KindPullRequest},
		{"pullrequest_fulfilled.json", "pullrequest:fulfilled", KindPullRequest},
		{"pullrequest_rejected.json", "pullrequest:rejected", KindPullRequest},
		{"pullrequest_approved.json", "pullrequest:approved", KindPullRequest},
		{"pullrequest_comment_created.json", "pullrequest:comment_created", KindPullRequest},
		{"pullrequest_comment_updated.json", "pullrequest:comment_updated", KindPullRequest},
		{"pullrequest_comment_deleted.json", "pullrequest:comment_deleted", KindPullRequest},
	}
	for _, c := range cases {
		a, err := Parse(c.event, readFixture(t, c.file))
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if a.Kind != c.kind || a.Event != c.event || a.Repository.UUID == "" || !strings.Contains(a.Repository.FullName, "/") {
			t.Errorf("%s: %+v, want kind %s with the repository", c.file, a, c.kind)
		}
		if c.kind == KindPullRequest && a.PullRequestID == 0 {
			t.Errorf("%s: no pull request id", c.file)
		}
	}
}

func TestParsePushRefs(t *testing.T) {
	a, err := Parse("repo:push", readFixture(t, "signed/repo_push_signed.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Refs) != 1 || a.Refs[0].Name != "refs/heads/feature/webhook" || a.Refs[0].Old != "" || len(a.Refs[0].New) != 40 {
		t.Fatalf("refs = %+v", a.Refs)
	}
	if a.Repository.WorkspaceSlug == "" {
		t.Fatalf("repository = %+v, want its workspace", a.Repository)
	}
	deleted, err := Parse("repo:push", readFixture(t, "repo_push_tag_deleted.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r := deleted.Refs[0]; !strings.HasPrefix(r.Name, "refs/tags/") || r.New != "" || r.Old == "" {
		t.Fatalf("deleted tag = %+v", r)
	}

	// A push of many refs keeps a bounded hint and says so.
	var changes []string
	for i := range 30 {
		changes = append(changes, fmt.Sprintf(`{"old":null,"new":{"type":"branch","name":"b%d","target":{"hash":"%040d"}}}`, i, i))
	}
	body := `{"repository":{"uuid":"{r}","full_name":"ws/repo"},"push":{"changes":[` + strings.Join(changes, ",") + `]}}`
	big, err := Parse("repo:push", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(big.Refs) != maxPushedRefs || !big.RefsTruncated || big.Repository.WorkspaceSlug != "ws" {
		t.Fatalf("30-ref push = %d refs, truncated %v, workspace %q", len(big.Refs), big.RefsTruncated, big.Repository.WorkspaceSlug)
	}
}

func TestParseUnknownAndMalformed(t *testing.T) {
	if a, err := Parse("repo:brand_new_event", []byte(`not even json`)); err != nil || a.Kind != KindRecordOnly {
		t.Fatalf("unknown event = %+v, %v; want recorded", a, err)
	}
	for name, body := range map[string]string{
		"not JSON":           `{"push":`,
		"no repository":      `{"push":{"changes":[]}}`,
		"no changes":         `{"repository":{"uuid":"{r}","full_name":"ws/repo"}}`,
		"full name not a/b":  `{"repository":{"uuid":"{r}","full_name":"repo"},"push":{"changes":[]}}`,
		"wrong type of hash": `{"repository":{"uuid":"{r}","full_name":"ws/r"},"push":{"changes":[{"new":{"name":"x","target":{"hash":5}}}]}}`,
	} {
		if _, err := Parse("repo:push", []byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestRenameCarriesBothNames(t *testing.T) {
	a, err := Parse("repo:updated", readFixture(t, "repo_updated.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Changes struct {
			FullName struct{ Old, New string } `json:"full_name"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(readFixture(t, "repo_updated.json"), &raw); err != nil {
		t.Fatal(err)
	}
	want := raw.Changes.FullName
	if want.Old == "" || a.PreviousFullName != want.Old || a.Repository.FullName != want.New {
		t.Fatalf("rename = %+v, want %q -> %q", a, want.Old, want.New)
	}
}

// The payload's project travels with the action (a repo:updated after a move to another
// project names the new one); a payload without one leaves it empty, which keeps the row's.
func TestActionsCarryTheProject(t *testing.T) {
	for _, c := range []struct{ file, event, key, name string }{
		{"signed/repo_push_signed.json", "repo:push", "PUB", "public"},
		{"repo_push_multiple_changes.json", "repo:push", "DUB", "dublin"},
		// Atlassian's documented example names the key but puts the name elsewhere.
		{"repo_updated.json", "repo:updated", "proj", ""},
		{"repo_push.json", "repo:push", "", ""},
	} {
		a, err := Parse(c.event, readFixture(t, c.file))
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if a.Repository.ProjectKey != c.key || a.Repository.ProjectName != c.name {
			t.Errorf("%s: project %q/%q, want %q/%q", c.file, a.Repository.ProjectKey, a.Repository.ProjectName, c.key, c.name)
		}
	}
}
