//! Phone verification codes by SMS: each `PhoneVerificationRequestedV1` becomes one durable
//! delivery of kind `sms`, sent by the delivery engine through the gateway `SMS_GATEWAY`.
//!
//! - here: the delivery of an event ([`store`]: its id is the event's, so inserting it is the
//!   inbox check and a redelivered event sends no second SMS), its text, and the SMS metrics.
//! - `template`: `{name}` substitution for `SMS_TEMPLATE` and `SMS_HTTP_BODY`.
//! - `gateway`: the request of an attempt, built from the settings **at each attempt** (like a
//!   webhook's endpoint): Twilio-compatible, a generic HTTP template, or a file.
//! - `file`: the `file` gateway's write (temporary file + rename, named after the delivery).
//!
//! **What is stored.** The delivery's `body` is `{"to", "text", "code"}` (the code apart, to
//! scrub it from gateway answers); its `headers` are empty (credentials come from the settings
//! at each attempt, never stored); its `url` says where the SMS was headed when it was consumed
//! (redacted; for `file` the file's `file://` URL). The engine erases the body when the delivery
//! finishes (see `engine::record`), so a code is at rest only while it can still be sent.
//!
//! **Deadline.** The delivery's `deadline` is the code's `expires_at`: no attempt starts after
//! it, and a retry that would start after it fails the delivery (`deadline`).

pub(crate) mod file;
pub(crate) mod gateway;
pub(crate) mod template;

use chrono::{DateTime, Utc};
use common::events::{Envelope, PhoneVerificationRequestedV1};
use metrics::{Unit, counter, describe_counter};
use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};

use crate::{
    consumer::fanout::Stored,
    entity::delivery,
    retry::Verdict,
    settings::Settings,
    store::{self, NewDelivery},
};

/// The stored body of an `sms` delivery. `Debug` shows neither number nor code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSms {
    /// E.164 number.
    pub(crate) to: String,
    /// The text, code included.
    pub(crate) text: String,
    /// The code alone (scrubbed from what the gateway answers before it is stored).
    pub(crate) code: String,
}

impl std::fmt::Debug for StoredSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSms")
            .field("to", &common::events::mask_phone(&self.to))
            .finish_non_exhaustive()
    }
}

impl StoredSms {
    /// The stored body of `delivery`, if it has one that parses (none once it finished).
    pub(crate) fn of(delivery: &delivery::Model) -> Option<Self> {
        serde_json::from_str(delivery.body.as_deref()?).ok()
    }
}

/// The text of the SMS for `event` consumed at `now`: `SMS_TEMPLATE` with `{app}`, `{code}` and
/// `{minutes}` (until `expires_at`, rounded up; 0 once expired).
pub(crate) fn text(
    settings: &Settings,
    event: &PhoneVerificationRequestedV1,
    now: DateTime<Utc>,
) -> String {
    let millis = (event.expires_at - now).num_milliseconds().max(0);
    let minutes = (millis + 59_999) / 60_000;
    template::render(
        &settings.sms_template,
        &[
            ("app", &settings.sms_app_name),
            ("code", &event.code),
            ("minutes", &minutes.to_string()),
        ],
        str::to_owned,
    )
}

/// The delivery of `envelope`'s SMS, consumed at `now`: id = event id, due now, deadline =
/// `expires_at`.
pub(crate) fn delivery_for(
    settings: &Settings,
    envelope: &Envelope<PhoneVerificationRequestedV1>,
    traceparent: Option<String>,
    now: DateTime<Utc>,
) -> NewDelivery {
    let event = &envelope.data;
    let stored = StoredSms {
        to: event.phone.clone(),
        text: text(settings, event, now),
        code: event.code.clone(),
    };
    NewDelivery {
        id: envelope.event_id,
        kind: delivery::kind::SMS,
        endpoint_id: None,
        message_id: None,
        job_id: None,
        url: gateway::destination(settings, envelope.event_id),
        method: gateway::method(settings).to_owned(),
        headers: Vec::new(),
        // Serialising three strings cannot fail.
        body: serde_json::to_string(&stored).ok(),
        timeout: settings.webhook_request_timeout,
        // The kind's policy (`SMS_RETRY_SCHEDULE`), read at each attempt.
        retry_schedule: None,
        fail_statuses: None,
        execute_at: now,
        deadline: Some(event.expires_at),
        traceparent,
    }
}

/// Stores the SMS delivery of `envelope` unless it exists (a redelivered event): `Fresh` with
/// one delivery (wake the engine after it), or `Duplicate`.
///
/// # Errors
/// Any database error; nothing is stored then.
pub(crate) async fn store(
    db: &DatabaseConnection,
    settings: &Settings,
    envelope: &Envelope<PhoneVerificationRequestedV1>,
    traceparent: Option<String>,
) -> Result<Stored, DbErr> {
    let delivery = delivery_for(settings, envelope, traceparent, Utc::now());
    if store::insert_unless_exists(db, delivery).await? {
        Ok(Stored::Fresh { deliveries: 1 })
    } else {
        Ok(Stored::Duplicate)
    }
}

/// Reasons of `sms_failed_total`: the retry policy's, and `unreadable` (no stored body).
const FAIL_REASONS: &[&str] = &[
    "deadline",
    "fail_status",
    "gone",
    "refused",
    "exhausted",
    "unreadable",
];

/// A delivery ended without a call because its stored body is missing or does not parse.
pub(crate) const UNREADABLE: &str = "unreadable";

/// Describes `sms_sent_total{gateway}` and `sms_failed_total{gateway,reason}` and creates them
/// at zero for the configured gateway.
pub(crate) fn register_metrics(settings: &Settings) {
    describe_counter!(
        "sms_sent_total",
        Unit::Count,
        "SMS accepted by the gateway (file gateway: written)"
    );
    describe_counter!(
        "sms_failed_total",
        Unit::Count,
        "SMS given up: deadline (the code expired), fail_status (a 4xx), exhausted, …"
    );
    let gateway = settings.sms_gateway.as_str();
    counter!("sms_sent_total", "gateway" => gateway).absolute(0);
    for &reason in FAIL_REASONS {
        counter!("sms_failed_total", "gateway" => gateway, "reason" => reason).absolute(0);
    }
}

/// Counts the verdict of an attempt of `delivery` (nothing for other kinds, or a retry).
pub(crate) fn count_verdict(settings: &Settings, delivery: &delivery::Model, verdict: Verdict) {
    if delivery.kind != delivery::kind::SMS {
        return;
    }
    let gateway = settings.sms_gateway.as_str();
    match verdict {
        Verdict::Succeeded => counter!("sms_sent_total", "gateway" => gateway).increment(1),
        Verdict::Failed(reason) => count_failed(gateway, reason.as_str()),
        Verdict::Retry(_) => {}
    }
}

/// Counts a delivery of `delivery` ended without a call (`reason`: `deadline`, `unreadable`).
pub(crate) fn count_skipped(settings: &Settings, delivery: &delivery::Model, reason: &'static str) {
    if delivery.kind == delivery::kind::SMS {
        count_failed(settings.sms_gateway.as_str(), reason);
    }
}

fn count_failed(gateway: &'static str, reason: &'static str) {
    counter!("sms_failed_total", "gateway" => gateway, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        code: &str,
        expires_in: chrono::Duration,
        now: DateTime<Utc>,
    ) -> PhoneVerificationRequestedV1 {
        PhoneVerificationRequestedV1 {
            user_id: uuid::Uuid::nil(),
            verification_id: uuid::Uuid::nil(),
            phone: "+447700900123".into(),
            code: code.into(),
            expires_at: now + expires_in,
            send_number: 1,
        }
    }

    #[test]
    fn the_text_says_the_minutes_left_rounded_up() {
        let now = Utc::now();
        let settings = Settings::default();
        let ten = event("482913", chrono::Duration::minutes(10), now);
        assert_eq!(
            text(&settings, &ten, now),
            "Signup: your code is 482913. It expires in 10 minutes."
        );
        let almost = event("482913", chrono::Duration::seconds(9 * 60 + 1), now);
        assert!(text(&settings, &almost, now).ends_with("in 10 minutes."));
        let gone = event("482913", chrono::Duration::seconds(-5), now);
        assert!(text(&settings, &gone, now).ends_with("in 0 minutes."));
        let custom = Settings {
            sms_app_name: "Acme {code}".into(),
            sms_template: "{code} is your {app} code".into(),
            ..Settings::default()
        };
        assert_eq!(text(&custom, &ten, now), "482913 is your Acme {code} code");
    }

    #[test]
    fn a_stored_sms_prints_neither_number_nor_code() {
        let stored = StoredSms {
            to: "+447700900123".into(),
            text: "code 482913".into(),
            code: "482913".into(),
        };
        let printed = format!("{stored:?}");
        assert!(
            !printed.contains("482913") && !printed.contains("900123"),
            "{printed}"
        );
    }
}
