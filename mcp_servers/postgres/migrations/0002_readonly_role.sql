-- A NOLOGIN role with SELECT only on the registry: postgres_query runs as it
-- (SET LOCAL ROLE) inside a READ ONLY transaction. Roles are cluster-wide and
-- several databases may migrate at once, so creation tolerates a concurrent twin.
-- Where the connecting user may not create roles, this is skipped and the server
-- relies on the SQL guard and the READ ONLY transaction alone.
DO $$
DECLARE
    can_create boolean;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO can_create FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'neonblue_readonly') THEN
        IF NOT can_create THEN
            RAISE NOTICE 'neonblue: cannot create role neonblue_readonly (no CREATEROLE); postgres_query will run without it';
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE neonblue_readonly NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'neonblue_readonly', 'MEMBER') THEN
        BEGIN
            GRANT neonblue_readonly TO CURRENT_USER;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'neonblue: cannot grant neonblue_readonly to %', current_user;
        END;
    END IF;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM neonblue_readonly', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO neonblue_readonly', current_database());
    GRANT USAGE ON SCHEMA neonblue TO neonblue_readonly;
    GRANT SELECT ON ALL TABLES IN SCHEMA neonblue TO neonblue_readonly;
    ALTER DEFAULT PRIVILEGES IN SCHEMA neonblue GRANT SELECT ON TABLES TO neonblue_readonly;
END $$;
