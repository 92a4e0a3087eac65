package bitbucket

import (
	"context"
	"errors"
	"fmt"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// GitTokenUser is the user name Bitbucket expects with an OAuth access token over HTTPS.
const GitTokenUser = "x-token-auth"

// CloneURL is the smart-HTTP URL of a repository on the configured git host. It never
// contains credentials; pass GitAuth separately so the token stays out of remotes and logs.
func (c *Client) CloneURL(workspace, slug string) string {
	return c.gitBase + "/" + escapeSegment(workspace) + "/" + escapeSegment(slug) + ".git"
}

// GitAuth returns Basic credentials (x-token-auth + current access token) for one git
// operation and spends one unit of the git budget. Fetch it right before each clone, fetch,
// ls-remote or push so a refreshed token is used. Its String() masks the password.
func (c *Client) GitAuth(ctx context.Context) (*githttp.BasicAuth, error) {
	if c.gitBase == "" {
		return nil, errors.New("git auth: no git base URL configured")
	}
	if c.tokens == nil {
		return nil, errors.New("git auth: no token source configured")
	}
	if err := c.gitLimiter.Wait(ctx); err != nil {
		return nil, fmt.Errorf("git auth: %w", err)
	}
	tok, err := c.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("git auth: %w", err)
	}
	return &githttp.BasicAuth{Username: GitTokenUser, Password: tok.AccessToken}, nil
}
