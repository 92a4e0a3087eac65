// Package secretbox encrypts secrets at rest (OAuth tokens, webhook secrets) with a
// gocloud.dev/secrets keeper: base64key:// locally, a KMS or Vault in production.
package secretbox

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"gocloud.dev/secrets"
	_ "gocloud.dev/secrets/localsecrets" // base64key:// and stringkey://
)

// Box encrypts and decrypts small secrets.
type Box struct {
	keeper *secrets.Keeper
}

// Open opens the keeper named by the URL. The URL holds key material, so errors never echo it.
func Open(ctx context.Context, keeperURL string) (*Box, error) {
	k, err := secrets.OpenKeeper(ctx, keeperURL)
	if err != nil {
		return nil, errors.New("open GITSEC_SECRETS_KEY_URL: the keeper URL is invalid or unreachable (for local use: base64key:// followed by 32 base64 bytes)")
	}
	b := &Box{keeper: k}
	// A wrong key only shows at first use; fail at start instead.
	probe, err := b.Encrypt(ctx, []byte("probe"))
	if err == nil {
		_, err = b.Decrypt(ctx, probe)
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("GITSEC_SECRETS_KEY_URL: keeper cannot encrypt: %w", err)
	}
	return b, nil
}

// Encrypt seals plaintext.
func (b *Box) Encrypt(ctx context.Context, plaintext []byte) ([]byte, error) {
	ct, err := b.keeper.Encrypt(ctx, plaintext)
	if err != nil {
		return nil, fmt.Errorf("encrypt secret: %w", err)
	}
	return ct, nil
}

// Decrypt opens ciphertext sealed by Encrypt.
func (b *Box) Decrypt(ctx context.Context, ciphertext []byte) ([]byte, error) {
	pt, err := b.keeper.Decrypt(ctx, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypt secret: %w", err)
	}
	return pt, nil
}

// Close releases the keeper.
func (b *Box) Close() error { return b.keeper.Close() }

// NewLocalKeyURL returns a fresh base64key:// URL for local and development use.
func NewLocalKeyURL() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return "base64key://" + base64.URLEncoding.EncodeToString(key), nil
}
