package bitbucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing/transport"
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

// WithGitAuth runs one git operation (ls-remote, fetch, push) with fresh credentials from
// GitAuth. A 401 from the git server is treated like one from the REST API: one forced refresh
// and one more attempt, so only credentials that still fail after the refresh count as revoked
// (the error then matches ErrCredentialsRevoked). A 403 concerns this repository alone (a
// permission taken away, a scope it needs): the error matches ErrForbidden and the credential
// stays good for the others. The git transport's own error stays in the chain either way.
func (c *Client) WithGitAuth(ctx context.Context, op func(*githttp.BasicAuth) error) error {
	auth, err := c.GitAuth(ctx)
	if err != nil {
		return err
	}
	err = op(auth)
	c.observe(RequestKindGit, gitClass(err))
	if errors.Is(err, transport.ErrAuthenticationRequired) {
		refresher, ok := c.tokens.(TokenRefresher)
		if !ok {
			return fmt.Errorf("%w: %w", ErrCredentialsRevoked, err)
		}
		c.log.InfoContext(ctx, "the git server rejected the access token; forcing one refresh")
		if _, rerr := refresher.ForceRefresh(ctx, auth.Password); rerr != nil {
			return fmt.Errorf("git auth: %w", rerr)
		}
		if auth, err = c.GitAuth(ctx); err != nil {
			return err
		}
		err = op(auth)
		c.observe(RequestKindGit, gitClass(err))
	}
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return fmt.Errorf("%w: rejected again after a token refresh: %w", ErrCredentialsRevoked, err)
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return err
}
