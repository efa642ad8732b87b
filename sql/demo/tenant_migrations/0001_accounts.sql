-- The fintech demo's tenant migration: what each schema or database tenant
-- of `pgtenant dev` (monzo, starling) starts with. It runs as the tenant's
-- own role, in its own schema or database; no tenant column, no policy: the
-- tenant's privileges alone keep other tenants out.
CREATE TABLE accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    iban       text NOT NULL UNIQUE,
    holder     text NOT NULL,
    balance    numeric(14, 2) NOT NULL DEFAULT 0,
    opened_at  timestamptz NOT NULL DEFAULT now()
);
