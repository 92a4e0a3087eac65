// Package providerclient builds Bitbucket clients for installations. Credentials never travel:
// activities pass an installation ID, and this package loads the encrypted OAuth tokens from the
// store, decrypts them, and persists every refreshed token (encrypted) before it is used.
package providerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/secretbox"
)

// Store is what the factory needs from the metadata store.
type Store interface {
	InstallationCredentials(ctx context.Context, tenantID, id uuid.UUID) ([]byte, error)
	UpdateInstallationCredentials(ctx context.Context, tenantID, id uuid.UUID, enc []byte) error
}

// Factory hands out one Bitbucket client per installation and process, so every goroutine of a
// worker shares that credential's token source (refreshes are serialised) and rate limiters.
//
// Other processes share the installation: another worker may uninstall it or refresh its token
// (Bitbucket rotates the refresh token, so the old one stops working). Every Client call therefore
// reads the stored credentials and hands out the cached client only while they are the ones it
// holds: a removed installation gets no client, changed credentials get a new one.
type Factory struct {
	Store        Store
	Box          *secretbox.Box
	OAuth        *oauth2.Config
	APIURL       string
	GitURL       string
	RESTLimiters *bitbucket.LimiterRegistry
	GitLimiters  *bitbucket.LimiterRegistry
	HTTPClient   *http.Client
	Logger       *slog.Logger
	// OnRequest is passed to every client as bitbucket.Options.OnRequest (metrics); nil: none.
	OnRequest func(kind, class string)

	mu      sync.Mutex
	clients map[uuid.UUID]*cachedClient
}

// cachedClient is a client with the sealed credentials it was built from or last persisted.
type cachedClient struct {
	client *bitbucket.Client
	sealed []byte
}

// Client returns the Bitbucket client of an installation.
func (f *Factory) Client(ctx context.Context, tenantID, installationID uuid.UUID) (*bitbucket.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	enc, err := f.Store.InstallationCredentials(ctx, tenantID, installationID)
	if err != nil {
		// Gone, removed or unreadable: whatever was cached must not outlive it.
		delete(f.clients, installationID)
		return nil, err
	}
	if cached, ok := f.clients[installationID]; ok && bytes.Equal(cached.sealed, enc) {
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
		err = f.Store.UpdateInstallationCredentials(ctx, tenantID, installationID, sealed)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			// The installation was removed (the store refuses the write): drop the client, whose
			// new token must not be used either.
			if f.clients[installationID] == entry {
				delete(f.clients, installationID)
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
	src := bitbucket.NewPersistingTokenSource(baseCtx, f.OAuth, tok, persist)
	key := installationID.String()
	entry.client = bitbucket.New(bitbucket.Options{
		APIBaseURL:  f.APIURL,
		GitBaseURL:  f.GitURL,
		TokenSource: src,
		HTTPClient:  f.HTTPClient,
		Limiter:     f.RESTLimiters.For(key),
		GitLimiter:  f.GitLimiters.For(key),
		Logger:      f.logger().With("installation", key),
		UserAgent:   "GitSec-Backup",
		OnRequest:   f.OnRequest,
	})
	if f.clients == nil {
		f.clients = map[uuid.UUID]*cachedClient{}
	}
	f.clients[installationID] = entry
	return entry.client, nil
}

// Forget drops the cached client (after uninstall or a credentials change).
func (f *Factory) Forget(installationID uuid.UUID) {
	f.mu.Lock()
	delete(f.clients, installationID)
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
