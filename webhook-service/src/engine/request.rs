//! Building the request of one attempt, by delivery kind.
//!
//! - `webhook`: the endpoint's **current** URL and extra headers, `content-type:
//!   application/json`, the Standard Webhooks headers signed with the current secret (and the
//!   previous one during a rotation), the message's payload. `webhook-id` is
//!   `msg_<message id, simple>`: the same for every attempt and every endpoint of a message.
//! - `job`: the stored URL, method, headers, body and timeout.
//! - `sms`: the stored recipient and text, sent by the gateway of the current settings
//!   ([`crate::sms::gateway`]); a `file://` request is written by the engine, not sent.
//! - `notify`: as stored (built by `jobs::notify_delivery_in`), signed here at each attempt with
//!   the job's `notify_secret` (`webhook-id` `msg_<notify delivery id, simple>`, a fresh
//!   `webhook-timestamp`); stored `webhook-*` headers are replaced.
//!
//! Every request carries a `traceparent` continuing the delivery's trace with a new span id.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::{
    egress::OutboundRequest,
    entity::{delivery, endpoint, job, message},
    settings::Settings,
    signing::{self, Secret},
};

/// Headers this service sets on a webhook; an endpoint's extra header of the same name is
/// dropped.
const WEBHOOK_SET: &[&str] = &[
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    common::trace::headers::TRACEPARENT,
];
/// Headers this service sets on a signed `notify` report.
const NOTIFY_SET: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    common::trace::headers::TRACEPARENT,
];
/// Headers this service sets on a job request.
const JOB_SET: &[&str] = &[common::trace::headers::TRACEPARENT];

/// What an attempt does.
pub(super) enum Prepared {
    /// Make this call; `endpoint` is the webhook's endpoint (for its health).
    Send {
        request: OutboundRequest,
        endpoint: Option<Uuid>,
    },
    /// Make no call: the delivery ends now, in `status`, with `reason` as its last error.
    Skip {
        status: &'static str,
        reason: &'static str,
    },
}

/// The endpoints and messages of the webhook deliveries of one claim, read in two statements
/// right after the claim rather than two per attempt. An attempt thus uses its endpoint's URL,
/// headers and secrets as they were when its delivery was claimed.
#[derive(Default)]
pub(super) struct Prefetched {
    endpoints: HashMap<Uuid, endpoint::Model>,
    messages: HashMap<Uuid, message::Model>,
}

/// Reads the endpoints and messages of the webhook deliveries among `rows`.
///
/// # Errors
/// Any database error.
pub(super) async fn prefetch<'a>(
    conn: &impl ConnectionTrait,
    rows: impl Iterator<Item = &'a delivery::Model>,
) -> Result<Prefetched, DbErr> {
    let (mut endpoint_ids, mut message_ids) = (Vec::new(), Vec::new());
    for row in rows.filter(|row| row.kind == delivery::kind::WEBHOOK) {
        endpoint_ids.extend(row.endpoint_id);
        message_ids.extend(row.message_id);
    }
    if endpoint_ids.is_empty() && message_ids.is_empty() {
        return Ok(Prefetched::default());
    }
    for ids in [&mut endpoint_ids, &mut message_ids] {
        ids.sort_unstable();
        ids.dedup();
    }
    let endpoints = endpoint::Entity::find()
        .filter(endpoint::Column::Id.is_in(endpoint_ids))
        .all(conn)
        .await?;
    let messages = message::Entity::find()
        .filter(message::Column::Id.is_in(message_ids))
        .all(conn)
        .await?;
    Ok(Prefetched {
        endpoints: endpoints.into_iter().map(|e| (e.id, e)).collect(),
        messages: messages.into_iter().map(|m| (m.id, m)).collect(),
    })
}

/// The request of `delivery`'s next attempt at `now`, or why there is none. A webhook's
/// endpoint and message come from `prefetched` (read with the claim).
///
/// # Errors
/// Any database error (the attempt is then abandoned and its lease runs out).
pub(super) async fn prepare(
    conn: &impl ConnectionTrait,
    settings: &Settings,
    delivery: &delivery::Model,
    prefetched: &Prefetched,
    now: DateTime<Utc>,
) -> Result<Prepared, DbErr> {
    let timeout = Duration::from_millis(u64::try_from(delivery.timeout_ms).unwrap_or(0)).clamp(
        Duration::from_millis(1),
        settings.webhook_max_request_timeout,
    );
    let traceparent = common::trace::child_traceparent(delivery.traceparent.as_deref());
    match delivery.kind.as_str() {
        delivery::kind::WEBHOOK => Ok(webhook(prefetched, delivery, now, timeout, traceparent)),
        delivery::kind::SMS => Ok(
            match crate::sms::gateway::request(settings, delivery, timeout, traceparent) {
                Some(request) => Prepared::Send {
                    request,
                    endpoint: None,
                },
                None => Prepared::Skip {
                    status: delivery::status::FAILED,
                    reason: crate::sms::UNREADABLE,
                },
            },
        ),
        kind => {
            let is_notify = kind == delivery::kind::NOTIFY;
            let set = if is_notify { NOTIFY_SET } else { JOB_SET };
            let mut headers = stored_headers(&delivery.headers, set);
            if is_notify {
                let body = delivery.body.as_deref().unwrap_or_default().as_bytes();
                if let Some(secret) = notify_secret(conn, delivery).await? {
                    let msg_id = format!("msg_{}", delivery.id.simple());
                    headers.extend(
                        signing::headers(&[&secret], &msg_id, now.timestamp(), body)
                            .map(|(name, value)| (name.to_owned(), value)),
                    );
                }
            }
            headers.push((common::trace::headers::TRACEPARENT.to_owned(), traceparent));
            Ok(Prepared::Send {
                request: OutboundRequest {
                    url: delivery.url.clone(),
                    method: delivery.method.clone(),
                    headers,
                    body: delivery.body.clone().unwrap_or_default().into_bytes(),
                    timeout,
                },
                endpoint: None,
            })
        }
    }
}

fn webhook(
    prefetched: &Prefetched,
    delivery: &delivery::Model,
    now: DateTime<Utc>,
    timeout: Duration,
    traceparent: String,
) -> Prepared {
    let skip = |status, reason| Prepared::Skip { status, reason };
    let endpoint = delivery
        .endpoint_id
        .and_then(|id| prefetched.endpoints.get(&id));
    let Some(endpoint) = endpoint else {
        return skip(delivery::status::CANCELLED, "endpoint_deleted");
    };
    if !endpoint.enabled {
        return skip(delivery::status::FAILED, "endpoint_disabled");
    }
    let message = delivery
        .message_id
        .and_then(|id| prefetched.messages.get(&id));
    let Some(message) = message else {
        return skip(delivery::status::FAILED, "message_missing");
    };
    let Ok(current) = Secret::parse(&endpoint.secret) else {
        tracing::error!(endpoint_id = %endpoint.id, "the endpoint's secret does not parse");
        return skip(delivery::status::FAILED, "invalid_secret");
    };
    let previous = endpoint
        .previous_secret
        .as_deref()
        .filter(|_| {
            endpoint
                .previous_secret_until
                .is_some_and(|until| until > now)
        })
        .and_then(|text| Secret::parse(text).ok());
    let mut secrets = vec![&current];
    secrets.extend(previous.as_ref());

    let body = message.payload.clone().into_bytes();
    let msg_id = format!("msg_{}", message.id.simple());
    let mut headers: Vec<(String, String)> = match &endpoint.headers {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(name, _)| !is_one_of(name, WEBHOOK_SET))
            .map(|(name, value)| {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                (name.clone(), value)
            })
            .collect(),
        _ => Vec::new(),
    };
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    headers.extend(
        signing::headers(&secrets, &msg_id, now.timestamp(), &body)
            .map(|(name, value)| (name.to_owned(), value)),
    );
    headers.push((common::trace::headers::TRACEPARENT.to_owned(), traceparent));
    Prepared::Send {
        request: OutboundRequest {
            url: endpoint.url.clone(),
            method: "POST".to_owned(),
            headers,
            body,
            timeout,
        },
        endpoint: Some(endpoint.id),
    }
}

/// The job's `notify_secret`, when the notify delivery's job has one.
async fn notify_secret(
    conn: &impl ConnectionTrait,
    delivery: &delivery::Model,
) -> Result<Option<Secret>, DbErr> {
    let Some(job_id) = delivery.job_id else {
        return Ok(None);
    };
    let job = job::Entity::find_by_id(job_id).one(conn).await?;
    let text = job.and_then(|job| job.notify_secret);
    Ok(text.and_then(|text| match Secret::parse(&text) {
        Ok(secret) => Some(secret),
        Err(_) => {
            tracing::error!(%job_id, "the job's notify secret does not parse; sending unsigned");
            None
        }
    }))
}

/// A stored JSON array of `[name, value]` pairs, the names in `set` left out.
fn stored_headers(json: &serde_json::Value, set: &[&str]) -> Vec<(String, String)> {
    serde_json::from_value::<Vec<(String, String)>>(json.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| !is_one_of(name, set))
        .collect()
}

fn is_one_of(name: &str, set: &[&str]) -> bool {
    set.iter().any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_keep_order_and_drop_the_ones_set_here() {
        let json = serde_json::json!([
            ["authorization", "Bearer x"],
            ["Webhook-Signature", "v1,forged"],
            ["TraceParent", "00-…"],
            ["content-type", "application/json"]
        ]);
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            stored_headers(&json, NOTIFY_SET),
            vec![
                pair("authorization", "Bearer x"),
                pair("content-type", "application/json")
            ]
        );
        assert_eq!(
            stored_headers(&json, JOB_SET),
            vec![
                pair("authorization", "Bearer x"),
                pair("Webhook-Signature", "v1,forged"),
                pair("content-type", "application/json")
            ]
        );
        assert!(stored_headers(&serde_json::json!({"not": "a list"}), JOB_SET).is_empty());
    }
}
