package bitbucket

import (
	"context"
	"fmt"
	"net/http"
)

// HookRequest is the body of a webhook create or update.
//
// Secret semantics follow Bitbucket: on create nil means "no secret"; on update nil leaves the
// secret unchanged and a pointer to "" removes it. The secret is write-only upstream (only
// Hook.SecretSet comes back), so callers must keep their own copy to verify deliveries.
type HookRequest struct {
	Description string   `json:"description"`
	URL         string   `json:"url"`
	Active      bool     `json:"active"`
	Events      []string `json:"events"`
	Secret      *string  `json:"secret,omitempty"`
}

// String keeps the secret out of logs and %v formatting.
func (r HookRequest) String() string {
	secret := "unset"
	if r.Secret != nil {
		secret = "[redacted]"
	}
	return fmt.Sprintf("HookRequest{Description:%q URL:%q Active:%t Events:%v Secret:%s}", r.Description, r.URL, r.Active, r.Events, secret)
}

// GoString keeps the secret out of %#v formatting.
func (r HookRequest) GoString() string { return r.String() }

func workspaceHooksPath(workspace string) string { return workspacePath(workspace) + "/hooks" }

func repositoryHooksPath(workspace, slug string) string {
	return repositoryPath(workspace, slug) + "/hooks"
}

// ListWorkspaceHooks lists a workspace's webhooks (owner only: 403 otherwise).
func (c *Client) ListWorkspaceHooks(ctx context.Context, workspace string) ([]Hook, error) {
	all, err := listAll[Hook](ctx, c, workspaceHooksPath(workspace), pagelenQuery(pagelenHooks))
	if err != nil {
		return nil, fmt.Errorf("list hooks of workspace %s: %w", workspace, err)
	}
	return all, nil
}

// GetWorkspaceHook returns one workspace webhook; uid is the hook UUID with braces.
func (c *Client) GetWorkspaceHook(ctx context.Context, workspace, uid string) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodGet, target: workspaceHooksPath(workspace) + "/" + escapeSegment(uid), out: &hook}); err != nil {
		return nil, fmt.Errorf("get hook %s of workspace %s: %w", uid, workspace, err)
	}
	return &hook, nil
}

// CreateWorkspaceHook registers a webhook for every repository of the workspace. Not retried
// on 5xx (a duplicate hook would double deliveries): list and match on URL before retrying.
func (c *Client) CreateWorkspaceHook(ctx context.Context, workspace string, req HookRequest) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodPost, target: workspaceHooksPath(workspace), body: req, out: &hook}); err != nil {
		return nil, fmt.Errorf("create hook in workspace %s: %w", workspace, err)
	}
	return &hook, nil
}

// UpdateWorkspaceHook replaces a workspace webhook's settings.
func (c *Client) UpdateWorkspaceHook(ctx context.Context, workspace, uid string, req HookRequest) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodPut, target: workspaceHooksPath(workspace) + "/" + escapeSegment(uid), body: req, out: &hook}); err != nil {
		return nil, fmt.Errorf("update hook %s of workspace %s: %w", uid, workspace, err)
	}
	return &hook, nil
}

// DeleteWorkspaceHook removes a workspace webhook. A hook that is already gone gives an error
// matching ErrNotFound, which callers uninstalling may treat as done.
func (c *Client) DeleteWorkspaceHook(ctx context.Context, workspace, uid string) error {
	if err := c.do(ctx, call{method: http.MethodDelete, target: workspaceHooksPath(workspace) + "/" + escapeSegment(uid)}); err != nil {
		return fmt.Errorf("delete hook %s of workspace %s: %w", uid, workspace, err)
	}
	return nil
}

// ListRepositoryHooks lists one repository's webhooks (repository admin only).
func (c *Client) ListRepositoryHooks(ctx context.Context, workspace, slug string) ([]Hook, error) {
	all, err := listAll[Hook](ctx, c, repositoryHooksPath(workspace, slug), pagelenQuery(pagelenHooks))
	if err != nil {
		return nil, fmt.Errorf("list hooks of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// GetRepositoryHook returns one repository webhook; uid is the hook UUID with braces.
func (c *Client) GetRepositoryHook(ctx context.Context, workspace, slug, uid string) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodGet, target: repositoryHooksPath(workspace, slug) + "/" + escapeSegment(uid), out: &hook}); err != nil {
		return nil, fmt.Errorf("get hook %s of %s/%s: %w", uid, workspace, slug, err)
	}
	return &hook, nil
}

// CreateRepositoryHook registers a webhook on one repository (not retried on 5xx, see
// CreateWorkspaceHook).
func (c *Client) CreateRepositoryHook(ctx context.Context, workspace, slug string, req HookRequest) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodPost, target: repositoryHooksPath(workspace, slug), body: req, out: &hook}); err != nil {
		return nil, fmt.Errorf("create hook in %s/%s: %w", workspace, slug, err)
	}
	return &hook, nil
}

// UpdateRepositoryHook replaces a repository webhook's settings.
func (c *Client) UpdateRepositoryHook(ctx context.Context, workspace, slug, uid string, req HookRequest) (*Hook, error) {
	var hook Hook
	if err := c.do(ctx, call{method: http.MethodPut, target: repositoryHooksPath(workspace, slug) + "/" + escapeSegment(uid), body: req, out: &hook}); err != nil {
		return nil, fmt.Errorf("update hook %s of %s/%s: %w", uid, workspace, slug, err)
	}
	return &hook, nil
}

// DeleteRepositoryHook removes a repository webhook.
func (c *Client) DeleteRepositoryHook(ctx context.Context, workspace, slug, uid string) error {
	if err := c.do(ctx, call{method: http.MethodDelete, target: repositoryHooksPath(workspace, slug) + "/" + escapeSegment(uid)}); err != nil {
		return fmt.Errorf("delete hook %s of %s/%s: %w", uid, workspace, slug, err)
	}
	return nil
}
