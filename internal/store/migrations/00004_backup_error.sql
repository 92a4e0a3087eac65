-- +goose Up
-- Why the repository's last backup failed (Bitbucket's answer, e.g. a 403 on this repository
-- alone), shown with the repository; cleared by the next backup that succeeds.
ALTER TABLE repositories ADD COLUMN last_backup_error text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE repositories DROP COLUMN last_backup_error;
