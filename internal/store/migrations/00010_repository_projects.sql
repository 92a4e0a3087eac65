-- +goose Up
-- The Bitbucket project a repository belongs to (every workspace repository has one), so the
-- dashboard can show and group by it. '' until discovery or a webhook has told us.
ALTER TABLE repositories ADD COLUMN project_key text NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN project_name text NOT NULL DEFAULT '';

-- The dashboard's activity feed pages the tenant's snapshots newest first across all its
-- repositories; snapshots_repository orders them per repository only, which would sort every
-- snapshot of the tenant for each page.
CREATE INDEX snapshots_tenant_finished ON snapshots (tenant_id, finished_at DESC, id DESC);

-- +goose Down
DROP INDEX snapshots_tenant_finished;
ALTER TABLE repositories DROP COLUMN project_name;
ALTER TABLE repositories DROP COLUMN project_key;
