package bitbucket

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Page sizes asked per collection. Bitbucket documents 100 as the usual maximum and clamps or
// rejects more depending on the endpoint; where no recording shows what an endpoint accepts,
// its default is kept and `next` does the rest.
const (
	pagelenRepositories = 100 // recorded: hooks/refs ?pagelen=100 answered in full
	pagelenRefs         = 100
	pagelenHooks        = 100
	pagelenComments     = 100
	pagelenTasks        = 100 // Atlassian documents 10 by default, 100 at most
	// Clients commonly ask 50 for pull requests; a recording shows Bitbucket may still answer
	// with 10, which is harmless because `next` is followed anyway.
	pagelenPullRequests = 50
)

func escapeSegment(s string) string { return url.PathEscape(s) }

func workspacePath(workspace string) string {
	return "/2.0/workspaces/" + escapeSegment(workspace)
}

func repositoryPath(workspace, slug string) string {
	return "/2.0/repositories/" + escapeSegment(workspace) + "/" + escapeSegment(slug)
}

func pullRequestPath(workspace, slug string, id int64) string {
	return repositoryPath(workspace, slug) + "/pullrequests/" + strconv.FormatInt(id, 10)
}

// CurrentUser returns the account the token acts for (GET /2.0/user).
func (c *Client) CurrentUser(ctx context.Context) (*User, error) {
	var user User
	if err := c.do(ctx, call{method: http.MethodGet, target: "/2.0/user", out: &user}); err != nil {
		return nil, fmt.Errorf("get current user: %w", err)
	}
	return &user, nil
}

// ListUserWorkspaces lists the caller's workspaces with the administrator flag
// (GET /2.0/user/workspaces). It is the only discovery endpoint left: /2.0/workspaces,
// /2.0/repositories and /2.0/user/permissions/* answer 410 since CHANGE-2770.
func (c *Client) ListUserWorkspaces(ctx context.Context) ([]WorkspaceAccess, error) {
	all, err := listAll[WorkspaceAccess](ctx, c, "/2.0/user/workspaces", nil)
	if err != nil {
		return nil, fmt.Errorf("list user workspaces: %w", err)
	}
	return all, nil
}

// ListRepositories returns every repository of workspace, following all pages.
func (c *Client) ListRepositories(ctx context.Context, workspace string) ([]Repository, error) {
	all, err := listAll[Repository](ctx, c, "/2.0/repositories/"+escapeSegment(workspace), pagelenQuery(pagelenRepositories))
	if err != nil {
		return nil, fmt.Errorf("list repositories of %s: %w", workspace, err)
	}
	return all, nil
}

// WalkRepositories calls fn for every repository of workspace, page by page, without holding
// the whole list. An error from fn stops the walk and is returned as is.
func (c *Client) WalkRepositories(ctx context.Context, workspace string, fn func(Repository) error) error {
	return walkPages(ctx, c, "/2.0/repositories/"+escapeSegment(workspace), pagelenQuery(pagelenRepositories), fn)
}

// GetRepository returns one repository. workspace and slug may also be brace UUIDs.
func (c *Client) GetRepository(ctx context.Context, workspace, slug string) (*Repository, error) {
	var repo Repository
	if err := c.do(ctx, call{method: http.MethodGet, target: repositoryPath(workspace, slug), out: &repo}); err != nil {
		return nil, fmt.Errorf("get repository %s/%s: %w", workspace, slug, err)
	}
	return &repo, nil
}

// CreateRepositoryRequest is the body of POST /2.0/repositories/{workspace}/{slug}.
type CreateRepositoryRequest struct {
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	IsPrivate   bool   `json:"is_private"`
	// ForkPolicy is allow_forks, no_public_forks or no_forks.
	ForkPolicy string `json:"fork_policy,omitempty"`
	Language   string `json:"language,omitempty"`
	// ProjectKey selects the project; empty means the workspace's oldest project.
	ProjectKey string `json:"-"`
}

// ListBranches returns every branch of a repository. Backups read refs from git (a far larger
// budget); this is for cross-checks.
func (c *Client) ListBranches(ctx context.Context, workspace, slug string) ([]Branch, error) {
	all, err := listAll[Branch](ctx, c, repositoryPath(workspace, slug)+"/refs/branches", pagelenQuery(pagelenRefs))
	if err != nil {
		return nil, fmt.Errorf("list branches of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// ListTags returns every tag of a repository.
func (c *Client) ListTags(ctx context.Context, workspace, slug string) ([]Tag, error) {
	all, err := listAll[Tag](ctx, c, repositoryPath(workspace, slug)+"/refs/tags", pagelenQuery(pagelenRefs))
	if err != nil {
		return nil, fmt.Errorf("list tags of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// PullRequestQuery narrows ListPullRequests. Without States Bitbucket returns only OPEN pull
// requests, so a backup must ask for all four.
type PullRequestQuery struct {
	States []string
	// Q is a BBQL filter, e.g. `updated_on > 2026-01-01T00:00:00+00:00`.
	Q string
	// Sort is one field, "-" prefix for descending, e.g. "-updated_on".
	Sort string
}

// AllPullRequestStates lists every state, for full exports.
var AllPullRequestStates = []string{PullRequestOpen, PullRequestMerged, PullRequestDeclined, PullRequestSuperseded}

func (q PullRequestQuery) values() url.Values {
	v := pagelenQuery(pagelenPullRequests)
	for _, state := range q.States {
		v.Add("state", state)
	}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Sort != "" {
		v.Set("sort", q.Sort)
	}
	return v
}

// ListPullRequests returns every pull request matching query.
func (c *Client) ListPullRequests(ctx context.Context, workspace, slug string, query PullRequestQuery) ([]PullRequest, error) {
	all, err := listAll[PullRequest](ctx, c, repositoryPath(workspace, slug)+"/pullrequests", query.values())
	if err != nil {
		return nil, fmt.Errorf("list pull requests of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// WalkPullRequests calls fn for every pull request matching query, page by page.
func (c *Client) WalkPullRequests(ctx context.Context, workspace, slug string, query PullRequestQuery, fn func(PullRequest) error) error {
	return walkPages(ctx, c, repositoryPath(workspace, slug)+"/pullrequests", query.values(), fn)
}

// GetPullRequest returns one pull request with reviewers and participants.
func (c *Client) GetPullRequest(ctx context.Context, workspace, slug string, id int64) (*PullRequest, error) {
	var pr PullRequest
	if err := c.do(ctx, call{method: http.MethodGet, target: pullRequestPath(workspace, slug, id), out: &pr}); err != nil {
		return nil, fmt.Errorf("get pull request %s/%s#%d: %w", workspace, slug, id, err)
	}
	return &pr, nil
}

// ListPullRequestComments returns every comment of a pull request, deleted ones included.
func (c *Client) ListPullRequestComments(ctx context.Context, workspace, slug string, id int64) ([]Comment, error) {
	all, err := listAll[Comment](ctx, c, pullRequestPath(workspace, slug, id)+"/comments", pagelenQuery(pagelenComments))
	if err != nil {
		return nil, fmt.Errorf("list comments of %s/%s#%d: %w", workspace, slug, id, err)
	}
	return all, nil
}

// WalkPullRequestComments calls fn for every comment of a pull request, page by page.
func (c *Client) WalkPullRequestComments(ctx context.Context, workspace, slug string, id int64, fn func(Comment) error) error {
	return walkPages(ctx, c, pullRequestPath(workspace, slug, id)+"/comments", pagelenQuery(pagelenComments), fn)
}

// ListPullRequestTasks returns every task of a pull request, resolved ones included.
func (c *Client) ListPullRequestTasks(ctx context.Context, workspace, slug string, id int64) ([]Task, error) {
	all, err := listAll[Task](ctx, c, pullRequestPath(workspace, slug, id)+"/tasks", pagelenQuery(pagelenTasks))
	if err != nil {
		return nil, fmt.Errorf("list tasks of %s/%s#%d: %w", workspace, slug, id, err)
	}
	return all, nil
}

// WalkPullRequestTasks calls fn for every task of a pull request, page by page.
func (c *Client) WalkPullRequestTasks(ctx context.Context, workspace, slug string, id int64, fn func(Task) error) error {
	return walkPages(ctx, c, pullRequestPath(workspace, slug, id)+"/tasks", pagelenQuery(pagelenTasks), fn)
}

// ListPullRequestActivity returns the activity log of a pull request.
func (c *Client) ListPullRequestActivity(ctx context.Context, workspace, slug string, id int64) ([]Activity, error) {
	all, err := listAll[Activity](ctx, c, pullRequestPath(workspace, slug, id)+"/activity", nil)
	if err != nil {
		return nil, fmt.Errorf("list activity of %s/%s#%d: %w", workspace, slug, id, err)
	}
	return all, nil
}

// WalkPullRequestActivity calls fn for every activity entry of a pull request, page by page.
func (c *Client) WalkPullRequestActivity(ctx context.Context, workspace, slug string, id int64, fn func(Activity) error) error {
	return walkPages(ctx, c, pullRequestPath(workspace, slug, id)+"/activity", nil, fn)
}

// ListPullRequestCommits returns the commits a pull request would merge. Bitbucket answers 404
// when the source fork is gone.
func (c *Client) ListPullRequestCommits(ctx context.Context, workspace, slug string, id int64) ([]Commit, error) {
	all, err := listAll[Commit](ctx, c, pullRequestPath(workspace, slug, id)+"/commits", nil)
	if err != nil {
		return nil, fmt.Errorf("list commits of %s/%s#%d: %w", workspace, slug, id, err)
	}
	return all, nil
}

// WalkPullRequestCommits calls fn for every commit of a pull request, page by page (newest
// first). Bitbucket answers 404 when the source fork is gone.
func (c *Client) WalkPullRequestCommits(ctx context.Context, workspace, slug string, id int64, fn func(Commit) error) error {
	return walkPages(ctx, c, pullRequestPath(workspace, slug, id)+"/commits", nil, fn)
}

// PullRequestDiffstat returns the per-file change summary of a pull request. Bitbucket answers
// with a 302 to the repository diffstat on the same host; the HTTP client follows it and keeps
// the Authorization header because the host does not change.
func (c *Client) PullRequestDiffstat(ctx context.Context, workspace, slug string, id int64) ([]DiffStat, error) {
	all, err := listAll[DiffStat](ctx, c, pullRequestPath(workspace, slug, id)+"/diffstat", nil)
	if err != nil {
		return nil, fmt.Errorf("diffstat of %s/%s#%d: %w", workspace, slug, id, err)
	}
	return all, nil
}
