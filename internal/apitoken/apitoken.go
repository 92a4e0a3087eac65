// Package apitoken creates and checks GitSec API tokens. A token is "gsk_" followed by 43
// base64url characters (32 random bytes); only its SHA-256 is stored, so a database leak does
// not leak usable tokens.
package apitoken

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Prefix marks GitSec API tokens so secret scanners and humans recognise them.
const Prefix = "gsk_"

const encodedLen = 43 // base64url of 32 bytes, unpadded

// ErrMalformed means the string cannot be a GitSec token; no lookup is needed.
var ErrMalformed = errors.New("malformed api token")

// New returns a fresh token, its SHA-256 and a prefix that is safe to display.
func New() (token string, sha []byte, displayPrefix string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, "", fmt.Errorf("generate api token: %w", err)
	}
	token = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, Hash(token), DisplayPrefix(token), nil
}

// Hash returns the SHA-256 the store keeps for a token.
func Hash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// DisplayPrefixLen is the length of a display prefix: "gsk_" and 6 characters (36 random bits).
const DisplayPrefixLen = len(Prefix) + 6

// DisplayPrefix is the part of a token shown in listings: enough to tell tokens apart.
func DisplayPrefix(token string) string {
	if len(token) < DisplayPrefixLen {
		return Prefix
	}
	return token[:DisplayPrefixLen]
}

// Check validates the token's shape before any database lookup.
func Check(token string) error {
	if !strings.HasPrefix(token, Prefix) || len(token) != len(Prefix)+encodedLen {
		return ErrMalformed
	}
	if _, err := base64.RawURLEncoding.DecodeString(token[len(Prefix):]); err != nil {
		return ErrMalformed
	}
	return nil
}
