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
// tenant ID, a random nonce and the hash of a binding secret held by the client that asked.
// The MAC rejects forged or tampered states before any lookup; the nonce row in oauth_states
// makes each state single-use and short-lived; the binding ties it to one browser or client.
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

// issuedState is a new connect link's state. Nonce goes into oauth_states (single use, expiry);
// Binding goes to the client that asked, as a cookie; the state carries only Binding's hash, so
// whoever merely holds the link cannot complete it.
type issuedState struct {
	State, Nonce, Binding string
}

// verifiedState is what a state with a valid MAC was issued for.
type verifiedState struct {
	TenantID    uuid.UUID
	Nonce       string
	bindingHash []byte
}

// boundTo reports whether binding is the secret this state was issued with.
func (v verifiedState) boundTo(binding string) bool {
	sum := sha256.Sum256([]byte(binding))
	return hmac.Equal(sum[:], v.bindingHash)
}

const (
	nonceLen   = 24
	bindingLen = 32
	// statePayloadLen: tenant ID, nonce, SHA-256 of the binding.
	statePayloadLen = 16 + nonceLen + sha256.Size
)

// issue returns a new state for the tenant.
func (s *stateSigner) issue(ctx context.Context, tenantID uuid.UUID) (issuedState, error) {
	key, err := s.signingKey(ctx)
	if err != nil {
		return issuedState{}, err
	}
	n := make([]byte, nonceLen+bindingLen)
	if _, err := rand.Read(n); err != nil {
		return issuedState{}, err
	}
	nonce, binding := n[:nonceLen], base64.RawURLEncoding.EncodeToString(n[nonceLen:])
	bindingHash := sha256.Sum256([]byte(binding))
	raw := append(append(append([]byte{}, tenantID[:]...), nonce...), bindingHash[:]...)
	payload := base64.RawURLEncoding.EncodeToString(raw)
	return issuedState{
		State:   payload + "." + mac(key, payload),
		Nonce:   base64.RawURLEncoding.EncodeToString(nonce),
		Binding: binding,
	}, nil
}

// verify checks the MAC and returns what the state was issued for.
func (s *stateSigner) verify(ctx context.Context, state string) (verifiedState, error) {
	payload, sig, ok := strings.Cut(state, ".")
	if !ok || payload == "" || sig == "" {
		return verifiedState{}, errBadState
	}
	key, err := s.signingKey(ctx)
	if err != nil {
		return verifiedState{}, err
	}
	if !hmac.Equal([]byte(sig), []byte(mac(key, payload))) {
		return verifiedState{}, errBadState
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || len(raw) != statePayloadLen {
		return verifiedState{}, errBadState
	}
	tenantID, _ := uuid.FromBytes(raw[:16])
	return verifiedState{
		TenantID:    tenantID,
		Nonce:       base64.RawURLEncoding.EncodeToString(raw[16 : 16+nonceLen]),
		bindingHash: bytes.Clone(raw[16+nonceLen:]),
	}, nil
}

func mac(key []byte, payload string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
