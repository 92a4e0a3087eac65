package bitbucket_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/emulator"
)

// TestContractRepositorySettings reads what a metadata export reads (branch restrictions over
// several pages, the branching model, default reviewers, a commit by its 12-character PR
// hash) and checks the client decodes every field, and that the backup app's scopes get the
// 403 Bitbucket answers without repository:admin.
func TestContractRepositorySettings(t *testing.T) {
	two := 2
	restrictions := []emulator.SeedBranchRestriction{
		{Kind: "push", Pattern: "main", Users: []string{"alice"}, Groups: []string{"release-managers"}},
		{Kind: "require_approvals_to_merge", Pattern: "main", Value: &two},
		{Kind: "force", BranchType: "production"},
	}
	// More than one page of 100.
	for i := range 120 {
		restrictions = append(restrictions, emulator.SeedBranchRestriction{Kind: "delete", Pattern: fmt.Sprintf("release/%03d", i)})
	}
	seed := contractSeed()
	seed.Workspaces[0].Repositories = append(seed.Workspaces[0].Repositories, emulator.SeedRepository{
		Slug: "settings", Generate: &emulator.Generate{Commits: 5, PullRequests: 1},
		RepositorySettings: emulator.RepositorySettings{
			BranchRestrictions: restrictions,
			DefaultReviewers:   []string{"bob", "alice"},
			BranchingModel: &emulator.SeedBranchingModel{
				Development: &emulator.SeedModelBranch{Name: "develop"},
				Production:  &emulator.SeedModelBranch{UseMainbranch: true, Enabled: true},
				BranchTypes: []emulator.SeedBranchType{{Kind: "feature", Prefix: "feat/", Enabled: true}, {Kind: "hotfix", Prefix: "hotfix/"}},
			},
		}})
	env := startEmulatorSeed(t, seed)
	ctx := context.Background()
	admin, _ := env.client(t, env.issueToken(t, "alice", "account", "repository:admin", "pullrequest"), &tokenStore{})

	brs, err := admin.ListBranchRestrictions(ctx, "acme", "settings")
	if err != nil {
		t.Fatalf("ListBranchRestrictions: %v", err)
	}
	if len(brs) != 123 {
		t.Fatalf("%d restrictions, want 123 (more than one page)", len(brs))
	}
	ids := map[int64]bool{}
	for _, br := range brs {
		ids[br.ID] = true
		if br.Type != "branchrestriction" || br.ID == 0 || br.Kind == "" || br.BranchMatchKind == "" ||
			!strings.HasSuffix(br.Links.Self.Href, fmt.Sprintf("/branch-restrictions/%d", br.ID)) {
			t.Errorf("restriction decoded incompletely: %+v", br)
		}
	}
	if len(ids) != len(brs) {
		t.Errorf("restriction ids repeat")
	}
	push, approvals, force := brs[0], brs[1], brs[2]
	if push.Kind != "push" || push.Pattern != "main" || push.BranchMatchKind != "glob" || push.Value != nil || push.BranchType != "" {
		t.Errorf("push = %+v", push)
	}
	if len(push.Users) != 1 || push.Users[0].Nickname != "alice" || push.Users[0].UUID == "" || push.Users[0].AccountID == "" ||
		push.Users[0].DisplayName != "Alice Anders" || push.Users[0].Type != "user" {
		t.Errorf("push users = %+v", push.Users)
	}
	if len(push.Groups) != 1 || push.Groups[0].Slug != "release-managers" || push.Groups[0].FullSlug != "acme:release-managers" || push.Groups[0].Name == "" {
		t.Errorf("push groups = %+v", push.Groups)
	}
	if approvals.Kind != "require_approvals_to_merge" || approvals.Value == nil || *approvals.Value != 2 || len(approvals.Users) != 0 {
		t.Errorf("approvals = %+v", approvals)
	}
	if force.Kind != "force" || force.BranchMatchKind != "branching_model" || force.BranchType != "production" || force.Pattern != "" {
		t.Errorf("force = %+v", force)
	}

	model, err := admin.GetBranchingModelSettings(ctx, "acme", "settings")
	if err != nil {
		t.Fatalf("GetBranchingModelSettings: %v", err)
	}
	if model.Type != "branching_model_settings" || model.Development == nil || model.Production == nil {
		t.Fatalf("model = %+v", model)
	}
	if d := model.Development; d.Name != "develop" || d.UseMainbranch || d.IsValid || d.Enabled != nil {
		t.Errorf("development = %+v (develop does not exist: not valid)", d)
	}
	if p := model.Production; p.Name != "" || !p.UseMainbranch || !p.IsValid || p.Enabled == nil || !*p.Enabled {
		t.Errorf("production = %+v", p)
	}
	if len(model.BranchTypes) != 2 || model.BranchTypes[0] != (bitbucket.BranchType{Kind: "feature", Prefix: "feat/", Enabled: model.BranchTypes[0].Enabled}) ||
		model.BranchTypes[0].Enabled == nil || !*model.BranchTypes[0].Enabled || model.BranchTypes[1].Enabled == nil || *model.BranchTypes[1].Enabled {
		t.Errorf("branch types = %+v", model.BranchTypes)
	}
	def, err := admin.GetBranchingModelSettings(ctx, "acme", "api")
	if err != nil || def.Development == nil || !def.Development.UseMainbranch || len(def.BranchTypes) != 4 ||
		def.Production == nil || def.Production.Enabled == nil || *def.Production.Enabled {
		t.Errorf("default model = %+v, %v", def, err)
	}

	reviewers, err := admin.ListDefaultReviewers(ctx, "acme", "settings")
	if err != nil {
		t.Fatalf("ListDefaultReviewers: %v", err)
	}
	if len(reviewers) != 2 || reviewers[0].Nickname != "bob" || reviewers[1].Nickname != "alice" {
		t.Fatalf("default reviewers = %+v", reviewers)
	}
	for _, u := range reviewers {
		if u.Type != "user" || u.UUID == "" || u.AccountID == "" || u.DisplayName == "" || u.Links.Self.Href == "" {
			t.Errorf("reviewer decoded incompletely: %+v", u)
		}
	}

	// The backup app (no repository:admin) is refused the admin-only settings but reads the
	// default reviewers.
	backup, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	var apiErr *bitbucket.APIError
	if _, err := backup.ListBranchRestrictions(ctx, "acme", "settings"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden ||
		!strings.Contains(apiErr.Message, "privilege scopes") {
		t.Errorf("ListBranchRestrictions without repository:admin: %v, want a 403 scope error", err)
	}
	if _, err := backup.GetBranchingModelSettings(ctx, "acme", "settings"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Errorf("GetBranchingModelSettings without repository:admin: %v, want 403", err)
	}
	if got, err := backup.ListDefaultReviewers(ctx, "acme", "settings"); err != nil || len(got) != 2 {
		t.Errorf("ListDefaultReviewers with the backup scopes: %v, %v", got, err)
	}

	// A PR payload's 12-character hash resolves to the full commit.
	prs, err := admin.ListPullRequests(ctx, "acme", "settings", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates})
	if err != nil || len(prs) != 1 {
		t.Fatalf("ListPullRequests: %v, %v", prs, err)
	}
	short := prs[0].Source.Commit.Hash
	cm, err := backup.GetCommit(ctx, "acme", "settings", short)
	if err != nil {
		t.Fatalf("GetCommit %s: %v", short, err)
	}
	if len(cm.Hash) != 40 || !strings.HasPrefix(cm.Hash, short) || cm.Date.IsZero() || cm.Message == "" {
		t.Errorf("GetCommit(%s) = %+v", short, cm)
	}
	if _, err := backup.GetCommit(ctx, "acme", "settings", "0123456789ab"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Errorf("GetCommit of an unknown hash: %v, want 404", err)
	}
}

// TestContractCreatePullRequest opens a pull request as the restore app does: through one
// 429 (retried, created once), not through a 502 (a POST may have been applied), with
// Bitbucket's 400 for a missing branch and its 403 for the backup app's read scopes.
func TestContractCreatePullRequest(t *testing.T) {
	env := startEmulator(t)
	ctx := context.Background()
	restoreClient, _ := env.client(t, env.issueToken(t, "alice", "account", "repository:admin", "pullrequest:write"), &tokenStore{})
	restorer := &bitbucket.Writer{Client: restoreClient}
	branches, err := restorer.ListBranches(ctx, "acme", "api")
	if err != nil {
		t.Fatal(err)
	}
	var feature string
	for _, b := range branches {
		if b.Name != "main" && !strings.HasPrefix(b.Name, "pr/") {
			feature = b.Name
			break
		}
	}
	if feature == "" {
		t.Fatalf("no feature branch in %+v", branches)
	}
	before, err := restorer.ListPullRequests(ctx, "acme", "api", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates})
	if err != nil {
		t.Fatal(err)
	}
	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "429", "method": "POST", "path": "/2.0/repositories/acme/api/pullrequests", "count": 1}, nil)
	pr, err := restorer.CreatePullRequest(ctx, "acme", "api", bitbucket.CreatePullRequestRequest{
		Title: "Restored: ünïcode ✓", Description: "Body\n\nwith <html> & \"quotes\"", SourceBranch: feature,
		DestinationBranch: "main", CloseSourceBranch: true, Draft: true})
	if err != nil {
		t.Fatalf("CreatePullRequest through a 429: %v", err)
	}
	if pr.ID == 0 || pr.State != bitbucket.PullRequestOpen || pr.Title != "Restored: ünïcode ✓" ||
		pr.Description != "Body\n\nwith <html> & \"quotes\"" || pr.Source.Branch.Name != feature ||
		pr.Destination.Branch.Name != "main" || !pr.CloseSourceBranch || !pr.Draft || pr.Author == nil || pr.Author.Nickname != "alice" {
		t.Errorf("created = %+v", pr)
	}
	after, err := restorer.ListPullRequests(ctx, "acme", "api", bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates})
	if err != nil || len(after) != len(before)+1 {
		t.Errorf("%d pull requests after one create (had %d): %v", len(after), len(before), err)
	}

	// Without a destination Bitbucket uses the main branch.
	other, err := restorer.CreatePullRequest(ctx, "acme", "api", bitbucket.CreatePullRequestRequest{Title: "To main", SourceBranch: feature})
	if err != nil || other.Destination.Branch.Name != "main" || other.Draft {
		t.Errorf("create without destination = %+v, %v", other, err)
	}

	env.admin(t, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "5xx", "status": 502, "method": "POST", "path": "/2.0/repositories/acme/api/pullrequests", "count": 1}, nil)
	var apiErr *bitbucket.APIError
	if _, err := restorer.CreatePullRequest(ctx, "acme", "api", bitbucket.CreatePullRequestRequest{Title: "x", SourceBranch: feature}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadGateway {
		t.Errorf("create through a 502: %v, want the 502 (never retried)", err)
	}
	if _, err := restorer.CreatePullRequest(ctx, "acme", "api", bitbucket.CreatePullRequestRequest{Title: "x", SourceBranch: "no/such/branch"}); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, "no/such/branch") {
		t.Errorf("create from a missing branch: %v, want 400 naming the branch", err)
	}
	backup, _ := env.client(t, env.issueToken(t, "alice"), &tokenStore{})
	if _, err := (&bitbucket.Writer{Client: backup}).CreatePullRequest(ctx, "acme", "api", bitbucket.CreatePullRequestRequest{Title: "x", SourceBranch: feature}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Errorf("create with the backup app's scopes: %v, want 403", err)
	}
}
