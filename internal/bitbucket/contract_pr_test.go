package bitbucket_test

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
)

// TestContractPullRequestExport walks what a PR exporter reads (lists by state and
// updated_on, full PRs, comments, tasks, activity) and checks the client decodes all of it.
func TestContractPullRequestExport(t *testing.T) {
	comments := 2
	seed := contractSeed()
	seed.Users = append(seed.Users, emulator.SeedUser{Username: "carol"})
	seed.Workspaces[0].Members = append(seed.Workspaces[0].Members, "carol")
	seed.Workspaces[0].Repositories = append(seed.Workspaces[0].Repositories, emulator.SeedRepository{
		Slug: "prs", Generate: &emulator.Generate{Commits: 80, PullRequests: 60, CommentsPerPR: &comments,
			PRStates:          []string{"OPEN", "MERGED", "DECLINED", "SUPERSEDED"},
			RepliesPerComment: 1, InlineCommentsPerPR: 1, TasksPerPR: 2, ApprovalsPerPR: 1,
			ChangesRequestedPerPR: 1, ResolvedCommentsPerPR: 1, DeletedCommentsPerPR: 1}})
	env := startEmulatorSeed(t, seed)
	c, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	ctx := context.Background()

	open, err := c.ListPullRequests(ctx, "acme", "prs", bitbucket.PullRequestQuery{})
	if err != nil {
		t.Fatalf("ListPullRequests: %v", err)
	}
	all, err := c.ListPullRequests(ctx, "acme", "prs", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates, Sort: "-updated_on"})
	if err != nil {
		t.Fatalf("ListPullRequests all: %v", err)
	}
	if len(open) != 15 || len(all) != 60 {
		t.Fatalf("open %d, all %d; want 15 and 60", len(open), len(all))
	}
	byState := map[string]int{}
	for i, pr := range all {
		byState[pr.State]++
		if i > 0 && pr.UpdatedOn.After(all[i-1].UpdatedOn) {
			t.Errorf("sort=-updated_on: PR %d after %d is newer", pr.ID, all[i-1].ID)
		}
		if pr.Source.Commit == nil || len(pr.Source.Commit.Hash) != 12 || len(pr.Destination.Commit.Hash) != 12 {
			t.Errorf("PR %d hashes are not 12-character abbreviations: %+v", pr.ID, pr.Source.Commit)
		}
		if pr.State == bitbucket.PullRequestMerged && (pr.MergeCommit == nil || len(pr.MergeCommit.Hash) != 12) {
			t.Errorf("merged PR %d merge_commit = %+v", pr.ID, pr.MergeCommit)
		}
	}
	for _, st := range bitbucket.AllPullRequestStates {
		if byState[st] != 15 {
			t.Errorf("%s: %d PRs, want 15", st, byState[st])
		}
	}

	// Incremental: updated_on > cutoff, in the documented bare-datetime form.
	sorted := append([]bitbucket.PullRequest(nil), all...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].UpdatedOn.Before(sorted[j].UpdatedOn) })
	cutoff := sorted[44].UpdatedOn
	var newer []int64
	err = c.WalkPullRequests(ctx, "acme", "prs", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates,
		Q: "updated_on > " + cutoff.Format(time.RFC3339Nano), Sort: "updated_on"}, func(pr bitbucket.PullRequest) error {
		newer = append(newer, pr.ID)
		return nil
	})
	if err != nil || len(newer) != 15 {
		t.Fatalf("WalkPullRequests updated_on > %s: %d PRs (%v), want 15", cutoff, len(newer), err)
	}
	for i, pr := range sorted[45:] {
		if newer[i] != pr.ID {
			t.Errorf("incremental walk[%d] = %d, want %d", i, newer[i], pr.ID)
		}
	}

	var sawReply, sawInline, sawResolution, sawDeleted, sawResolvedTask, sawAnchoredTask, sawChanges bool
	for _, listed := range all[:8] {
		pr, err := c.GetPullRequest(ctx, "acme", "prs", listed.ID)
		if err != nil {
			t.Fatalf("GetPullRequest %d: %v", listed.ID, err)
		}
		if len(pr.Participants) != 2 || pr.TaskCount != 1 {
			t.Errorf("PR %d: %d participants, task_count %d; want 2 and 1", pr.ID, len(pr.Participants), pr.TaskCount)
		}
		for _, p := range pr.Participants {
			if p.State == "changes_requested" {
				sawChanges = true
			}
		}
		comments, err := c.ListPullRequestComments(ctx, "acme", "prs", pr.ID)
		if err != nil || len(comments) != 5 {
			t.Fatalf("ListPullRequestComments %d: %d (%v), want 5", pr.ID, len(comments), err)
		}
		for _, cm := range comments {
			sawReply = sawReply || (cm.Parent != nil && cm.Parent.ID != 0)
			sawInline = sawInline || (cm.Inline != nil && cm.Inline.Path != "" && cm.Inline.To != nil)
			sawDeleted = sawDeleted || cm.Deleted
			if cm.Resolution != nil {
				sawResolution = true
				if cm.Resolution.User == nil || cm.Resolution.CreatedOn.IsZero() {
					t.Errorf("resolution without user or date: %s", cm.Raw)
				}
			}
		}
		var tasks []bitbucket.Task
		if err := c.WalkPullRequestTasks(ctx, "acme", "prs", pr.ID, func(task bitbucket.Task) error {
			tasks = append(tasks, task)
			return nil
		}); err != nil || len(tasks) != 2 {
			t.Fatalf("WalkPullRequestTasks %d: %d (%v), want 2", pr.ID, len(tasks), err)
		}
		listed, err := c.ListPullRequestTasks(ctx, "acme", "prs", pr.ID)
		if err != nil || len(listed) != 2 {
			t.Fatalf("ListPullRequestTasks %d: %d (%v)", pr.ID, len(listed), err)
		}
		for _, task := range tasks {
			if task.ID == 0 || task.Content.Raw == "" || task.Creator == nil || task.CreatedOn.IsZero() || len(task.Raw) == 0 {
				t.Errorf("task decoded incompletely: %+v", task)
			}
			switch task.State {
			case bitbucket.TaskResolved:
				sawResolvedTask = task.ResolvedOn != nil && task.ResolvedBy != nil
			case bitbucket.TaskUnresolved:
				if task.ResolvedOn != nil {
					t.Errorf("unresolved task with resolved_on")
				}
			default:
				t.Errorf("task state %q", task.State)
			}
			sawAnchoredTask = sawAnchoredTask || (task.Comment != nil && task.Comment.ID != 0)
		}
		activity, err := c.ListPullRequestActivity(ctx, "acme", "prs", pr.ID)
		if err != nil {
			t.Fatalf("ListPullRequestActivity %d: %v", pr.ID, err)
		}
		kinds := map[string]int{}
		for _, a := range activity {
			kinds[a.Kind()]++
		}
		if kinds[""] != 0 || kinds["approval"] != 1 || kinds["changes_requested"] != 1 || kinds["comment"] != 5 || kinds["update"] == 0 {
			t.Errorf("PR %d activity kinds %v", pr.ID, kinds)
		}
	}
	if !sawReply || !sawInline || !sawResolution || !sawDeleted || !sawResolvedTask || !sawAnchoredTask || !sawChanges {
		t.Errorf("reply %v inline %v resolution %v deleted %v resolved task %v anchored task %v changes requested %v",
			sawReply, sawInline, sawResolution, sawDeleted, sawResolvedTask, sawAnchoredTask, sawChanges)
	}
	if _, err := c.ListPullRequestTasks(ctx, "acme", "prs", 999); !errors.Is(err, bitbucket.ErrNotFound) {
		t.Errorf("tasks of a missing PR: %v, want ErrNotFound", err)
	}
}
