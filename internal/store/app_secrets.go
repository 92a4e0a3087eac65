package store

import (
	"context"
	"fmt"
)

// AppSecret returns the encrypted process-wide secret named name, storing candidate first when
// none exists yet. Every API instance thus agrees on one key (for example the OAuth state
// signing key) without it ever being stored in clear.
func (s *Store) AppSecret(ctx context.Context, name string, candidateEncrypted []byte) ([]byte, error) {
	var enc []byte
	err := s.pool.QueryRow(ctx,
		`WITH ins AS (
			INSERT INTO app_secrets (name, value_encrypted) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING RETURNING value_encrypted
		 )
		 SELECT value_encrypted FROM ins
		 UNION ALL
		 SELECT value_encrypted FROM app_secrets WHERE name = $1
		 LIMIT 1`, name, candidateEncrypted,
	).Scan(&enc)
	if err != nil {
		return nil, fmt.Errorf("app secret %s: %w", name, err)
	}
	return enc, nil
}
