//! Endpoints, public messages, jobs, deliveries (every outbound call) and their attempts.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
CREATE TABLE endpoints (
    id {uuid} PRIMARY KEY,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    event_types {json},
    headers {json} NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_until {ts},
    enabled boolean NOT NULL,
    disabled_reason text,
    failing_since {ts},
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL
);
CREATE TABLE messages (
    id {uuid} PRIMARY KEY,
    event_type text NOT NULL,
    payload text NOT NULL,
    traceparent text,
    created_at {ts} NOT NULL
);
CREATE INDEX messages_created_at ON messages (created_at);
CREATE TABLE jobs (
    id {uuid} PRIMARY KEY,
    idempotency_key text UNIQUE,
    request_fingerprint text NOT NULL,
    request {json} NOT NULL,
    notify {json},
    notify_secret text,
    created_at {ts} NOT NULL
);
CREATE TABLE deliveries (
    id {uuid} PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('webhook', 'job', 'notify', 'sms')),
    endpoint_id {uuid},
    message_id {uuid},
    job_id {uuid},
    url text NOT NULL,
    method text NOT NULL,
    headers {json} NOT NULL,
    body text,
    timeout_ms bigint NOT NULL,
    retry_schedule {json},
    fail_statuses {json},
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at {ts} NOT NULL,
    deadline {ts},
    last_status integer,
    last_error text,
    traceparent text,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    completed_at {ts}
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, status, created_at);
CREATE INDEX deliveries_job ON deliveries (job_id);
CREATE INDEX deliveries_completed_at ON deliveries (completed_at);
CREATE UNIQUE INDEX deliveries_message_endpoint ON deliveries (message_id, endpoint_id);
CREATE TABLE attempts (
    id {seq},
    delivery_id {uuid} NOT NULL,
    attempt integer NOT NULL,
    started_at {ts} NOT NULL,
    duration_ms bigint NOT NULL,
    url text NOT NULL,
    status integer,
    error_kind text,
    error text,
    response_headers {json},
    response_body text
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_started_at ON attempts (started_at)
";

const DOWN: &str = r"
DROP TABLE attempts;
DROP TABLE deliveries;
DROP TABLE jobs;
DROP TABLE messages;
DROP TABLE endpoints
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, DOWN).await
    }
}
