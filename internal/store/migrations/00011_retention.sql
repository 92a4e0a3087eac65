-- +goose Up
-- Retention policies: an installation's is the default of its repositories, a repository's
-- overrides it; NULL means "inherit" (the installation's, else GitSec's default). The JSON is
-- internal/retention's policy document.
ALTER TABLE installations ADD COLUMN retention_policy jsonb;
ALTER TABLE repositories ADD COLUMN retention_policy jsonb;
-- The outcome of the repository's last retention run, for the API and the dashboard.
ALTER TABLE repositories ADD COLUMN retention_ran_at timestamptz;
ALTER TABLE repositories ADD COLUMN retention_result jsonb;

-- A legal hold keeps a snapshot whatever the policy says, until it is released.
ALTER TABLE snapshots ADD COLUMN legal_hold_reason text;
ALTER TABLE snapshots ADD COLUMN legal_hold_by text;
ALTER TABLE snapshots ADD COLUMN legal_hold_at timestamptz;

-- The sweep's marks: objects a retention run found unreferenced, with when it first did. An
-- object is deleted only once it has stayed unreferenced for the grace period; last_error
-- records why a due delete was refused (an object lock).
CREATE TABLE retention_marks (
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    repository_id uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    object_key    text NOT NULL,
    size_bytes    bigint NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_error    text NOT NULL DEFAULT '',
    PRIMARY KEY (repository_id, object_key)
);

-- Leases on a repository's storage prefix (see Store.AcquireStorageLease): backups staging
-- objects share it, a retention sweep takes it alone.
CREATE TABLE storage_leases (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    repository_id uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('staging', 'sweep')),
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_leases_repository ON storage_leases (repository_id);

-- +goose Down
DROP TABLE storage_leases;
DROP TABLE retention_marks;
ALTER TABLE snapshots DROP COLUMN legal_hold_at;
ALTER TABLE snapshots DROP COLUMN legal_hold_by;
ALTER TABLE snapshots DROP COLUMN legal_hold_reason;
ALTER TABLE repositories DROP COLUMN retention_result;
ALTER TABLE repositories DROP COLUMN retention_ran_at;
ALTER TABLE repositories DROP COLUMN retention_policy;
ALTER TABLE installations DROP COLUMN retention_policy;
