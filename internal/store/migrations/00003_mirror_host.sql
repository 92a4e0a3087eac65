-- +goose Up
-- The host task queue of the worker that keeps a repository's mirror, so the next backup goes
-- where the mirror is (a different worker would have to hydrate it from storage first).
ALTER TABLE repositories ADD COLUMN mirror_host text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE repositories DROP COLUMN mirror_host;
