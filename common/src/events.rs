//! Event contracts.
//!
//! Every event travels as an [`Envelope`]: `{event_id, event_type, event_version, occurred_at,
//! data}`. Names are versioned and never changed in place: a breaking change is a new `…V2`
//! type with its own routing key. Consumers ignore unknown fields, so adding an optional field is
//! not breaking.
//!
//! Never put a password or a password hash in an event. The verification link and code do travel
//! in `UserRegisteredV1` / `VerificationReminderV1`, because the email-service must mail them; they
//! must never be logged (their `Debug` output is redacted), and each event lists them in
//! [`Event::SECRET_FIELDS`] so the outbox blanks them once the event is published.
//!
//! Compatible additions so far: `registered_at` on the three verification events (optional:
//! payloads written before it decode with `None`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A domain event with a stable, versioned name.
pub trait Event: Serialize + DeserializeOwned {
    /// The `type` of the event (also the AMQP `type` property), e.g. `UserRegisteredV1`.
    const EVENT_TYPE: &'static str;
    /// Schema version carried in the envelope.
    const VERSION: u32;
    /// Routing key on the `signup.events` topic exchange.
    const ROUTING_KEY: &'static str;
    /// JSON pointers (RFC 6901) into the event of its secret values: the outbox keeps them
    /// only until the broker confirmed the publish, then blanks them (see `outbox::enqueue`).
    const SECRET_FIELDS: &'static [&'static str] = &[];

    /// The aggregate (user) this event belongs to; the relay keeps per-aggregate order.
    fn aggregate_id(&self) -> Uuid;
}

/// The JSON body of every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Unique id of this event; also the outbox row id and the AMQP `message_id`.
    pub event_id: Uuid,
    /// [`Event::EVENT_TYPE`].
    pub event_type: String,
    /// [`Event::VERSION`].
    pub event_version: u32,
    /// When the state change happened (the transaction time).
    pub occurred_at: DateTime<Utc>,
    /// The event itself.
    pub data: T,
}

impl<T: Event> Envelope<T> {
    /// Wraps `data` in a new envelope with the given id and time.
    pub fn new(event_id: Uuid, occurred_at: DateTime<Utc>, data: T) -> Self {
        Self {
            event_id,
            event_type: T::EVENT_TYPE.to_owned(),
            event_version: T::VERSION,
            occurred_at,
            data,
        }
    }
}

/// The secret values of every event that carries a [`VerificationDetails`] as `verification`.
pub const VERIFICATION_SECRETS: &[&str] = &["/verification/link", "/verification/code"];

/// How a user proves the address: a link valid until `expires_at` and a short code valid until
/// `code_expires_at` (never later; absent in events written before codes expired sooner, when
/// the code lived as long as the link).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationDetails {
    /// `PUBLIC_BASE_URL/user/verify?token=…`.
    pub link: String,
    /// Six-digit code to type instead of clicking.
    pub code: String,
    /// After this instant neither the link nor the code works.
    pub expires_at: DateTime<Utc>,
    /// After this instant the code no longer works (the link may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_expires_at: Option<DateTime<Utc>>,
}

impl VerificationDetails {
    /// Until when the code works.
    pub fn code_valid_until(&self) -> DateTime<Utc> {
        self.code_expires_at.unwrap_or(self.expires_at)
    }
}

impl std::fmt::Debug for VerificationDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationDetails")
            .field("link", &"<redacted>")
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("code_expires_at", &self.code_expires_at)
            .finish()
    }
}

/// A user signed up; the email-service sends the verification mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegisteredV1 {
    /// The new user's id.
    pub user_id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// Optional first name, for the greeting.
    pub first_name: Option<String>,
    /// Optional last name.
    pub last_name: Option<String>,
    /// The verification issued with the registration.
    pub verification: VerificationDetails,
    /// When the account was created (the envelope's `occurred_at` too), so the mail can say when the sign-up was made. Optional
    /// for compatibility: events written before the field existed decode with `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
}

impl Event for UserRegisteredV1 {
    const EVENT_TYPE: &'static str = "UserRegisteredV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::USER_REGISTERED_V1;
    const SECRET_FIELDS: &'static [&'static str] = VERIFICATION_SECRETS;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// A still-unverified user is reminded, with a freshly issued verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReminderV1 {
    /// The user's id.
    pub user_id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// Optional first name, for the greeting.
    pub first_name: Option<String>,
    /// Optional last name.
    pub last_name: Option<String>,
    /// The new verification (older ones no longer work).
    pub verification: VerificationDetails,
    /// 1 for the first reminder, 2 for the second, …
    pub reminder_number: u32,
    /// When the account was created, so the mail can say when the sign-up was made. Optional
    /// for compatibility: events written before the field existed decode with `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
}

impl Event for VerificationReminderV1 {
    const EVENT_TYPE: &'static str = "VerificationReminderV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::VERIFICATION_REMINDER_V1;
    const SECRET_FIELDS: &'static [&'static str] = VERIFICATION_SECRETS;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// The user asked for a new verification mail (`POST /user/verification/resend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationResentV1 {
    /// The user's id.
    pub user_id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// Optional first name, for the greeting.
    pub first_name: Option<String>,
    /// Optional last name.
    pub last_name: Option<String>,
    /// The new verification (older ones no longer work).
    pub verification: VerificationDetails,
    /// When the account was created, so the mail can say when the sign-up was made. Optional
    /// for compatibility: events written before the field existed decode with `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
}

impl Event for VerificationResentV1 {
    const EVENT_TYPE: &'static str = "VerificationResentV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::VERIFICATION_RESENT_V1;
    const SECRET_FIELDS: &'static [&'static str] = VERIFICATION_SECRETS;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// The user proved the address; the email-service sends the welcome mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserVerifiedV1 {
    /// The user's id.
    pub user_id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// Optional first name, for the greeting.
    pub first_name: Option<String>,
    /// Optional last name.
    pub last_name: Option<String>,
    /// When the verification succeeded.
    pub verified_at: DateTime<Utc>,
}

impl Event for UserVerifiedV1 {
    const EVENT_TYPE: &'static str = "UserVerifiedV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::USER_VERIFIED_V1;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// Someone tried to register an address that already has an account (the request got 409
/// `email_taken`); the email-service tells the owner. At most one per address per
/// `SIGNUP_ATTEMPT_NOTICE_INTERVAL`. It carries no secret and no name: the names of a pending
/// account were typed by whoever signed up, not necessarily the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignupAttemptedV1 {
    /// The existing account's id.
    pub user_id: Uuid,
    /// Normalised email address (the existing account's).
    pub email: String,
    /// When the refused registration was attempted.
    pub attempted_at: DateTime<Utc>,
    /// Whether the existing account has proved the address (the mail words its advice by it).
    pub account_verified: bool,
}

impl Event for SignupAttemptedV1 {
    const EVENT_TYPE: &'static str = "SignupAttemptedV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::SIGNUP_ATTEMPTED_V1;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// The secret values of [`PhoneVerificationRequestedV1`].
pub const PHONE_CODE_SECRETS: &[&str] = &["/code"];

/// `+447700900123` → `+4477…23`: enough to tell numbers apart in a log line, not to dial one.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 7 {
        return "…".to_owned();
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

/// A phone verification code is to be sent by SMS: at registration with a `phone`, and on every
/// resend or restart (`POST /user/phone/verification/resend`). The webhook-service turns it into
/// one SMS through the configured gateway, with `expires_at` as the delivery's deadline. A resend
/// of a still-valid code carries the same code; `send_number` counts the sends of this
/// verification (1 for the first).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneVerificationRequestedV1 {
    /// The user's id.
    pub user_id: Uuid,
    /// The phone verification's id.
    pub verification_id: Uuid,
    /// The number in E.164 form (`+447700900123`).
    pub phone: String,
    /// The one-time code (secret: never logged, blanked in the outbox once published).
    pub code: String,
    /// After this instant the code no longer works, and the SMS must not be sent.
    pub expires_at: DateTime<Utc>,
    /// 1 for the first send of this verification, 2 for the first resend, …
    pub send_number: u32,
}

impl std::fmt::Debug for PhoneVerificationRequestedV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneVerificationRequestedV1")
            .field("user_id", &self.user_id)
            .field("verification_id", &self.verification_id)
            .field("phone", &mask_phone(&self.phone))
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("send_number", &self.send_number)
            .finish()
    }
}

impl Event for PhoneVerificationRequestedV1 {
    const EVENT_TYPE: &'static str = "PhoneVerificationRequestedV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str =
        crate::topology::routing_keys::PHONE_VERIFICATION_REQUESTED_V1;
    const SECRET_FIELDS: &'static [&'static str] = PHONE_CODE_SECRETS;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// The user proved the phone number with the right code (`user.phone_verified` as a public
/// webhook event).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneVerifiedV1 {
    /// The user's id.
    pub user_id: Uuid,
    /// The phone verification's id.
    pub verification_id: Uuid,
    /// The verified number in E.164 form.
    pub phone: String,
    /// When the right code was checked.
    pub verified_at: DateTime<Utc>,
}

impl std::fmt::Debug for PhoneVerifiedV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneVerifiedV1")
            .field("user_id", &self.user_id)
            .field("verification_id", &self.verification_id)
            .field("phone", &mask_phone(&self.phone))
            .field("verified_at", &self.verified_at)
            .finish()
    }
}

impl Event for PhoneVerifiedV1 {
    const EVENT_TYPE: &'static str = "PhoneVerifiedV1";
    const VERSION: u32 = 1;
    const ROUTING_KEY: &'static str = crate::topology::routing_keys::PHONE_VERIFIED_V1;
    fn aggregate_id(&self) -> Uuid {
        self.user_id
    }
}

/// Any event a consumer of `signup.events` understands.
#[derive(Debug, Clone, PartialEq)]
pub enum SignupEvent {
    /// See [`UserRegisteredV1`].
    UserRegistered(Envelope<UserRegisteredV1>),
    /// See [`VerificationReminderV1`].
    VerificationReminder(Envelope<VerificationReminderV1>),
    /// See [`VerificationResentV1`].
    VerificationResent(Envelope<VerificationResentV1>),
    /// See [`UserVerifiedV1`].
    UserVerified(Envelope<UserVerifiedV1>),
    /// See [`SignupAttemptedV1`].
    SignupAttempted(Envelope<SignupAttemptedV1>),
    /// See [`PhoneVerificationRequestedV1`].
    PhoneVerificationRequested(Envelope<PhoneVerificationRequestedV1>),
    /// See [`PhoneVerifiedV1`].
    PhoneVerified(Envelope<PhoneVerifiedV1>),
}

/// Why a message body could not be turned into a [`SignupEvent`]. Both are permanent: retrying
/// the same bytes cannot succeed, so consumers dead-letter them at once.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a valid envelope of the type it claims. Only the kind of error and its
    /// position are kept, not serde's error: its text can quote values, and a body may carry a
    /// verification code, so not even an error-chain print may show it.
    #[error("malformed event body: {kind} error at line {line} column {column}")]
    Malformed {
        /// What went wrong (syntax, data, …), never a value.
        kind: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A well-formed envelope of a type this consumer does not know.
    #[error("unknown event type {event_type:?} version {version}")]
    UnknownType {
        /// The `event_type` found in the envelope.
        event_type: String,
        /// The `event_version` found in the envelope.
        version: u32,
    },
}

impl From<serde_json::Error> for DecodeError {
    fn from(error: serde_json::Error) -> Self {
        let kind = match error.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data (missing field or wrong type)",
            serde_json::error::Category::Eof => "unexpected end of input",
        };
        Self::Malformed {
            kind,
            line: error.line(),
            column: error.column(),
        }
    }
}

#[derive(Deserialize)]
struct EnvelopeHead {
    event_type: String,
    event_version: u32,
}

impl SignupEvent {
    /// Decodes a message body by the `event_type` inside its envelope.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for bytes that are not a valid envelope, and
    /// [`DecodeError::UnknownType`] for an envelope of an unknown type or version.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let head: EnvelopeHead = serde_json::from_slice(body)?;
        match (head.event_type.as_str(), head.event_version) {
            (UserRegisteredV1::EVENT_TYPE, UserRegisteredV1::VERSION) => {
                Ok(Self::UserRegistered(serde_json::from_slice(body)?))
            }
            (VerificationReminderV1::EVENT_TYPE, VerificationReminderV1::VERSION) => {
                Ok(Self::VerificationReminder(serde_json::from_slice(body)?))
            }
            (VerificationResentV1::EVENT_TYPE, VerificationResentV1::VERSION) => {
                Ok(Self::VerificationResent(serde_json::from_slice(body)?))
            }
            (UserVerifiedV1::EVENT_TYPE, UserVerifiedV1::VERSION) => {
                Ok(Self::UserVerified(serde_json::from_slice(body)?))
            }
            (SignupAttemptedV1::EVENT_TYPE, SignupAttemptedV1::VERSION) => {
                Ok(Self::SignupAttempted(serde_json::from_slice(body)?))
            }
            (PhoneVerificationRequestedV1::EVENT_TYPE, PhoneVerificationRequestedV1::VERSION) => {
                Ok(Self::PhoneVerificationRequested(serde_json::from_slice(
                    body,
                )?))
            }
            (PhoneVerifiedV1::EVENT_TYPE, PhoneVerifiedV1::VERSION) => {
                Ok(Self::PhoneVerified(serde_json::from_slice(body)?))
            }
            _ => Err(DecodeError::UnknownType {
                event_type: head.event_type,
                version: head.event_version,
            }),
        }
    }

    /// The event id of the envelope.
    pub fn event_id(&self) -> Uuid {
        match self {
            Self::UserRegistered(e) => e.event_id,
            Self::VerificationReminder(e) => e.event_id,
            Self::VerificationResent(e) => e.event_id,
            Self::UserVerified(e) => e.event_id,
            Self::SignupAttempted(e) => e.event_id,
            Self::PhoneVerificationRequested(e) => e.event_id,
            Self::PhoneVerified(e) => e.event_id,
        }
    }

    /// The event type name of the envelope.
    pub fn event_type(&self) -> &str {
        match self {
            Self::UserRegistered(e) => &e.event_type,
            Self::VerificationReminder(e) => &e.event_type,
            Self::VerificationResent(e) => &e.event_type,
            Self::UserVerified(e) => &e.event_type,
            Self::SignupAttempted(e) => &e.event_type,
            Self::PhoneVerificationRequested(e) => &e.event_type,
            Self::PhoneVerified(e) => &e.event_type,
        }
    }

    /// The address the event's mail goes to; `None` for an event no mail is sent for (the
    /// phone events: their message is an SMS, sent by the webhook-service).
    pub fn recipient(&self) -> Option<&str> {
        match self {
            Self::UserRegistered(e) => Some(&e.data.email),
            Self::VerificationReminder(e) => Some(&e.data.email),
            Self::VerificationResent(e) => Some(&e.data.email),
            Self::UserVerified(e) => Some(&e.data.email),
            Self::SignupAttempted(e) => Some(&e.data.email),
            Self::PhoneVerificationRequested(_) | Self::PhoneVerified(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Envelope<UserRegisteredV1> {
        crate::testing::user_registered("secret-token", "123456")
    }

    #[test]
    fn decode_round_trips_a_known_event() {
        let envelope = registered();
        let body = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            SignupEvent::decode(&body).unwrap(),
            SignupEvent::UserRegistered(envelope)
        );
    }

    #[test]
    fn a_verification_event_without_registered_at_still_decodes() {
        let mut json = serde_json::to_value(registered()).unwrap();
        json["data"]
            .as_object_mut()
            .unwrap()
            .remove("registered_at");
        let body = serde_json::to_vec(&json).unwrap();
        let Ok(SignupEvent::UserRegistered(event)) = SignupEvent::decode(&body) else {
            panic!("an old payload must decode");
        };
        assert_eq!(event.data.registered_at, None);
    }

    #[test]
    fn a_signup_attempt_round_trips_and_names_its_recipient() {
        let envelope = crate::testing::signup_attempted(false);
        let body = serde_json::to_vec(&envelope).unwrap();
        let event = SignupEvent::decode(&body).unwrap();
        assert_eq!(event.recipient(), Some("ann@example.com"));
        assert_eq!(event, SignupEvent::SignupAttempted(envelope));
    }

    #[test]
    fn phone_events_round_trip_have_no_mail_recipient_and_hide_the_code() {
        let requested = crate::testing::phone_verification_requested("493817");
        let body = serde_json::to_vec(&requested).unwrap();
        let event = SignupEvent::decode(&body).unwrap();
        assert_eq!(event.recipient(), None);
        assert_eq!(
            event,
            SignupEvent::PhoneVerificationRequested(requested.clone())
        );
        let debug = format!("{event:?}");
        assert!(!debug.contains("493817"), "{debug}");
        assert!(!debug.contains("+447700900123"), "{debug}");
        assert_eq!(PhoneVerificationRequestedV1::SECRET_FIELDS, &["/code"]);
        assert_eq!(
            requested.data.aggregate_id(),
            requested.data.user_id,
            "per-user order"
        );

        let verified = crate::testing::phone_verified();
        let body = serde_json::to_vec(&verified).unwrap();
        let event = SignupEvent::decode(&body).unwrap();
        assert_eq!(event.recipient(), None);
        assert_eq!(event.event_type(), "PhoneVerifiedV1");
        assert!(!format!("{event:?}").contains("+447700900123"));
    }

    #[test]
    fn mask_phone_keeps_only_the_ends() {
        assert_eq!(mask_phone("+447700900123"), "+4477…23");
        assert_eq!(mask_phone("+12"), "…");
    }

    #[test]
    fn decode_ignores_unknown_fields() {
        let mut json = serde_json::to_value(registered()).unwrap();
        json["data"]["new_optional_field"] = serde_json::json!(42);
        json["extra"] = serde_json::json!("x");
        let body = serde_json::to_vec(&json).unwrap();
        assert!(matches!(
            SignupEvent::decode(&body),
            Ok(SignupEvent::UserRegistered(_))
        ));
    }

    #[test]
    fn a_malformed_event_error_never_quotes_the_body_even_in_its_chain() {
        let mut json = serde_json::to_value(registered()).unwrap();
        json["data"]["verification"]["code"] = serde_json::json!(987_654);
        let body = serde_json::to_vec(&json).unwrap();
        let error = SignupEvent::decode(&body).unwrap_err();
        assert!(matches!(error, DecodeError::Malformed { .. }), "{error}");
        let chain = crate::telemetry::error_chain(&error);
        assert!(chain.starts_with("malformed event body: data"), "{chain}");
        assert!(!chain.contains("987654"), "{chain}");
    }

    #[test]
    fn decode_rejects_unknown_types_and_garbage() {
        let mut json = serde_json::to_value(registered()).unwrap();
        json["event_type"] = serde_json::json!("UserDeletedV1");
        let body = serde_json::to_vec(&json).unwrap();
        assert!(matches!(
            SignupEvent::decode(&body),
            Err(DecodeError::UnknownType { .. })
        ));
        assert!(matches!(
            SignupEvent::decode(b"{not json"),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_described_without_their_values() {
        let mut json = serde_json::to_value(registered()).unwrap();
        json["data"]["verification"]["code"] = serde_json::json!(987_654);
        let error = SignupEvent::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("malformed event body: data"), "{text}");
        assert!(!text.contains("987654"), "{text}");
    }

    #[test]
    fn every_declared_secret_field_exists_in_its_event() {
        /// `json` read as an `E`, written back, holds a string at each of its secret fields.
        fn check<E: Event>(json: &serde_json::Value) {
            let event: E = serde_json::from_value(json.clone()).unwrap();
            let written = serde_json::to_value(&event).unwrap();
            for pointer in E::SECRET_FIELDS {
                let value = written.pointer(pointer);
                assert!(value.is_some_and(serde_json::Value::is_string), "{pointer}");
            }
        }
        let mut json = serde_json::to_value(registered().data).unwrap();
        check::<UserRegisteredV1>(&json);
        check::<VerificationResentV1>(&json);
        json["reminder_number"] = 1.into();
        check::<VerificationReminderV1>(&json);
        assert_eq!(UserRegisteredV1::SECRET_FIELDS.len(), 2);
        assert!(UserVerifiedV1::SECRET_FIELDS.is_empty());
    }

    #[test]
    fn verification_secrets_are_redacted_in_debug_output() {
        let debug = format!("{:?}", registered());
        assert!(!debug.contains("secret-token"));
        assert!(!debug.contains("123456"));
    }
}
