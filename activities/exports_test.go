package activities_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/repoexport"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// reviewSeed is a repository with n pull requests in every state with threaded, inline,
// resolved and deleted comments, tasks, approvals and changes requested.
func reviewSeed(slug string, n int) emulator.SeedRepository {
	comments := 2
	return emulator.SeedRepository{Slug: slug, Generate: &emulator.Generate{
		Commits: 60, PullRequests: n, CommentsPerPR: &comments,
		PRStates:          []string{"OPEN", "MERGED", "DECLINED", "SUPERSEDED"},
		RepliesPerComment: 1, InlineCommentsPerPR: 1, TasksPerPR: 2,
		ApprovalsPerPR: 1, ChangesRequestedPerPR: 1, ResolvedCommentsPerPR: 1, DeletedCommentsPerPR: 1,
	}}
}

func newExportEnv(t *testing.T, settings repoexport.Settings, repos ...emulator.SeedRepository) *backupEnv {
	t.Helper()
	return newBackupEnvWith(t, "file://"+filepath.ToSlash(t.TempDir()), func(a *worker.Activities) {
		a.Exports.Settings = settings
	}, repos...)
}

// upstreamCounts walks the emulator's REST API as a client would and counts, per PR id, its
// comments, tasks and activity entries.
type prCounts struct{ comments, tasks, activity int }

func (e *backupEnv) upstreamCounts(slug string) map[int64]prCounts {
	e.t.Helper()
	out := map[int64]prCounts{}
	var ids []int64
	next := "/2.0/repositories/acme/" + slug + "/pullrequests?pagelen=50&state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED"
	for next != "" {
		var page struct {
			Next   string `json:"next"`
			Values []struct {
				ID int64 `json:"id"`
			} `json:"values"`
		}
		e.emuJSON("GET", next, "", &page)
		for _, v := range page.Values {
			ids = append(ids, v.ID)
		}
		next = relative(page.Next)
	}
	count := func(path string) int {
		n := 0
		for next := path; next != ""; {
			var page struct {
				Next   string            `json:"next"`
				Values []json.RawMessage `json:"values"`
			}
			e.emuJSON("GET", next, "", &page)
			n += len(page.Values)
			next = relative(page.Next)
		}
		return n
	}
	for _, id := range ids {
		base := fmt.Sprintf("/2.0/repositories/acme/%s/pullrequests/%d", slug, id)
		out[id] = prCounts{comments: count(base + "/comments"), tasks: count(base + "/tasks"), activity: count(base + "/activity")}
	}
	return out
}

func relative(next string) string {
	if next == "" {
		return ""
	}
	u, err := url.Parse(next)
	if err != nil {
		return ""
	}
	return u.RequestURI()
}

// commented is the PR the acceptance test comments on.
const commented = 77

// asWriter runs fn with alice's token swapped for one that may write pull requests (the
// backup app's token is read-only, as on Bitbucket).
func (e *backupEnv) asWriter(fn func()) {
	e.t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	e.emuJSON("POST", "/_emulator/tokens", `{"user":"alice","scopes":["account","repository:write","pullrequest:write"]}`, &tok)
	read := e.token
	e.token = tok.AccessToken
	defer func() { e.token = read }()
	fn()
}

// latestManifest is the newest committed manifest of a repository.
func (e *backupEnv) latestManifest(slug string) *archive.Manifest {
	e.t.Helper()
	m, err := e.archive.LoadManifest(context.Background(), e.repoKey(slug), "latest")
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *backupEnv) pullRequests(m *archive.Manifest) (map[int64]archive.PullRequestRecord, *archive.Export) {
	e.t.Helper()
	recs, entry, err := e.archive.LoadPullRequests(context.Background(), m)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int64]archive.PullRequestRecord{}
	for _, r := range recs {
		out[r.ID] = r
	}
	return out, entry
}

// exportObjects lists the stored export objects of every repository (file:// storage).
func exportObjects(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(filepath.ToSlash(p), "/exports/") {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestPullRequestExportFullThenIncremental is the acceptance test of the PR export: the
// first backup exports all 300 PRs with every comment, task and activity entry; after three
// PR updates and one new comment the next backup fetches only those four PRs and the export
// differs only in them; an unchanged repository writes no new export object.
func TestPullRequestExportFullThenIncremental(t *testing.T) {
	root := t.TempDir()
	e := newBackupEnvWith(t, "file://"+filepath.ToSlash(root), nil, reviewSeed("reviews", 300))

	start := time.Now()
	e.backup("reviews")
	firstSeconds := time.Since(start).Seconds()
	first := e.latestManifest("reviews")
	recs, entry := e.pullRequests(first)
	if !entry.Complete || entry.Run == nil || !entry.Run.Full {
		t.Fatalf("first export: %+v run %+v", entry, entry.Run)
	}
	upstream := e.upstreamCounts("reviews")
	if len(recs) != 300 || len(upstream) != 300 {
		t.Fatalf("exported %d PRs, upstream has %d, want 300", len(recs), len(upstream))
	}
	states := map[string]int{}
	var comments, tasks, activity, inline, replies, resolved, deleted int
	for id, want := range upstream {
		r := recs[id]
		if len(r.Comments) != want.comments || len(r.Tasks) != want.tasks || len(r.Activity) != want.activity {
			t.Fatalf("PR %d: exported %d comments, %d tasks, %d activity; upstream %+v", id, len(r.Comments), len(r.Tasks), len(r.Activity), want)
		}
		if !r.Source.CommitResolved || len(r.Source.Commit) != 40 || !r.Destination.CommitResolved || len(r.Destination.Commit) != 40 {
			t.Fatalf("PR %d: hashes not resolved to full ones: source %+v destination %+v", id, r.Source, r.Destination)
		}
		if r.State == "MERGED" && len(r.MergeCommit) != 40 {
			t.Fatalf("PR %d: merge commit %q not resolved", id, r.MergeCommit)
		}
		states[r.State]++
		comments += len(r.Comments)
		tasks += len(r.Tasks)
		activity += len(r.Activity)
		for _, c := range r.Comments {
			switch {
			case c.Inline != nil:
				inline++
			case c.Parent != 0:
				replies++
			}
			if c.Resolution != nil {
				resolved++
			}
			if c.Deleted {
				deleted++
			}
		}
	}
	for _, s := range []string{"OPEN", "MERGED", "DECLINED", "SUPERSEDED"} {
		if states[s] == 0 || entry.States[s] != states[s] {
			t.Fatalf("state %s: %d exported, manifest counts %v", s, states[s], entry.States)
		}
	}
	if inline == 0 || replies == 0 || resolved == 0 || deleted == 0 {
		t.Fatalf("inline %d, replies %d, resolved %d, deleted %d: every kind should be exported", inline, replies, resolved, deleted)
	}
	md, err := e.archive.LoadMetadata(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	if md.FullName != "acme/reviews" || md.MainBranch == "" {
		t.Fatalf("metadata %+v", md)
	}
	t.Logf("first export: %d PRs, %d comments, %d tasks, %d activity entries; %d REST calls, backup %.1f s (export step %d ms), %d bytes stored",
		len(recs), comments, tasks, activity, entry.Run.RESTCalls, firstSeconds, entry.Run.DurationMillis, entry.File.Size)

	// Three PR updates (open PRs: the states cycle from OPEN by id) and one new comment.
	e.asWriter(func() {
		for _, id := range []int64{5, 149, 297} {
			e.emuJSON("PUT", fmt.Sprintf("/2.0/repositories/acme/reviews/pullrequests/%d", id), `{"title":"Retitled by the export test"}`, nil)
		}
		e.emuJSON("POST", fmt.Sprintf("/2.0/repositories/acme/reviews/pullrequests/%d/comments", commented), `{"content":{"raw":"A new comment"}}`, nil)
	})
	touched := map[int64]bool{5: true, 149: true, 297: true, commented: true}

	start = time.Now()
	e.backup("reviews")
	incSeconds := time.Since(start).Seconds()
	second := e.latestManifest("reviews")
	if second.ID == first.ID {
		t.Fatal("a PR-only change made no snapshot")
	}
	if !reflect.DeepEqual(second.Refs, first.Refs) || len(second.Packs) != len(first.Packs) {
		t.Fatal("a PR-only snapshot must keep the code of its parent")
	}
	recs2, entry2 := e.pullRequests(second)
	run := entry2.Run
	if run.Full || run.Fetched != len(touched) || !entry2.Complete {
		t.Fatalf("incremental export: fetched %d (want %d), full %t, complete %t (%s)", run.Fetched, len(touched), run.Full, entry2.Complete, entry2.Reason)
	}
	// One listing page, five calls per fetched PR (PR, comments, tasks, activity, commits) and
	// four for the metadata (repository, restrictions, branching model, default reviewers).
	if want := 1 + 5*len(touched) + 4; run.RESTCalls != want {
		t.Fatalf("incremental export made %d REST calls, want %d", run.RESTCalls, want)
	}
	for id, r := range recs2 {
		same := reflect.DeepEqual(r, recs[id])
		if touched[id] == same {
			t.Fatalf("PR %d: touched %t but changed %t", id, touched[id], !same)
		}
	}
	if recs2[commented].Comments[len(recs2[commented].Comments)-1].Raw != "A new comment" {
		t.Fatalf("the new comment is missing: %+v", recs2[commented].Comments)
	}
	t.Logf("incremental export: %d PRs fetched, %d REST calls, backup %.1f s (export step %d ms), %d bytes stored",
		run.Fetched, run.RESTCalls, incSeconds, run.DurationMillis, entry2.File.Size)

	// Nothing changed: no snapshot and no export object.
	objects := exportObjects(t, root)
	e.backup("reviews")
	if third := e.latestManifest("reviews"); third.ID != second.ID {
		t.Fatalf("an unchanged repository made snapshot %s", third.ID)
	}
	if after := exportObjects(t, root); !reflect.DeepEqual(after, objects) {
		t.Fatalf("an unchanged repository wrote export objects:\nbefore %v\nafter  %v", objects, after)
	}
}

// TestPullRequestExportRateLimited: a 429 storm during the export leaves a committed snapshot
// with the code and an incomplete export that says why; the next run completes it.
func TestPullRequestExportRateLimited(t *testing.T) {
	e := newExportEnv(t, repoexport.Settings{MaxDuration: 20 * time.Second}, reviewSeed("storm", 12))
	e.settings.CatchUpDelay = 3 * time.Second
	fault := e.addFault(emulator.FaultRule{PathRegex: `^/2\.0/repositories/acme/storm/pullrequests/[0-9]+/(comments|activity)$`,
		Kind: "429", RetryAfter: 1, Count: 100000})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id, err := backupqueue.Request(ctx, e.temporal, e.settings, backupqueue.Target(e.repos["storm"]), workflows.BackupRequest{Trigger: domain.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	var m *archive.Manifest
	for m == nil {
		if ctx.Err() != nil {
			t.Fatal("no snapshot during the 429 storm")
		}
		if got, err := e.archive.LoadManifest(ctx, e.repoKey("storm"), "latest"); err == nil {
			m = got
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(m.Refs) == 0 || len(m.Packs) == 0 {
		t.Fatalf("the code is missing from the snapshot taken during the storm: %+v", m)
	}
	_, entry := e.pullRequests(m)
	if entry.Complete || !strings.Contains(entry.Reason, "429") {
		t.Fatalf("export during a 429 storm: complete %t, reason %q", entry.Complete, entry.Reason)
	}
	if e.faultFired(fault) == 0 {
		t.Fatal("the 429 fault never fired")
	}

	// The storm ends; the workflow's own catch-up run completes the export, with no request.
	e.emuJSON("DELETE", "/_emulator/faults", "", nil)
	if err := e.temporal.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	m2 := e.latestManifest("storm")
	recs, entry2 := e.pullRequests(m2)
	if m2.ID == m.ID || !entry2.Complete || len(recs) != 12 || m2.Trigger.Kind != domain.TriggerSchedule {
		t.Fatalf("catch-up run: snapshot %s (was %s, trigger %s), complete %t (%s), %d PRs", m2.ID, m.ID, m2.Trigger.Kind, entry2.Complete, entry2.Reason, len(recs))
	}
	upstream := e.upstreamCounts("storm")
	for id, want := range upstream {
		if r := recs[id]; len(r.Comments) != want.comments || len(r.Activity) != want.activity {
			t.Fatalf("PR %d after catch-up: %d comments, %d activity; upstream %+v", id, len(r.Comments), len(r.Activity), want)
		}
	}
}

// TestPullRequestDeletedBetweenListingAndFetching: a PR that answers 404 when fetched is
// recorded as deleted upstream and the export goes on.
func TestPullRequestDeletedBetweenListingAndFetching(t *testing.T) {
	e := newExportEnv(t, repoexport.Settings{}, reviewSeed("vanish", 6))
	e.addFault(emulator.FaultRule{Method: "GET", Path: "/2.0/repositories/acme/vanish/pullrequests/2", Kind: "4xx", Status: 404, Count: 100000})
	e.backup("vanish")
	recs, entry := e.pullRequests(e.latestManifest("vanish"))
	if !entry.Complete || len(recs) != 6 || entry.Run.Missing != 1 {
		t.Fatalf("complete %t (%s), %d PRs, missing %d", entry.Complete, entry.Reason, len(recs), entry.Run.Missing)
	}
	if !recs[2].DeletedUpstream || recs[1].DeletedUpstream || recs[2].Title == "" {
		t.Fatalf("PR 2 %+v, PR 1 deleted %t", recs[2], recs[1].DeletedUpstream)
	}
}

// TestPullRequestSourcePinnedWhenBranchDeleted: deleting a PR's source branch keeps its source
// commit in the next snapshot's pins (never in its refs), the export names the pin, and
// `restore --pull-request-refs` can write it back.
func TestPullRequestSourcePinnedWhenBranchDeleted(t *testing.T) {
	e := newExportEnv(t, repoexport.Settings{}, reviewSeed("pins", 4))
	e.backup("pins")
	recs, _ := e.pullRequests(e.latestManifest("pins"))
	pr := recs[1]
	if pr.PinnedRef != "" || pr.Source.Branch == "" || !pr.Source.CommitResolved {
		t.Fatalf("PR 1 before the deletion: %+v", pr.Source)
	}
	e.emuJSON("DELETE", "/_emulator/repositories/acme/pins/refs/branches/"+pr.Source.Branch, "", nil)
	e.backup("pins")
	m := e.latestManifest("pins")
	pin := archive.PinRef(1)
	if m.Pins[pin] != pr.Source.Commit {
		t.Fatalf("pins %v, want %s -> %s", m.Pins, pin, pr.Source.Commit)
	}
	if _, ok := m.Refs[pin]; ok {
		t.Fatal("a pin must not be one of the snapshot's refs")
	}
	if _, ok := m.Refs["refs/heads/"+pr.Source.Branch]; ok {
		t.Fatal("the deleted branch is still in the refs")
	}
	recs2, _ := e.pullRequests(m)
	if recs2[1].PinnedRef != pin {
		t.Fatalf("PR 1 record names pin %q, want %q", recs2[1].PinnedRef, pin)
	}
	dir := filepath.Join(t.TempDir(), "restored.git")
	if _, err := e.archive.Restore(context.Background(), e.repoKey("pins"), m.ID, dir, nil); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("git", "-C", dir, "for-each-ref", "refs/gitsec").Output(); len(out) != 0 {
		t.Fatalf("a default restore wrote pins: %s", out)
	}
	if err := archive.WritePins(dir, m); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", dir, "rev-parse", pin).Output()
	if err != nil || strings.TrimSpace(string(out)) != pr.Source.Commit {
		t.Fatalf("rev-parse %s after WritePins: %q %v", pin, out, err)
	}
	if out, err := exec.Command("git", "-C", dir, "fsck", "--strict").CombinedOutput(); err != nil {
		t.Fatalf("fsck: %v\n%s", err, out)
	}
}
