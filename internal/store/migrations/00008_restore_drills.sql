-- +goose Up
-- Restore drills: a snapshot restored into a scratch repository on a worker and checked (refs,
-- git fsck --strict, exports), with each step's outcome and timing. The latest drill of a
-- repository is its drill status; a failed one is an alert until a later drill passes.
CREATE TABLE restore_drills (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    repository_id  uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    snapshot_id    text NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    workflow_id    text NOT NULL,
    trigger        text NOT NULL,
    status         text NOT NULL,
    reason         text NOT NULL DEFAULT '',
    -- [{"name","status","duration_ms","detail"}] in run order.
    steps          jsonb NOT NULL DEFAULT '[]'::jsonb,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX restore_drills_repository ON restore_drills (tenant_id, repository_id, started_at DESC);
CREATE INDEX restore_drills_snapshot ON restore_drills (tenant_id, snapshot_id, started_at DESC);

-- +goose Down
DROP TABLE restore_drills;
