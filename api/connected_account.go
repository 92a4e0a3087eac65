package api

import (
	"context"
	"fmt"

	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/store"
)

// connectedAccount asks Bitbucket which account a fresh grant acts for, so that the callback can
// refuse a second connect of the same account before anything is stored.
func (h *handlers) connectedAccount(ctx context.Context, tok *oauth2.Token) (store.ProviderAccount, error) {
	c := bitbucket.New(bitbucket.Options{
		APIBaseURL:  h.deps.BitbucketAPIURL,
		TokenSource: oauth2.StaticTokenSource(tok),
		HTTPClient:  h.deps.OAuthHTTPClient,
		Logger:      h.deps.Logger,
		UserAgent:   "GitSec-Backup",
		OnRequest:   h.deps.Metrics.BitbucketRequest,
	})
	u, err := c.CurrentUser(ctx)
	if err != nil {
		return store.ProviderAccount{}, fmt.Errorf("identify the connected account: %w", err)
	}
	name := u.Username
	if name == "" {
		name = u.DisplayName
	}
	return store.ProviderAccount{Provider: providerBitbucket, UUID: u.UUID, Name: name}, nil
}

// alreadyConnectedMessage tells the person which installation already is the account, and how
// to act on it instead of connecting it twice.
func alreadyConnectedMessage(dup *store.AlreadyConnectedError) string {
	return fmt.Sprintf("Bitbucket account %s is already connected to this tenant as installation %s (status %s); nothing was changed. "+
		"Rediscover its repositories with POST /api/v1/installations/%s/sync, or uninstall it (DELETE /api/v1/installations/%s) before connecting the account again",
		dup.AccountName, dup.InstallationID, dup.Status, dup.InstallationID, dup.InstallationID)
}
