#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d, run once on an empty data volume): one
# login role and one database per service, each password from .env, so a service's credentials
# open nothing else.
#   user_service   owns the `users` database: it creates the tables (migrations), the outbox
#                  included.
#   outbox_relay   may connect to `users` and read, update and delete rows of the `outbox`
#                  table only (claim, mark published, record failures, purge). The table does
#                  not exist yet: the user-service's migration creates it, and an event trigger
#                  grants these rights the moment it does.
#   email_service  owns the `email` database (its inbox).
#   webhook_service owns the `webhooks` database (endpoints, messages, jobs, deliveries).
# Nobody else may connect to any of these databases. The superuser (POSTGRES_PASSWORD) is for the
# operator only; no service uses it.
set -eu

for variable in POSTGRES_USER_SERVICE_PASSWORD POSTGRES_OUTBOX_RELAY_PASSWORD \
  POSTGRES_EMAIL_SERVICE_PASSWORD POSTGRES_WEBHOOK_SERVICE_PASSWORD; do
  eval "value=\${$variable:-}"
  if [ -z "$value" ]; then
    echo "postgres-init: $variable is not set (see .env.template)" >&2
    exit 1
  fi
done

# psql's :'name' quotes each password as a literal, whatever characters it has.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v user_service_password="$POSTGRES_USER_SERVICE_PASSWORD" \
  -v outbox_relay_password="$POSTGRES_OUTBOX_RELAY_PASSWORD" \
  -v email_service_password="$POSTGRES_EMAIL_SERVICE_PASSWORD" \
  -v webhook_service_password="$POSTGRES_WEBHOOK_SERVICE_PASSWORD" <<'SQL'
CREATE ROLE user_service LOGIN PASSWORD :'user_service_password';
CREATE ROLE outbox_relay LOGIN PASSWORD :'outbox_relay_password';
CREATE ROLE email_service LOGIN PASSWORD :'email_service_password';
CREATE ROLE webhook_service LOGIN PASSWORD :'webhook_service_password';

CREATE DATABASE users OWNER user_service;
CREATE DATABASE email OWNER email_service;
CREATE DATABASE webhooks OWNER webhook_service;
REVOKE ALL ON DATABASE users FROM PUBLIC;
REVOKE ALL ON DATABASE email FROM PUBLIC;
REVOKE ALL ON DATABASE webhooks FROM PUBLIC;
GRANT CONNECT ON DATABASE users TO outbox_relay;

\connect users
ALTER SCHEMA public OWNER TO user_service;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO outbox_relay;

-- Runs after every CREATE TABLE in `users` (as the role that ran it: the user-service, which
-- owns the new table and so may grant on it) and gives the relay what it needs on `outbox`.
CREATE FUNCTION grant_outbox_to_relay() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE TABLE' AND object_identity = 'public.outbox') THEN
        GRANT SELECT, UPDATE, DELETE ON public.outbox TO outbox_relay;
    END IF;
END
$$;
CREATE EVENT TRIGGER grant_outbox_to_relay ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION grant_outbox_to_relay();
SQL
