-- +goose Up
-- Every row that belongs to a tenant carries tenant_id; store queries always filter by it.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a token is stored; the token itself is shown once at creation.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    token_sha256  bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    display_prefix text NOT NULL,
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);

CREATE TABLE installations (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider          text NOT NULL CHECK (provider IN ('bitbucket')),
    account_uuid      text,
    account_name      text,
    status            text NOT NULL DEFAULT 'pending',
    status_message    text NOT NULL DEFAULT '',
    -- OAuth tokens, encrypted with the configured secrets keeper; never stored in clear.
    credentials_encrypted bytea,
    default_included  boolean NOT NULL DEFAULT true,
    progress          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX installations_tenant ON installations (tenant_id);

CREATE TABLE workspaces (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    installation_id    uuid NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    provider_uuid      text NOT NULL,
    slug               text NOT NULL,
    name               text NOT NULL DEFAULT '',
    is_admin           boolean NOT NULL DEFAULT false,
    status             text NOT NULL DEFAULT 'pending',
    status_reason      text NOT NULL DEFAULT '',
    webhook_uuid       text,
    webhook_secret_encrypted bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (installation_id, provider_uuid)
);
CREATE INDEX workspaces_tenant ON workspaces (tenant_id);

CREATE TABLE repositories (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    installation_id    uuid NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    workspace_id       uuid REFERENCES workspaces(id) ON DELETE SET NULL,
    provider_uuid      text NOT NULL,
    full_name          text NOT NULL,
    main_branch        text NOT NULL DEFAULT '',
    size_bytes         bigint NOT NULL DEFAULT 0,
    is_private         boolean NOT NULL DEFAULT true,
    included           boolean NOT NULL DEFAULT true,
    status             text NOT NULL DEFAULT 'active',
    last_backup_status text NOT NULL DEFAULT 'never',
    last_backup_at     timestamptz,
    last_checked_at    timestamptz,
    last_snapshot_id   text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (installation_id, provider_uuid)
);
CREATE INDEX repositories_tenant_name ON repositories (tenant_id, full_name, id);

-- The manifest in object storage is the source of truth; this row is what the dashboard lists.
CREATE TABLE snapshots (
    id              text PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    repository_id   uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    manifest_key    text NOT NULL,
    trigger         text NOT NULL,
    parent_id       text,
    refs_count      integer NOT NULL DEFAULT 0,
    packs_count     integer NOT NULL DEFAULT 0,
    bytes_uploaded  bigint NOT NULL DEFAULT 0,
    total_bytes     bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX snapshots_repository ON snapshots (tenant_id, repository_id, id DESC);

CREATE TABLE restores (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    repository_id   uuid REFERENCES repositories(id) ON DELETE SET NULL,
    snapshot_id     text NOT NULL,
    target          text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    status_message  text NOT NULL DEFAULT '',
    workflow_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX restores_tenant ON restores (tenant_id, created_at DESC);

-- Webhook outbox and de-duplication: Bitbucket retries a delivery with the same X-Request-UUID.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    installation_id  uuid NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    delivery_uuid    uuid NOT NULL UNIQUE,
    event_key        text NOT NULL,
    hook_uuid        text NOT NULL DEFAULT '',
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- Single-use, short-lived OAuth state values bound to a tenant.
CREATE TABLE oauth_states (
    nonce        text PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider     text NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expires ON oauth_states (expires_at);

CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    actor        text NOT NULL,
    action       text NOT NULL,
    target_type  text NOT NULL DEFAULT '',
    target_id    text NOT NULL DEFAULT '',
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id DESC);

-- +goose Down
DROP TABLE audit_events;
DROP TABLE oauth_states;
DROP TABLE webhook_deliveries;
DROP TABLE restores;
DROP TABLE snapshots;
DROP TABLE repositories;
DROP TABLE workspaces;
DROP TABLE installations;
DROP TABLE api_tokens;
DROP TABLE tenants;
