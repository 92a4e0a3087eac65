package repoexport

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
)

// TestConvertKeepsHostileAndMissingData: deleted users (null), missing optional fields, any
// Unicode, markup and 1 MB bodies pass through the conversion unchanged and encode to a line of
// the export that decodes back to the same record.
func TestConvertKeepsHostileAndMissingData(t *testing.T) {
	hostile := "<script>alert(1)</script> [x](javascript:alert(1)) 👩‍💻 مرحبا 漢字 \u202e" + strings.Repeat("é", 500_000)
	var pr bitbucket.PullRequest
	raw := `{"id": 9, "title": "` + strings.ReplaceAll(hostile[:60], `"`, `\"`) + `", "state": "OPEN", "author": null,
		"source": {"branch": {"name": "feature/x"}, "commit": {"hash": "0123456789ab"}},
		"destination": {"branch": {"name": "main"}, "commit": null},
		"created_on": "2026-01-02T03:04:05.123456+00:00", "updated_on": "2026-01-02T03:04:05.123456+00:00"}`
	if err := json.Unmarshal([]byte(raw), &pr); err != nil {
		t.Fatal(err)
	}
	pr.Summary.Raw = hostile
	full := "0123456789abcdef0123456789abcdef01234567"
	res := newResolver(Request{Refs: map[string]string{"refs/heads/feature/x": full}}, nil)
	rec := convertPullRequest(&pr, res)
	rec.Comments = convertComments([]bitbucket.Comment{{ID: 2, User: nil, Content: bitbucket.Rendered{Raw: hostile}, Parent: &bitbucket.CommentParent{ID: 1}},
		{ID: 1, User: &bitbucket.User{}, Deleted: true}})
	rec.Tasks = convertTasks([]bitbucket.Task{{ID: 1, Creator: nil, State: bitbucket.TaskUnresolved}})
	if rec.Author != nil || rec.Comments[0].User != nil || rec.Comments[1].User != nil || rec.Tasks[0].Creator != nil {
		t.Fatalf("a deleted user must stay null: %+v", rec)
	}
	if rec.Source.Commit != full || !rec.Source.CommitResolved || rec.Destination.Commit != "" || rec.Destination.CommitResolved {
		t.Fatalf("source %+v destination %+v", rec.Source, rec.Destination)
	}
	if rec.Comments[0].ID != 1 || rec.Comments[1].Parent != 1 {
		t.Fatalf("comments are not in id order with parents kept: %+v", rec.Comments)
	}
	if !rec.UpdatedOn.Equal(time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)) {
		t.Fatalf("updated_on %v", rec.UpdatedOn)
	}
	data, err := archive.EncodePullRequests([]archive.PullRequestRecord{rec})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Contains(plain, []byte("<script>")) {
		t.Fatal("the export must keep the text as written (readers escape it)")
	}
	var back []archive.PullRequestRecord
	if err := archive.WalkPullRequests(bytes.NewReader(plain), func(r *archive.PullRequestRecord) error {
		back = append(back, *r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].Description != hostile || back[0].Comments[1].Raw != hostile {
		t.Fatal("the record did not survive encoding")
	}
}
