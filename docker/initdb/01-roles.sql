-- Roles pgtenant expects (run once by the postgres image on a new volume).
-- The catalog owner owns the database, the pgtenant schema and tenant tables;
-- the two session roles own nothing and get their privileges from
-- `pgtenant migrate`.
CREATE ROLE pgtenant_owner LOGIN CREATEROLE PASSWORD 'owner-password';
CREATE ROLE pgtenant_app LOGIN PASSWORD 'app-password';
CREATE ROLE pgtenant_app_ro LOGIN PASSWORD 'app-ro-password';
ALTER DATABASE app OWNER TO pgtenant_owner;
ALTER SCHEMA public OWNER TO pgtenant_owner;
