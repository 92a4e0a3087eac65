-- +goose Up
-- Process-wide secrets (such as the OAuth state signing key), encrypted with the secrets keeper.
CREATE TABLE app_secrets (
    name             text PRIMARY KEY,
    value_encrypted  bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE app_secrets;
