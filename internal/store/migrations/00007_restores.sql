-- +goose Up
-- The Restore App: a second Bitbucket grant per installation, with write access, kept apart
-- from the backup app's read-only credentials (installations.credentials_encrypted). A row
-- exists only while the grant does; DELETE drops it.
CREATE TABLE app_grants (
    installation_id       uuid NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    app                   text NOT NULL CHECK (app IN ('restore')),
    tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    account_uuid          text NOT NULL,
    account_name          text NOT NULL,
    -- OAuth tokens, encrypted with the configured secrets keeper; never stored in clear.
    credentials_encrypted bytea NOT NULL,
    granted_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (installation_id, app)
);

-- A connect link of the Restore App belongs to one installation.
ALTER TABLE oauth_states ADD COLUMN installation_id uuid REFERENCES installations(id) ON DELETE CASCADE;

-- Restores as the Restore workflow runs them. target is "workspace/slug"; the request, the
-- created repository and the outcome per ref and per pull request are kept for the audit.
ALTER TABLE restores
    ADD COLUMN installation_id       uuid REFERENCES installations(id) ON DELETE SET NULL,
    ADD COLUMN target_mode           text NOT NULL DEFAULT 'new',
    ADD COLUMN request               jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN created_repository    text NOT NULL DEFAULT '',
    ADD COLUMN step                  text NOT NULL DEFAULT '',
    ADD COLUMN result                jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN started_at            timestamptz,
    ADD COLUMN finished_at           timestamptz;
ALTER TABLE restores ALTER COLUMN status SET DEFAULT 'queued';
-- One restore at a time per target: a second one while the first is queued or running is
-- refused (409) instead of racing it.
CREATE UNIQUE INDEX restores_one_active_per_target ON restores (tenant_id, lower(target))
    WHERE status IN ('queued', 'running');

-- +goose Down
DROP INDEX restores_one_active_per_target;
ALTER TABLE restores
    DROP COLUMN installation_id, DROP COLUMN target_mode, DROP COLUMN request,
    DROP COLUMN created_repository, DROP COLUMN step, DROP COLUMN result,
    DROP COLUMN started_at, DROP COLUMN finished_at;
ALTER TABLE restores ALTER COLUMN status SET DEFAULT 'pending';
ALTER TABLE oauth_states DROP COLUMN installation_id;
DROP TABLE app_grants;
