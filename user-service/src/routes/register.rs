//! `POST /user/register`: validate, hash, then write the user, its first verification and the
//! `UserRegisteredV1` outbox row in ONE transaction (on PostgreSQL, without a phone or an
//! `Idempotency-Key`, ONE statement: see [`outbox::insert_with_event`]); with a `phone`, also
//! its phone verification, the send record and `PhoneVerificationRequestedV1`, in the same
//! transaction.
//!
//! A phone is checked before anything is written: invalid → 422 `invalid_phone`, a refused
//! type or country → 422 `phone_type_not_allowed` / `phone_country_not_allowed` (the refused
//! send is recorded). A velocity limit reached inside the transaction → 429 with `Retry-After`:
//! the transaction is rolled back (no user), the blocked send is recorded on its own, and the
//! client can retry later.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use common::events::{UserRegisteredV1, VerificationDetails};
use sea_orm::{
    ActiveEnum, ActiveValue::Set, DbErr, EntityTrait, QueryTrait, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;
use validator::Validate;

use common::trace::TraceContext;

use crate::{
    domain::{NewUser, UserEmail, email_domain, name_characters},
    entity::{
        idempotency_key,
        user::{self, UserStatus},
        verification,
    },
    error::{ApiError, ApiJson, ErrorBody, validation_details},
    idempotency::{self, IdempotencyKey},
    password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Password},
    phone::{Phone, sends, verification as phone_verification},
    rate_limit::ClientAddress,
    routes::phone::resend::record_blocked,
    signup_attempt,
    state::AppState,
    verification::{first_verification, issue_first_verification},
};

/// The registration request. Unknown fields are rejected (422), so a typo such as `fist_name`
/// is reported instead of silently ignored. No `Debug`: it holds the plain password.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// Trimmed and lower-cased while deserialising, so `Ann@X.com` and ` ann@x.com` are one account.
    #[schema(value_type = String)]
    #[validate(
        email(code = "invalid_email", message = "must be a valid email address"),
        length(
            max = 254,
            code = "too_long",
            message = "must be at most 254 characters"
        ),
        custom(function = "email_domain")
    )]
    email: UserEmail,
    /// NFKC-normalised while deserialising (before its length is counted), so the same password
    /// typed on another keyboard or OS (composed or decomposed `é`, full-width digits) is the
    /// same password.
    #[serde(deserialize_with = "nfkc")]
    #[validate(length(
        min = "MIN_PASSWORD_CHARS",
        max = "MAX_PASSWORD_CHARS",
        code = "invalid_length",
        message = "must be between 8 and 128 characters"
    ))]
    #[schema(min_length = 8, max_length = 128, format = Password)]
    password: String,
    #[serde(default, deserialize_with = "trimmed_name")]
    #[validate(
        length(
            max = 100,
            code = "too_long",
            message = "must be at most 100 characters"
        ),
        custom(function = "name_characters")
    )]
    first_name: Option<String>,
    #[serde(default, deserialize_with = "trimmed_name")]
    #[validate(
        length(
            max = 100,
            code = "too_long",
            message = "must be at most 100 characters"
        ),
        custom(function = "name_characters")
    )]
    last_name: Option<String>,
    /// Optional phone number to verify by SMS: E.164 (`+447400123456`), or a national format
    /// when `PHONE_DEFAULT_REGION` is set.
    #[serde(default, deserialize_with = "trimmed_name")]
    #[schema(example = "+447400123456")]
    phone: Option<String>,
}

fn nfkc<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use unicode_normalization::UnicodeNormalization;
    Ok(String::deserialize(d)?.nfkc().collect())
}

/// Blank names (and phones) count as absent.
fn trimmed_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty()))
}

impl TryFrom<RegisterRequest> for NewUser {
    type Error = ApiError;

    /// Validates the request once and builds the domain value: [`ApiError::Validation`] with
    /// per-field details when it breaks a rule.
    fn try_from(request: RegisterRequest) -> Result<Self, ApiError> {
        request
            .validate()
            .map_err(|errors| ApiError::Validation(validation_details(&errors)))?;
        Ok(Self {
            email: request.email,
            password: Password::new_unchecked(request.password),
            first_name: request.first_name,
            last_name: request.last_name,
            phone: None,
        })
    }
}

/// What the sign-up page shows again after an error: every typed field but the password.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TypedValues {
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) phone: String,
}

impl RegisterRequest {
    /// The request's values to show again (normalised as they were read), never the password.
    pub(crate) fn typed_values(&self) -> TypedValues {
        TypedValues {
            email: self.email.as_str().to_owned(),
            first_name: self.first_name.clone().unwrap_or_default(),
            last_name: self.last_name.clone().unwrap_or_default(),
            phone: self.phone.clone().unwrap_or_default(),
        }
    }
}

/// 201 body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct RegisterResponse {
    /// The new user's id.
    user_id: Uuid,
    /// Always `pending_verification` for a new account.
    status: String,
}

/// `POST /user/register`.
#[utoipa::path(
    post,
    path = "/user/register",
    tag = "registration",
    request_body = RegisterRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Retry key: the same key and request replay the stored response")),
    responses(
        (status = 201, description = "User created, verification mail queued", body = RegisterResponse),
        (status = 400, description = "`malformed_json` or `invalid_header`", body = ErrorBody),
        (status = 409, description = "`email_taken` (the address owner gets a notice mail, at most one per `SIGNUP_ATTEMPT_NOTICE_INTERVAL`)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed` (per-field details), `idempotency_key_reused`, or for `phone`: `invalid_phone`, `phone_type_not_allowed`, `phone_country_not_allowed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests from this client address, or (with `phone`) a phone velocity limit; nothing was created; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 500, description = "`internal_error`", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: the database is unreachable; `overloaded`: too many requests in progress (or, on register, every password hashing slot stayed busy for `HASH_QUEUE_TIMEOUT`); retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let trace = TraceContext::from_headers(&headers);
    let key = IdempotencyKey::from_headers(&headers)?;
    match register_user(&state, request, client, &trace, key.as_ref()).await? {
        Registered::Created(response) => Ok((StatusCode::CREATED, Json(response)).into_response()),
        Registered::Replayed(reply) => Ok(reply),
    }
}

/// What [`register_user`] did.
pub(crate) enum Registered {
    /// A new account (201 for the JSON API).
    Created(RegisterResponse),
    /// A retried request with the same `Idempotency-Key`: the stored answer.
    Replayed(Response),
}

/// Registration itself, shared by `POST /user/register` and the sign-up page's form: validate,
/// check the phone, hash, write (see the module docs).
///
/// # Errors
/// Every [`ApiError`] the JSON API documents for `POST /user/register`.
#[tracing::instrument(name = "register", skip_all, fields(correlation_id, user_id))]
pub(crate) async fn register_user(
    state: &AppState,
    mut request: RegisterRequest,
    client: ClientAddress,
    trace: &TraceContext,
    key: Option<&IdempotencyKey>,
) -> Result<Registered, ApiError> {
    tracing::Span::current().record("correlation_id", trace.correlation_id.as_str());
    let raw_phone = request.phone.take();
    let mut new_user = NewUser::try_from(request)?;
    new_user.phone = raw_phone
        .map(|raw| Phone::parse(&raw, &state.settings))
        .transpose()?;
    if let Some(phone) = &new_user.phone
        && let Some(block) = phone.policy_block(&state.settings)
    {
        record_blocked(state, phone, client, Utc::now(), block).await?;
        metrics::counter!("user_registrations_total", "outcome" => "phone_refused").increment(1);
        return Err(block.api_error(0).unwrap_or(ApiError::PhoneTypeNotAllowed));
    }

    if let Some(key) = key
        && let Some(stored) = idempotency::find(&state.db, key, &new_user.email, Utc::now()).await?
    {
        return replay(state, stored, &new_user)
            .await
            .map(Registered::Replayed);
    }

    let password_hash = state.hasher.hash(&new_user.password).await?;
    match create_user(state, &new_user, password_hash, trace, key, client).await {
        Ok(response) => {
            tracing::Span::current().record("user_id", tracing::field::display(response.user_id));
            metrics::counter!("user_registrations_total", "outcome" => "created").increment(1);
            metrics::counter!("verifications_issued_total", "reason" => "registration")
                .increment(1);
            tracing::info!("user registered");
            Ok(Registered::Created(response))
        }
        Err(error) => {
            // A concurrent request with the same key may have committed first: answer like it.
            if let Some(key) = key
                && let Some(stored) =
                    idempotency::find(&state.db, key, &new_user.email, Utc::now()).await?
            {
                return replay(state, stored, &new_user)
                    .await
                    .map(Registered::Replayed);
            }
            let outcome = if matches!(error, ApiError::RateLimited { .. }) {
                "phone_rate_limited"
            } else if matches!(error, ApiError::EmailTaken) {
                // The answer stays 409; the owner hears of it (rate-limited). A failure to
                // write the notice must not change the answer, so it is only logged.
                if let Err(notice_error) =
                    signup_attempt::notify_owner(state, &new_user.email, trace).await
                {
                    tracing::warn!(
                        error = format!("{notice_error:#}"),
                        "could not write the signup attempt notice"
                    );
                }
                "email_taken"
            } else {
                "error"
            };
            metrics::counter!("user_registrations_total", "outcome" => outcome).increment(1);
            Err(error)
        }
    }
}

/// The write: user row, first verification, `UserRegisteredV1` outbox row (and, with a key,
/// the stored response; with a phone, its verification and send). All or nothing: without a
/// phone or a key, one statement on PostgreSQL ([`outbox::insert_with_event`]); else a
/// transaction.
async fn create_user(
    state: &AppState,
    new_user: &NewUser,
    password_hash: String,
    trace: &TraceContext,
    key: Option<&IdempotencyKey>,
    client: ClientAddress,
) -> Result<RegisterResponse, ApiError> {
    let settings = &state.settings;
    let now = Utc::now();
    let user_id = Uuid::now_v7();
    let next_reminder_at = (settings.max_reminders > 0).then(|| {
        now + chrono::Duration::from_std(settings.reminder_interval)
            .unwrap_or(chrono::Duration::MAX)
    });

    let row = user_row(user_id, new_user, password_hash, now, next_reminder_at);
    let response = RegisterResponse {
        user_id,
        status: UserStatus::PendingVerification.to_value(),
    };
    if new_user.phone.is_none() && key.is_none() {
        // Most registrations: the user, their first verification and the event, which on
        // PostgreSQL is one statement (no BEGIN, no COMMIT).
        let (verification_row, verification) = first_verification(user_id, now, settings)?;
        let changes = vec![
            user::Entity::insert(row).into_query(),
            verification::Entity::insert(verification_row).into_query(),
        ];
        let event = registered_event(user_id, new_user, verification, now);
        outbox::insert_with_event(&state.db, changes, now, event, trace)
            .await
            .map_err(email_taken)?;
        state.outbox_wakeup.wake();
        return Ok(response);
    }

    let txn = state.db.begin().await?;
    if let Some(phone) = &new_user.phone {
        // The send lock first, before the user row: the order every sending transaction uses.
        sends::lock(&txn).await?;
        if let Some((block, wait)) =
            sends::velocity_block(&txn, phone, client, now, settings).await?
        {
            // Nothing of the registration is kept; the refused send is, on its own.
            txn.rollback().await?;
            record_blocked(state, phone, client, now, block).await?;
            return Err(ApiError::RateLimited {
                retry_after: wait.max(1),
            });
        }
    }
    user::Entity::insert(row)
        .exec_without_returning(&txn)
        .await
        .map_err(email_taken)?;
    // The user is new in this transaction: it has no older verification to supersede.
    let verification = issue_first_verification(&txn, user_id, now, settings).await?;
    let event = registered_event(user_id, new_user, verification, now);
    outbox::enqueue(&txn, now, event, trace).await?;
    if let Some(phone) = &new_user.phone {
        let verification = phone_verification::start(&txn, user_id, phone, now, settings).await?;
        phone_verification::send(&txn, &verification, phone, client, now, settings, trace).await?;
    }
    if let Some(key) = key {
        idempotency::store(
            &txn,
            key,
            new_user,
            StatusCode::CREATED,
            &response,
            now,
            settings.idempotency_ttl,
        )
        .await?;
    }
    txn.commit().await?;
    state.outbox_wakeup.wake();
    Ok(response)
}

/// The user row of a new registration.
fn user_row(
    user_id: Uuid,
    new_user: &NewUser,
    password_hash: String,
    now: DateTime<Utc>,
    next_reminder_at: Option<DateTime<Utc>>,
) -> user::ActiveModel {
    user::ActiveModel {
        id: Set(user_id),
        email: Set(new_user.email.as_str().to_owned()),
        password_hash: Set(password_hash),
        first_name: Set(new_user.first_name.clone()),
        last_name: Set(new_user.last_name.clone()),
        status: Set(UserStatus::PendingVerification),
        created_at: Set(now),
        verified_at: Set(None),
        reminders_sent: Set(0),
        next_reminder_at: Set(next_reminder_at),
        last_resend_at: Set(None),
        wrong_codes: Set(0),
        wrong_codes_since: Set(None),
        resends: Set(0),
        resends_since: Set(None),
        last_attempt_notice_at: Set(None),
        phone: Set(new_user.phone.as_ref().map(|phone| phone.e164().to_owned())),
        phone_verified_at: Set(None),
    }
}

/// The event of a new registration.
fn registered_event(
    user_id: Uuid,
    new_user: &NewUser,
    verification: VerificationDetails,
    now: DateTime<Utc>,
) -> UserRegisteredV1 {
    UserRegisteredV1 {
        user_id,
        email: new_user.email.as_str().to_owned(),
        first_name: new_user.first_name.clone(),
        last_name: new_user.last_name.clone(),
        verification,
        registered_at: Some(now),
    }
}

/// A write of a new user's row failed: the unique email index makes a duplicate
/// [`ApiError::EmailTaken`]. (The other unique keys written with it are random: UUIDv7 ids and
/// hashes of 32 random bytes.)
fn email_taken(error: DbErr) -> ApiError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => ApiError::EmailTaken,
        _ => ApiError::from(error),
    }
}

/// Answers a retried request: the stored response if it repeats the stored request (same
/// fingerprint, and the password of the user it created), else 422 `idempotency_key_reused`.
async fn replay(
    state: &AppState,
    stored: idempotency_key::Model,
    new_user: &NewUser,
) -> Result<Response, ApiError> {
    if !idempotency::has_fingerprint_of(&stored, new_user) {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let response: RegisterResponse =
        serde_json::from_str(&stored.response_body).map_err(anyhow::Error::from)?;
    let password_hash = user::Entity::find_by_id(response.user_id)
        .one(&state.db)
        .await?
        .map(|u| u.password_hash);
    let same_password = match password_hash {
        Some(hash) => state.hasher.verify(&new_user.password, &hash).await?,
        None => false,
    };
    if !same_password {
        return Err(ApiError::IdempotencyKeyReused);
    }
    metrics::counter!("user_registrations_total", "outcome" => "replayed").increment(1);
    let status = StatusCode::from_u16(u16::try_from(stored.response_status).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = (status, Json(response)).into_response();
    reply
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(reply)
}
