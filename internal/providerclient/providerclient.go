// Package providerclient builds Bitbucket clients for installations. Credentials never travel:
// activities pass an installation ID, and this package loads the encrypted OAuth tokens from the
// store, decrypts them, and persists every refreshed token (encrypted) before it is used.
package providerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/secretbox"
)

// Store is what the factory needs from the metadata store: each app's sealed tokens.
type Store interface {
	AppCredentials(ctx context.Context, tenantID, id uuid.UUID, app domain.App) ([]byte, error)
	UpdateAppCredentials(ctx context.Context, tenantID, id uuid.UUID, app domain.App, enc []byte) error
}

// Factory hands out one Bitbucket client per installation, app and process, so every goroutine
// of a worker shares that credential's token source (refreshes are serialised) and rate limiters.
// The backup app's grant yields a read-only *bitbucket.Client (Client); the Restore App's a
// *bitbucket.Writer (RestoreClient), so code holding the backup app's tokens cannot write.
//
// Other processes share the installation: another worker may uninstall it or refresh its token
// (Bitbucket rotates the refresh token, so the old one stops working). Every call therefore
// reads the stored credentials and hands out the cached client only while they are the ones it
// holds: a removed installation or a dropped grant gets no client, changed credentials get a
// new one.
type Factory struct {
	Store Store
	Box   *secretbox.Box
	// OAuth is the backup app's consumer; RestoreOAuth the Restore App's (nil: restores are
	// not configured, and RestoreClient fails).
	OAuth        *oauth2.Config
	RestoreOAuth *oauth2.Config
	APIURL       string
	GitURL       string
	RESTLimiters *bitbucket.LimiterRegistry
	GitLimiters  *bitbucket.LimiterRegistry
	HTTPClient   *http.Client
	Logger       *slog.Logger
	// OnRequest is passed to every client as bitbucket.Options.OnRequest (metrics); nil: none.
	OnRequest func(kind, class string)

	mu      sync.Mutex
	clients map[clientKey]*cachedClient
}

type clientKey struct {
	installation uuid.UUID
	app          domain.App
}

// cachedClient is a client with the sealed credentials it was built from or last persisted.
type cachedClient struct {
	client *bitbucket.Client
	sealed []byte
}

// ErrRestoreNotConfigured: no Restore App consumer is configured (GITSEC_BITBUCKET_RESTORE_CLIENT_ID).
var ErrRestoreNotConfigured = errors.New("no Restore App OAuth consumer is configured (GITSEC_BITBUCKET_RESTORE_CLIENT_ID)")

// Client returns the backup app's (read-only) client of an installation.
func (f *Factory) Client(ctx context.Context, tenantID, installationID uuid.UUID) (*bitbucket.Client, error) {
	return f.client(ctx, tenantID, installationID, domain.AppBackup, f.OAuth, "GitSec-Backup")
}

// RestoreClient returns the Restore App's client of an installation: the only way to a
// *bitbucket.Writer. Without a grant it fails with store.ErrNoGrant.
func (f *Factory) RestoreClient(ctx context.Context, tenantID, installationID uuid.UUID) (*bitbucket.Writer, error) {
	if f.RestoreOAuth == nil || f.RestoreOAuth.ClientID == "" {
		return nil, ErrRestoreNotConfigured
	}
	c, err := f.client(ctx, tenantID, installationID, domain.AppRestore, f.RestoreOAuth, "GitSec-Restore")
	if err != nil {
		return nil, err
	}
	return &bitbucket.Writer{Client: c}, nil
}

func (f *Factory) client(ctx context.Context, tenantID, installationID uuid.UUID, app domain.App, cfg *oauth2.Config, agent string) (*bitbucket.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := clientKey{installationID, app}
	enc, err := f.Store.AppCredentials(ctx, tenantID, installationID, app)
	if err != nil {
		// Gone, removed or unreadable: whatever was cached must not outlive it.
		delete(f.clients, key)
		return nil, err
	}
	if cached, ok := f.clients[key]; ok && bytes.Equal(cached.sealed, enc) {
		return cached.client, nil
	}
	tok, err := OpenToken(ctx, f.Box, enc)
	if err != nil {
		return nil, fmt.Errorf("installation %s: %w", installationID, err)
	}
	entry := &cachedClient{sealed: enc}
	persist := func(ctx context.Context, t *oauth2.Token) error {
		sealed, err := SealToken(ctx, f.Box, t)
		if err != nil {
			return err
		}
		err = f.Store.UpdateAppCredentials(ctx, tenantID, installationID, app, sealed)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			// The installation was removed or the grant dropped (the store refuses the write):
			// drop the client, whose new token must not be used either.
			if f.clients[key] == entry {
				delete(f.clients, key)
			}
			return err
		}
		entry.sealed = sealed
		return nil
	}
	baseCtx := context.Background()
	if f.HTTPClient != nil {
		baseCtx = context.WithValue(baseCtx, oauth2.HTTPClient, f.HTTPClient)
	}
	src := bitbucket.NewPersistingTokenSource(baseCtx, cfg, tok, persist)
	// Both apps act for the same account, so they share its rate budgets.
	limiterKey := installationID.String()
	entry.client = bitbucket.New(bitbucket.Options{
		APIBaseURL:  f.APIURL,
		GitBaseURL:  f.GitURL,
		TokenSource: src,
		HTTPClient:  f.HTTPClient,
		Limiter:     f.RESTLimiters.For(limiterKey),
		GitLimiter:  f.GitLimiters.For(limiterKey),
		Logger:      f.logger().With("installation", limiterKey, "app", string(app)),
		UserAgent:   agent,
		OnRequest:   f.OnRequest,
	})
	if f.clients == nil {
		f.clients = map[clientKey]*cachedClient{}
	}
	f.clients[key] = entry
	return entry.client, nil
}

// Forget drops the cached client (after uninstall or a credentials change).
func (f *Factory) Forget(installationID uuid.UUID) {
	f.mu.Lock()
	delete(f.clients, clientKey{installationID, domain.AppBackup})
	delete(f.clients, clientKey{installationID, domain.AppRestore})
	f.mu.Unlock()
}

func (f *Factory) logger() *slog.Logger {
	if f.Logger == nil {
		return slog.Default()
	}
	return f.Logger
}

// storedToken is the JSON sealed into installations.credentials_encrypted.
type storedToken struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	Expiry       int64  `json:"expiry_unix"`
}

// SealToken encrypts an OAuth token for storage.
func SealToken(ctx context.Context, box *secretbox.Box, t *oauth2.Token) ([]byte, error) {
	st := storedToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType}
	if !t.Expiry.IsZero() {
		st.Expiry = t.Expiry.Unix()
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode token: %w", err)
	}
	return box.Encrypt(ctx, raw)
}

// OpenToken decrypts a token sealed by SealToken.
func OpenToken(ctx context.Context, box *secretbox.Box, enc []byte) (*oauth2.Token, error) {
	raw, err := box.Decrypt(ctx, enc)
	if err != nil {
		return nil, err
	}
	var st storedToken
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("decode stored token: invalid format")
	}
	t := &oauth2.Token{AccessToken: st.AccessToken, RefreshToken: st.RefreshToken, TokenType: st.TokenType}
	if st.Expiry != 0 {
		t.Expiry = time.Unix(st.Expiry, 0)
	}
	return t, nil
}
