-- The user-service database is created by POSTGRES_DB; the email-service inbox gets its own.
CREATE DATABASE email;
