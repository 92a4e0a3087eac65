-- +goose Up
-- One live installation per tenant and provider account: a second connect of the same Bitbucket
-- account is refused (or re-authorizes the installation that needs it) instead of creating a
-- twin that would list, back up and alert on every repository twice. Removed installations do
-- not count, so an uninstalled account can be connected again.
-- +goose StatementBegin
DO $$
DECLARE dup record;
BEGIN
    SELECT tenant_id, provider, account_uuid, string_agg(id::text, ', ' ORDER BY created_at) AS ids INTO dup
      FROM installations
     WHERE account_uuid IS NOT NULL AND status <> 'removed'
     GROUP BY tenant_id, provider, account_uuid HAVING count(*) > 1
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tenant % has installations % of the same % account %; uninstall all but one (DELETE /api/v1/installations/{id}) before upgrading',
            dup.tenant_id, dup.ids, dup.provider, dup.account_uuid;
    END IF;
END $$;
-- +goose StatementEnd
CREATE UNIQUE INDEX installations_tenant_account ON installations (tenant_id, provider, account_uuid)
    WHERE account_uuid IS NOT NULL AND status <> 'removed';

-- +goose Down
DROP INDEX installations_tenant_account;
