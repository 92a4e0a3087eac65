package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
)

// stateSigner issues and checks OAuth state values: "<payload>.<mac>", where payload is the
// tenant ID and a random nonce. The MAC rejects forged or tampered states before any lookup;
// the nonce row in oauth_states makes each state single-use and short-lived.
type stateSigner struct {
	store *store.Store
	box   *secretbox.Box

	mu  sync.Mutex
	key []byte
}

var errBadState = errors.New("the OAuth state is invalid, expired or already used; start again with POST /api/v1/installations/bitbucket/connect")

func (s *stateSigner) signingKey(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	candidate := make([]byte, 32)
	if _, err := rand.Read(candidate); err != nil {
		return nil, err
	}
	sealed, err := s.box.Encrypt(ctx, candidate)
	if err != nil {
		return nil, err
	}
	stored, err := s.store.AppSecret(ctx, "oauth_state_signing_key", sealed)
	if err != nil {
		return nil, err
	}
	key, err := s.box.Decrypt(ctx, stored)
	if err != nil {
		return nil, fmt.Errorf("oauth state key: %w", err)
	}
	s.key = key
	return key, nil
}

// issue returns a new state for the tenant; the caller stores the nonce.
func (s *stateSigner) issue(ctx context.Context, tenantID uuid.UUID) (state, nonce string, err error) {
	key, err := s.signingKey(ctx)
	if err != nil {
		return "", "", err
	}
	n := make([]byte, 24)
	if _, err := rand.Read(n); err != nil {
		return "", "", err
	}
	nonce = base64.RawURLEncoding.EncodeToString(n)
	payload := base64.RawURLEncoding.EncodeToString(append(tenantID[:], n...))
	return payload + "." + mac(key, payload), nonce, nil
}

// verify checks the MAC and returns the tenant and nonce the state was issued for.
func (s *stateSigner) verify(ctx context.Context, state string) (uuid.UUID, string, error) {
	payload, sig, ok := strings.Cut(state, ".")
	if !ok || payload == "" || sig == "" {
		return uuid.Nil, "", errBadState
	}
	key, err := s.signingKey(ctx)
	if err != nil {
		return uuid.Nil, "", err
	}
	if !hmac.Equal([]byte(sig), []byte(mac(key, payload))) {
		return uuid.Nil, "", errBadState
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || len(raw) != 16+24 {
		return uuid.Nil, "", errBadState
	}
	tenantID, _ := uuid.FromBytes(raw[:16])
	return tenantID, base64.RawURLEncoding.EncodeToString(bytes.Clone(raw[16:])), nil
}

func mac(key []byte, payload string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
