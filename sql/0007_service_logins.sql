-- Service logins: app servers' logins that belong to no tenant. Their
-- sessions carry the "no tenant" context (the nil uuid, which no tenant may
-- have), so they see no tenant rows by themselves.
ALTER TABLE pgtenant.logins ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE pgtenant.logins ADD COLUMN service boolean NOT NULL DEFAULT false;
ALTER TABLE pgtenant.logins ADD CONSTRAINT logins_service_has_no_tenant CHECK (service = (tenant_id IS NULL));
ALTER TABLE pgtenant.tenants ADD CONSTRAINT tenants_id_not_nil
    CHECK (id <> '00000000-0000-0000-0000-000000000000'::uuid);
