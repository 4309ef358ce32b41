//! Mail templates: one text and one HTML template per event type, kept as files under
//! `email-service/templates/` and compiled into the binary, rendered with `minijinja` (HTML
//! templates auto-escape, so a name like `<script>` is harmless).
//!
//! [`Templates::render`] turns an event into a complete multipart message with `From`, `To`,
//! `Subject`, `Date` and a `Message-ID` derived from the event id: every attempt and every
//! replay of one event carries the same Message-ID, so a receiving server can also recognise a
//! duplicate.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use common::events::{SignupEvent, VerificationDetails};
use lettre::{
    Message,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{ContentTransferEncoding, ContentType},
    },
};
use minijinja::{Environment, context};
use uuid::Uuid;

/// Why an event cannot become a mail. Permanent: the same event never renders. The underlying
/// error is the `source`; print the chain (`{:#}` through anyhow) to see it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    /// The recipient address does not parse.
    #[error("invalid recipient address")]
    InvalidRecipient(#[from] lettre::address::AddressError),
    /// A template failed to render.
    #[error("template error")]
    Template(#[from] minijinja::Error),
    /// The message could not be assembled.
    #[error("cannot build the message")]
    Build(#[from] lettre::error::Error),
    /// The event announces no mail (a phone event: its message is an SMS).
    #[error("the event announces no mail")]
    NotAMail,
}

/// The compiled templates and the sender.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
    from: Mailbox,
}

macro_rules! template {
    ($env:ident, $name:literal) => {
        $env.add_template($name, include_str!(concat!("../templates/", $name)))?;
    };
}

impl Templates {
    /// Compiles the templates; `from` is the `From` mailbox.
    ///
    /// # Errors
    /// When `from` does not parse or a template has a syntax error.
    pub(crate) fn new(from: &str) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        template!(env, "layout.html");
        template!(env, "verification.txt");
        template!(env, "verification.html");
        template!(env, "reminder.txt");
        template!(env, "reminder.html");
        template!(env, "resend.txt");
        template!(env, "resend.html");
        template!(env, "welcome.txt");
        template!(env, "welcome.html");
        template!(env, "signup_attempt.txt");
        template!(env, "signup_attempt.html");
        let from = from
            .parse()
            .with_context(|| format!("MAIL_FROM {from:?}"))?;
        Ok(Self { env, from })
    }

    /// Renders the mail announced by `event`.
    ///
    /// # Errors
    /// [`RenderError`]; all variants are permanent.
    pub(crate) fn render(&self, event: &SignupEvent) -> Result<Message, RenderError> {
        match event {
            SignupEvent::UserRegistered(e) => {
                let d = &e.data;
                self.build(
                    e.event_id,
                    Recipient::new(&d.email, d.first_name.as_deref(), d.last_name.as_deref()),
                    "Confirm your email address",
                    "verification",
                    verification_context(
                        d.first_name.as_deref(),
                        &d.verification,
                        0,
                        // Events from before `registered_at`: the envelope's time is the
                        // registration's (the event is written in the sign-up transaction).
                        Some(d.registered_at.unwrap_or(e.occurred_at)),
                    ),
                )
            }
            SignupEvent::VerificationReminder(e) => {
                let d = &e.data;
                self.build(
                    e.event_id,
                    Recipient::new(&d.email, d.first_name.as_deref(), d.last_name.as_deref()),
                    "Reminder: confirm your email address",
                    "reminder",
                    verification_context(
                        d.first_name.as_deref(),
                        &d.verification,
                        d.reminder_number,
                        d.registered_at,
                    ),
                )
            }
            SignupEvent::VerificationResent(e) => {
                let d = &e.data;
                self.build(
                    e.event_id,
                    Recipient::new(&d.email, d.first_name.as_deref(), d.last_name.as_deref()),
                    "Your new confirmation link",
                    "resend",
                    verification_context(
                        d.first_name.as_deref(),
                        &d.verification,
                        0,
                        d.registered_at,
                    ),
                )
            }
            SignupEvent::UserVerified(e) => {
                let d = &e.data;
                self.build(
                    e.event_id,
                    Recipient::new(&d.email, d.first_name.as_deref(), d.last_name.as_deref()),
                    "Welcome!",
                    "welcome",
                    context! { first_name => greeting_name(d.first_name.as_deref()), email => d.email },
                )
            }
            // No name and no link: the names of a pending account were typed by whoever signed
            // up, and the notice asks for nothing.
            SignupEvent::SignupAttempted(e) => {
                let d = &e.data;
                self.build(
                    e.event_id,
                    Recipient::new(&d.email, None, None),
                    "Someone tried to sign up with your address",
                    "signup_attempt",
                    context! {
                        email => d.email,
                        attempted_at => d.attempted_at.format(TIME_FORMAT).to_string(),
                        account_verified => d.account_verified,
                    },
                )
            }
            SignupEvent::PhoneVerificationRequested(_) | SignupEvent::PhoneVerified(_) => {
                Err(RenderError::NotAMail)
            }
        }
    }

    fn build(
        &self,
        event_id: Uuid,
        to: Recipient<'_>,
        subject: &str,
        template: &str,
        ctx: minijinja::Value,
    ) -> Result<Message, RenderError> {
        let text = self
            .env
            .get_template(&format!("{template}.txt"))?
            .render(&ctx)?;
        let html = self
            .env
            .get_template(&format!("{template}.html"))?
            .render(&ctx)?;
        let domain = self.from.email.domain();
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to.mailbox()?)
            .subject(subject)
            .message_id(Some(format!("<{event_id}@{domain}>")))
            .date_now()
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, text))
                    .singlepart(part(ContentType::TEXT_HTML, html)),
            )?)
    }
}

struct Recipient<'a> {
    email: &'a str,
    name: Option<String>,
}

impl<'a> Recipient<'a> {
    fn new(email: &'a str, first: Option<&str>, last: Option<&str>) -> Self {
        let name = [first, last]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            email,
            name: (!name.is_empty()).then_some(name),
        }
    }

    fn mailbox(&self) -> Result<Mailbox, RenderError> {
        Ok(Mailbox::new(self.name.clone(), self.email.trim().parse()?))
    }
}

/// A body part. ASCII text whose lines fit SMTP's 998-octet limit goes out as `7bit`, readable
/// as is in a `.eml` file or a test; anything else gets lettre's choice (quoted-printable or
/// base64). lettre alone would pick quoted-printable for any line over 76 characters, and
/// verification links are longer than that.
fn part(content_type: ContentType, text: String) -> SinglePart {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let plain = text.is_ascii() && text.split("\r\n").all(|line| line.len() <= 998);
    let body = if plain {
        Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    };
    SinglePart::builder().header(content_type).body(body)
}

fn greeting_name(first_name: Option<&str>) -> Option<&str> {
    first_name.map(str::trim).filter(|s| !s.is_empty())
}

/// How times appear in mails.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M UTC";

fn verification_context(
    first_name: Option<&str>,
    verification: &VerificationDetails,
    reminder_number: u32,
    registered_at: Option<DateTime<Utc>>,
) -> minijinja::Value {
    context! {
        first_name => greeting_name(first_name),
        link => verification.link,
        code => verification.code,
        expires_at => verification.expires_at.format(TIME_FORMAT).to_string(),
        code_expires_at => verification.code_valid_until().format(TIME_FORMAT).to_string(),
        reminder_number => reminder_number,
        registered_at => registered_at.map(|at| at.format(TIME_FORMAT).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::events::{Envelope, UserRegisteredV1};

    fn registered(first_name: Option<&str>, email: &str) -> SignupEvent {
        SignupEvent::UserRegistered(Envelope::new(
            Uuid::new_v4(),
            Utc::now(),
            UserRegisteredV1 {
                user_id: Uuid::new_v4(),
                email: email.into(),
                first_name: first_name.map(Into::into),
                last_name: None,
                verification: VerificationDetails {
                    link: "http://x/user/verify?token=abc&x=1".into(),
                    code: "123456".into(),
                    expires_at: Utc::now(),
                    code_expires_at: None,
                },
                registered_at: Some(at("2026-11-20T08:15:00Z")),
            },
        ))
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn raw(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn verification_mail_has_both_parts_link_code_and_headers() {
        let templates = Templates::new("Signup <no-reply@example.com>").unwrap();
        let event = registered(Some("Ann"), "ann@example.com");
        let text = raw(&templates.render(&event).unwrap());
        assert!(text.contains("To: Ann <ann@example.com>"));
        assert!(text.contains(&format!("Message-ID: <{}@example.com>", event.event_id())));
        assert!(text.contains("Date: "));
        assert!(text.contains("Content-Type: text/plain"));
        assert!(text.contains("Content-Type: text/html"));
        assert!(text.contains("Hello Ann,"));
        assert!(text.contains("123456"));
        assert!(text.contains("http://x/user/verify?token=abc&x=1"));
        assert!(text.contains("token=abc&amp;x=1"), "HTML escapes the link");
    }

    #[test]
    fn greeting_without_a_name_and_html_escaping_of_names() {
        let templates = Templates::new("no-reply@example.com").unwrap();
        let text = raw(&templates
            .render(&registered(None, "a@example.com"))
            .unwrap());
        assert!(text.contains("Hello,"));
        let text = raw(&templates
            .render(&registered(Some("<b>x</b>"), "a@example.com"))
            .unwrap());
        assert!(text.contains("<p>Hello &lt;b&gt;x&lt;"));
    }

    #[test]
    fn every_event_type_renders_with_its_own_subject() {
        use common::events::{UserVerifiedV1, VerificationReminderV1, VerificationResentV1};
        let templates = Templates::new("no-reply@example.com").unwrap();
        let verification = VerificationDetails {
            link: "http://x/user/verify?token=t".into(),
            code: "654321".into(),
            expires_at: Utc::now(),
            code_expires_at: None,
        };
        let (user_id, email) = (Uuid::new_v4(), "ann@example.com".to_owned());
        let events = [
            SignupEvent::VerificationReminder(Envelope::new(
                Uuid::new_v4(),
                Utc::now(),
                VerificationReminderV1 {
                    user_id,
                    email: email.clone(),
                    first_name: None,
                    last_name: None,
                    verification: verification.clone(),
                    reminder_number: 2,
                    registered_at: None,
                },
            )),
            SignupEvent::VerificationResent(Envelope::new(
                Uuid::new_v4(),
                Utc::now(),
                VerificationResentV1 {
                    user_id,
                    email: email.clone(),
                    first_name: None,
                    last_name: None,
                    verification: verification.clone(),
                    registered_at: None,
                },
            )),
            SignupEvent::UserVerified(Envelope::new(
                Uuid::new_v4(),
                Utc::now(),
                UserVerifiedV1 {
                    user_id,
                    email,
                    first_name: Some("Ann".into()),
                    last_name: None,
                    verified_at: Utc::now(),
                },
            )),
        ];
        let expected = [
            (
                "Subject: Reminder: confirm your email address",
                Some("654321"),
            ),
            ("Subject: Your new confirmation link", Some("654321")),
            ("Subject: Welcome!", None),
        ];
        for (event, (subject, code)) in events.iter().zip(expected) {
            let text = raw(&templates.render(event).unwrap());
            assert!(text.contains(subject), "{text}");
            if let Some(code) = code {
                assert!(text.contains(code) && text.contains("http://x/user/verify?token=t"));
            }
        }
    }

    #[test]
    fn the_verification_mail_says_when_the_sign_up_was_made() {
        let templates = Templates::new("no-reply@example.com").unwrap();
        let text = raw(&templates
            .render(&registered(None, "a@example.com"))
            .unwrap());
        let line = "This address was used to sign up on 2026-11-20 08:15 UTC.";
        assert_eq!(text.matches(line).count(), 2, "text and HTML: {text}");
        assert!(text.contains(&format!("<p>{line}</p>")), "{text}");
    }

    #[test]
    fn an_old_registration_event_shows_its_envelope_time_as_the_sign_up_time() {
        let templates = Templates::new("no-reply@example.com").unwrap();
        let SignupEvent::UserRegistered(mut event) = registered(None, "a@example.com") else {
            unreachable!()
        };
        event.data.registered_at = None;
        event.occurred_at = at("2026-11-21T09:30:00Z");
        let text = raw(&templates
            .render(&SignupEvent::UserRegistered(event))
            .unwrap());
        assert!(text.contains("sign up on 2026-11-21 09:30 UTC."), "{text}");
    }

    #[test]
    fn an_invalid_recipient_does_not_render() {
        let templates = Templates::new("no-reply@example.com").unwrap();
        assert!(matches!(
            templates.render(&registered(None, "not an address")),
            Err(RenderError::InvalidRecipient(_))
        ));
    }

    #[test]
    fn a_phone_event_is_not_a_mail() {
        let templates = Templates::new("no-reply@example.com").unwrap();
        let event = SignupEvent::PhoneVerificationRequested(
            common::testing::phone_verification_requested("123456"),
        );
        assert!(matches!(
            templates.render(&event),
            Err(RenderError::NotAMail)
        ));
        assert_eq!(crate::cap::recipient_key(&event), None);
    }
}
