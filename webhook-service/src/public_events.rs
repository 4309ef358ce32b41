//! The public webhook events: documented, versioned, secret-free.
//!
//! Every webhook body has the Standard Webhooks payload structure:
//!
//! ```json
//! {"type": "user.registered", "timestamp": "2026-12-07T10:00:00Z", "data": {"version": 1, …}}
//! ```
//!
//! `type` is one of [`EVENT_TYPES`], `timestamp` (RFC 3339) is when the state change happened
//! (the internal event's `occurred_at`), and `data` is the type's schema below.
//!
//! **Versioning.** The type names are stable; the schema version is `data.version` (1 for
//! every type today). Adding a field is compatible and keeps the version: receivers must ignore
//! fields they do not know. Removing, renaming or retyping a field is a new version number; the
//! old one keeps being sent until every endpoint has moved (there is only version 1 so far).
//!
//! **No secrets.** Internal events carry the verification link and code for the mail that
//! delivers them ([`common::events::VerificationDetails`]); a public schema never has a field
//! for them, nor for a password or hash: the structs below are built field by field from the
//! internal events, never copied from them. `user.signup_attempted.v1` has no public event:
//! it would tell a subscriber that someone tried to register an address that has an account.
//! `PhoneVerificationRequestedV1` has none either: it carries the one-time code, which only the
//! SMS may carry ([`crate::sms`]).
//!
//! **Personal data.** `user.phone_verified` carries the verified number (E.164), as the email
//! events carry the address: personal data a subscriber needs to act on the verification, but
//! no secret (it proves nothing by itself). Subscribers must treat it as they treat email.

use chrono::{DateTime, Utc};
use common::events::{
    Envelope, PhoneVerifiedV1, SignupEvent, UserRegisteredV1, UserVerifiedV1,
    VerificationReminderV1, VerificationResentV1,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every public event type an endpoint may subscribe to.
pub(crate) const EVENT_TYPES: &[&str] = &[
    UserRegistered::TYPE,
    UserVerificationReminderSent::TYPE,
    UserVerificationResent::TYPE,
    UserVerified::TYPE,
    UserPhoneVerified::TYPE,
    EndpointDisabled::TYPE,
];

/// The operational types among [`EVENT_TYPES`]: about the webhook-service itself, not mapped
/// from a sign-up event.
pub(crate) const OPERATIONAL_TYPES: &[&str] = &[EndpointDisabled::TYPE];

/// The schema version every public event has today (`data.version`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// A webhook body: `{type, timestamp, data}` (Standard Webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Payload<T> {
    /// The public event type, e.g. `user.registered`.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// When it happened (RFC 3339, UTC).
    pub(crate) timestamp: DateTime<Utc>,
    /// The event's data, by its type's schema.
    pub(crate) data: T,
}

/// The `data` of one public event type.
pub(crate) trait PublicData: Serialize {
    /// Its public type name.
    const TYPE: &'static str;
}

/// `user.registered`: an account was created (its address is not verified yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserRegistered {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) user_id: Uuid,
    /// Normalised (lower-case) email address.
    pub(crate) email: String,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    /// When the account was created.
    pub(crate) registered_at: DateTime<Utc>,
}

impl PublicData for UserRegistered {
    const TYPE: &'static str = "user.registered";
}

/// `user.verification_reminder_sent`: a still-unverified user was reminded to verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserVerificationReminderSent {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    /// 1 for the first reminder, 2 for the second, …
    pub(crate) reminder_number: u32,
    /// When the reminder was issued (the mail follows within seconds).
    pub(crate) sent_at: DateTime<Utc>,
}

impl PublicData for UserVerificationReminderSent {
    const TYPE: &'static str = "user.verification_reminder_sent";
}

/// `user.verification_resent`: the user asked for a new verification mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserVerificationResent {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    /// When the new verification was issued (the mail follows within seconds).
    pub(crate) sent_at: DateTime<Utc>,
}

impl PublicData for UserVerificationResent {
    const TYPE: &'static str = "user.verification_resent";
}

/// `user.verified`: the user proved the address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserVerified {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) verified_at: DateTime<Utc>,
}

impl PublicData for UserVerified {
    const TYPE: &'static str = "user.verified";
}

/// `user.phone_verified`: the user proved the phone number with the code sent by SMS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserPhoneVerified {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) user_id: Uuid,
    /// The verified number, E.164 (`+447700900123`): personal data, not a secret.
    pub(crate) phone: String,
    pub(crate) verified_at: DateTime<Utc>,
}

impl PublicData for UserPhoneVerified {
    const TYPE: &'static str = "user.phone_verified";
}

/// `endpoint.disabled` (operational): the service disabled an endpoint, because it answered
/// 410 Gone (`reason` `gone`) or failed without a success for `WEBHOOK_DISABLE_AFTER`
/// (`failing`). Sent to the endpoints that list it in their `event_types` (a catch-all endpoint
/// does not get it), never to the disabled one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct EndpointDisabled {
    /// Schema version, 1.
    pub(crate) version: u32,
    pub(crate) endpoint_id: Uuid,
    /// The endpoint's origin (`scheme://host[:port]`): a path or query may hold a secret
    /// (e.g. a Slack hook's).
    pub(crate) url: String,
    /// `gone` or `failing`.
    pub(crate) reason: String,
    /// Start of the failure run that led to it, if one was running.
    pub(crate) failing_since: Option<DateTime<Utc>>,
    pub(crate) disabled_at: DateTime<Utc>,
}

impl PublicData for EndpointDisabled {
    const TYPE: &'static str = "endpoint.disabled";
}

/// The `endpoint.disabled` event for an endpoint disabled at `now`; `url` must be the
/// endpoint's origin only.
///
/// # Errors
/// When the payload cannot be serialised (it always can).
pub(crate) fn endpoint_disabled(
    endpoint_id: Uuid,
    url: String,
    reason: &str,
    failing_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<PublicEvent, serde_json::Error> {
    let data = EndpointDisabled {
        version: SCHEMA_VERSION,
        endpoint_id,
        url,
        reason: reason.to_owned(),
        failing_since,
        disabled_at: now,
    };
    let payload = Payload {
        event_type: EndpointDisabled::TYPE.to_owned(),
        timestamp: now,
        data,
    };
    Ok(PublicEvent {
        event_type: EndpointDisabled::TYPE,
        payload: serde_json::to_string(&payload)?,
    })
}

/// A public event ready to store as a `messages` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicEvent {
    /// One of [`EVENT_TYPES`].
    pub(crate) event_type: &'static str,
    /// The JSON webhook body.
    pub(crate) payload: String,
}

/// The public event announcing `event`, or `None` for an event that is never published.
///
/// # Errors
/// When the payload cannot be serialised (it always can: plain strings, ids and times).
pub(crate) fn public_event(event: &SignupEvent) -> Result<Option<PublicEvent>, serde_json::Error> {
    match event {
        SignupEvent::UserRegistered(e) => encode(e, registered(&e.data, e.occurred_at)),
        SignupEvent::VerificationReminder(e) => encode(e, reminder(&e.data, e.occurred_at)),
        SignupEvent::VerificationResent(e) => encode(e, resent(&e.data, e.occurred_at)),
        SignupEvent::UserVerified(e) => encode(e, verified(&e.data)),
        SignupEvent::SignupAttempted(_) => Ok(None),
        // Carries a one-time code: sent by SMS (see `sms`), never published as a webhook.
        SignupEvent::PhoneVerificationRequested(_) => Ok(None),
        SignupEvent::PhoneVerified(e) => encode(e, phone_verified(&e.data)),
    }
}

fn encode<E, T: PublicData>(
    envelope: &Envelope<E>,
    data: T,
) -> Result<Option<PublicEvent>, serde_json::Error> {
    let payload = Payload {
        event_type: T::TYPE.to_owned(),
        timestamp: envelope.occurred_at,
        data,
    };
    Ok(Some(PublicEvent {
        event_type: T::TYPE,
        payload: serde_json::to_string(&payload)?,
    }))
}

fn registered(event: &UserRegisteredV1, occurred_at: DateTime<Utc>) -> UserRegistered {
    UserRegistered {
        version: SCHEMA_VERSION,
        user_id: event.user_id,
        email: event.email.clone(),
        first_name: event.first_name.clone(),
        last_name: event.last_name.clone(),
        // Events written before `registered_at` existed: the registration's own time.
        registered_at: event.registered_at.unwrap_or(occurred_at),
    }
}

fn reminder(
    event: &VerificationReminderV1,
    occurred_at: DateTime<Utc>,
) -> UserVerificationReminderSent {
    UserVerificationReminderSent {
        version: SCHEMA_VERSION,
        user_id: event.user_id,
        email: event.email.clone(),
        reminder_number: event.reminder_number,
        sent_at: occurred_at,
    }
}

fn resent(event: &VerificationResentV1, occurred_at: DateTime<Utc>) -> UserVerificationResent {
    UserVerificationResent {
        version: SCHEMA_VERSION,
        user_id: event.user_id,
        email: event.email.clone(),
        sent_at: occurred_at,
    }
}

fn verified(event: &UserVerifiedV1) -> UserVerified {
    UserVerified {
        version: SCHEMA_VERSION,
        user_id: event.user_id,
        email: event.email.clone(),
        verified_at: event.verified_at,
    }
}

fn phone_verified(event: &PhoneVerifiedV1) -> UserPhoneVerified {
    UserPhoneVerified {
        version: SCHEMA_VERSION,
        user_id: event.user_id,
        phone: event.phone.clone(),
        verified_at: event.verified_at,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use common::events::{
        Event, PhoneVerificationRequestedV1, SignupAttemptedV1, VerificationDetails,
    };

    use super::*;

    const TOKEN: &str = "tok3nS3cr3tV4lue";
    const CODE: &str = "482913";
    const LINK: &str = "http://127.0.0.1:8080/user/verify?token=tok3nS3cr3tV4lue";
    /// The SMS code: other digits than [`CODE`], so each is looked for on its own.
    const PHONE_CODE: &str = "730561";
    const PHONE: &str = "+447700900123";

    /// A fixed time and id, so no digit of a timestamp or id can match the code by chance.
    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .expect("a time")
            .to_utc()
    }

    fn verification() -> VerificationDetails {
        VerificationDetails {
            link: LINK.into(),
            code: CODE.into(),
            expires_at: at(),
            code_expires_at: Some(at()),
        }
    }

    fn envelope<T: Event>(data: T) -> Envelope<T> {
        Envelope::new(Uuid::new_v4(), at(), data)
    }

    /// One internal event of every type, the verification events with known secrets; the
    /// signup attempt last.
    fn every_internal_event() -> Vec<SignupEvent> {
        let user_id = Uuid::from_u128(0x0123_4567_89ab_cdef);
        let email = "ann@example.com".to_owned();
        let (first_name, last_name) = (Some("Ann".to_owned()), Some("Lee".to_owned()));
        vec![
            SignupEvent::UserRegistered(envelope(UserRegisteredV1 {
                user_id,
                email: email.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                verification: verification(),
                registered_at: Some(at()),
            })),
            SignupEvent::VerificationReminder(envelope(VerificationReminderV1 {
                user_id,
                email: email.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                verification: verification(),
                reminder_number: 2,
                registered_at: Some(at()),
            })),
            SignupEvent::VerificationResent(envelope(VerificationResentV1 {
                user_id,
                email: email.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                verification: verification(),
                registered_at: None,
            })),
            SignupEvent::UserVerified(envelope(UserVerifiedV1 {
                user_id,
                email: email.clone(),
                first_name,
                last_name,
                verified_at: at(),
            })),
            SignupEvent::PhoneVerificationRequested(envelope(PhoneVerificationRequestedV1 {
                user_id,
                verification_id: Uuid::from_u128(7),
                phone: PHONE.into(),
                code: PHONE_CODE.into(),
                expires_at: at(),
                send_number: 2,
            })),
            SignupEvent::PhoneVerified(envelope(PhoneVerifiedV1 {
                user_id,
                verification_id: Uuid::from_u128(7),
                phone: PHONE.into(),
                verified_at: at(),
            })),
            SignupEvent::SignupAttempted(envelope(SignupAttemptedV1 {
                user_id,
                email,
                attempted_at: at(),
                account_verified: true,
            })),
        ]
    }

    fn mapped() -> Vec<PublicEvent> {
        every_internal_event()
            .iter()
            .filter_map(|event| public_event(event).expect("serialisable"))
            .collect()
    }

    #[test]
    fn no_public_payload_carries_a_verification_secret() {
        let mapped = mapped();
        assert_eq!(mapped.len(), 5);
        for event in &mapped {
            for secret in [TOKEN, CODE, PHONE_CODE, LINK, "verify?", "\"code", "\"link"] {
                assert!(
                    !event.payload.contains(secret),
                    "{secret:?} in {}: {}",
                    event.event_type,
                    event.payload
                );
            }
        }
    }

    #[test]
    fn every_public_type_has_a_mapping_and_signup_attempts_have_none() {
        let mapped: BTreeSet<&str> = mapped().iter().map(|e| e.event_type).collect();
        let catalogue: BTreeSet<&str> = EVENT_TYPES
            .iter()
            .copied()
            .filter(|t| !OPERATIONAL_TYPES.contains(t))
            .collect();
        assert_eq!(mapped, catalogue);
        let attempt = every_internal_event().pop().expect("a signup attempt");
        assert!(matches!(attempt, SignupEvent::SignupAttempted(_)));
        assert_eq!(public_event(&attempt).expect("serialisable"), None);
    }

    #[test]
    fn a_phone_code_request_is_never_public_and_a_verified_phone_is() {
        let events = every_internal_event();
        let requested = events
            .iter()
            .find(|e| matches!(e, SignupEvent::PhoneVerificationRequested(_)))
            .expect("a code request");
        assert_eq!(public_event(requested).expect("serialisable"), None);
        let verified = events
            .iter()
            .find(|e| matches!(e, SignupEvent::PhoneVerified(_)))
            .expect("a verified phone");
        let event = public_event(verified)
            .expect("serialisable")
            .expect("public");
        let payload: Payload<UserPhoneVerified> =
            serde_json::from_str(&event.payload).expect("the documented schema");
        assert_eq!(payload.event_type, "user.phone_verified");
        assert_eq!(payload.data.phone, PHONE);
        assert_eq!(payload.data.verified_at, at());
        assert_eq!(payload.timestamp, at());
    }

    #[test]
    fn payloads_have_the_standard_webhooks_shape_and_a_version() {
        for event in mapped() {
            let json: serde_json::Value = serde_json::from_str(&event.payload).expect("JSON");
            let fields: BTreeSet<&str> = json
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(fields, BTreeSet::from(["type", "timestamp", "data"]));
            assert_eq!(json["type"], event.event_type);
            assert_eq!(json["data"]["version"], SCHEMA_VERSION);
            assert!(json["data"]["user_id"].is_string());
            if event.event_type == UserPhoneVerified::TYPE {
                assert_eq!(json["data"]["phone"], PHONE);
            } else {
                assert_eq!(json["data"]["email"], "ann@example.com");
            }
            let timestamp = json["timestamp"].as_str().expect("timestamp");
            DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
        }
    }

    #[test]
    fn a_registration_carries_the_names_and_falls_back_to_occurred_at() {
        let mut events = every_internal_event();
        let SignupEvent::UserRegistered(mut registration) = events.remove(0) else {
            panic!("the first event is a registration");
        };
        registration.data.registered_at = None;
        registration.occurred_at = at() + chrono::Duration::seconds(5);
        let event = public_event(&SignupEvent::UserRegistered(registration.clone()))
            .expect("serialisable")
            .expect("public");
        let payload: Payload<UserRegistered> =
            serde_json::from_str(&event.payload).expect("the documented schema");
        assert_eq!(payload.data.first_name.as_deref(), Some("Ann"));
        assert_eq!(payload.data.last_name.as_deref(), Some("Lee"));
        assert_eq!(payload.data.registered_at, registration.occurred_at);
        assert_eq!(payload.timestamp, registration.occurred_at);
    }
}
