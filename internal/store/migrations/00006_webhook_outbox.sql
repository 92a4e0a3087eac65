-- +goose Up
-- Webhook deliveries become an outbox: the receiver stores what it needs to act (parsed from the
-- payload) and a compressed copy of the raw body before it answers Bitbucket, then a dispatcher
-- acts and sets processed_at. Rows left unprocessed (Temporal was down, the process died) are
-- picked up again by the re-driver at next_attempt_at.
ALTER TABLE webhook_deliveries
    ADD COLUMN attempt          integer NOT NULL DEFAULT 1,
    ADD COLUMN repository_uuid  text NOT NULL DEFAULT '',
    ADD COLUMN action           jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN body_sha256      bytea,
    ADD COLUMN body_gzip        bytea,
    ADD COLUMN result           text NOT NULL DEFAULT '',
    ADD COLUMN tries            integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error       text NOT NULL DEFAULT '',
    ADD COLUMN next_attempt_at  timestamptz NOT NULL DEFAULT now();
CREATE INDEX webhook_deliveries_unprocessed ON webhook_deliveries (next_attempt_at) WHERE processed_at IS NULL;
CREATE INDEX webhook_deliveries_installation ON webhook_deliveries (installation_id, received_at DESC);

-- Deliveries refused before they were stored (bad signature, malformed body, too large), for the
-- installation's webhook health. Requests for unknown installations have no row to attach to:
-- they are only counted in the metrics.
CREATE TABLE webhook_rejections (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    installation_id  uuid NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    reason           text NOT NULL,
    event_key        text NOT NULL DEFAULT '',
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_rejections_installation ON webhook_rejections (installation_id, received_at DESC);

-- Leases let one of several API processes run a background loop (the webhook re-driver).
CREATE TABLE leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Freshness: when the last push was received, and up to when the repository is known to be backed
-- up (the start of the last successful run: a push received before it is in that run's backup).
ALTER TABLE repositories
    ADD COLUMN last_push_at       timestamptz,
    ADD COLUMN backed_up_through  timestamptz;
-- The receipt time of the oldest push a webhook-triggered snapshot covers.
ALTER TABLE snapshots ADD COLUMN pushed_at timestamptz;

-- +goose Down
ALTER TABLE snapshots DROP COLUMN pushed_at;
ALTER TABLE repositories DROP COLUMN backed_up_through, DROP COLUMN last_push_at;
DROP TABLE leases;
DROP TABLE webhook_rejections;
DROP INDEX webhook_deliveries_installation;
DROP INDEX webhook_deliveries_unprocessed;
ALTER TABLE webhook_deliveries
    DROP COLUMN attempt, DROP COLUMN repository_uuid, DROP COLUMN action, DROP COLUMN body_sha256,
    DROP COLUMN body_gzip, DROP COLUMN result, DROP COLUMN tries, DROP COLUMN last_error,
    DROP COLUMN next_attempt_at;
