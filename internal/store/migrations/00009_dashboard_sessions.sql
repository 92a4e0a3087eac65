-- +goose Up
-- Browser sessions of the dashboard. Only the SHA-256 of the cookie's secret is stored, so a
-- database dump cannot sign anyone in; a session ends when it expires or is revoked (sign-out).
CREATE TABLE sessions (
    id_hash      bytea PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- How the browser signed in: login_link or api_token (the display prefix is in the audit log).
    via          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX sessions_tenant ON sessions (tenant_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Single-use sign-in links that `gitsec admin login-link` prints; hashed like sessions.
CREATE TABLE login_links (
    id_hash      bytea PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    next_path    text NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_links_expires ON login_links (expires_at);

-- Where a browser that started a connect from the dashboard goes back to ('' for API clients).
ALTER TABLE oauth_states ADD COLUMN return_to text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE oauth_states DROP COLUMN return_to;
DROP TABLE login_links;
DROP TABLE sessions;
