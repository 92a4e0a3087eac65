// Package websession holds the secrets of dashboard sign-in: session cookies, their CSRF tokens
// and single-use login links. The database keeps only SHA-256 hashes of the secrets.
package websession

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

const (
	// CookieName carries the session's secret; it is HttpOnly, so page scripts never see it.
	CookieName = "gitsec_session"
	// SessionTTL is how long a browser stays signed in; the cookie's Max-Age matches it.
	SessionTTL = 12 * time.Hour
	// LoginLinkTTL is how long a printed login link can be used (once).
	LoginLinkTTL = 10 * time.Minute
	// LoginLinkPath is where a login link lands.
	LoginLinkPath = "/signin/link"
	// Home is the dashboard's first page.
	Home = "/"
	// ViaLoginLink and ViaAPIToken say how a session was signed in.
	ViaLoginLink = "login_link"
	ViaAPIToken  = "api_token"
)

// NewSecret returns 32 random bytes, base64url-encoded.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random session secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash is what the database stores for a secret.
func Hash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// CSRFToken derives the session's CSRF token from its secret: the page carries the token, the
// cookie the secret, and another site can read neither, so a forged request cannot send both.
// Deriving it means nothing more is stored, and it dies with the session.
func CSRFToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("gitsec csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF compares in constant time.
func CheckCSRF(secret, token string) bool {
	return token != "" && hmac.Equal([]byte(CSRFToken(secret)), []byte(token))
}

// CheckNext accepts only a path on this host ("/repositories/bitbucket?q=x"): never a scheme,
// another host, or a path a browser would read as one ("//evil", "/\evil").
func CheckNext(p string) (string, error) {
	if p == "" {
		return Home, nil
	}
	bad := fmt.Errorf("next path %q must be a relative path on this host starting with a single '/' (for example /repositories/bitbucket)", p)
	if len(p) > 2000 || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, `/\`) {
		return "", bad
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "", bad
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "", bad
	}
	return p, nil
}

// IssueLoginLink stores a new single-use link for the tenant and returns its URL on publicURL.
func IssueLoginLink(ctx context.Context, st *store.Store, tenantID uuid.UUID, publicURL, next string, now time.Time) (string, time.Time, error) {
	next, err := CheckNext(next)
	if err != nil {
		return "", time.Time{}, err
	}
	secret, err := NewSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	expires := now.Add(LoginLinkTTL)
	if err := st.CreateLoginLink(ctx, tenantID, Hash(secret), next, expires); err != nil {
		return "", time.Time{}, err
	}
	return strings.TrimRight(publicURL, "/") + LoginLinkPath + "?token=" + secret, expires, nil
}
