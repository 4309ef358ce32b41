//! Settings hold connection URLs with passwords (and the user-service its code key); printing
//! them (`{:?}`, as a start-up log or an error report would) must not reveal the secrets, while
//! the services still get them whole.

use common::testing::env_vars;

const DATABASE_URL: &str = "postgres://user_service:db-pw-4711@postgres:5432/users";
const AMQP_URL: &str = "amqps://outbox-relay:amqp-pw-4712@rabbitmq:5671/%2f";
const SMTP_URL: &str = "smtps://mailer:smtp-pw-4713@smtp.example.com:465";
const CODE_HMAC_KEY: &str = "code-key-4715-0123456789abcdef0123456789";
const EMAIL_DATABASE_URL: &str =
    "postgres://email_service@postgres:5432/email?sslmode=require&password=email-pw-4714";
const WEBHOOK_DATABASE_URL: &str = "postgres://webhook_service:webhook-pw-4716@postgres/webhooks";
const WEBHOOK_API_TOKEN: &str = "api-token-4717-0123456789abcdef";
const SMS_TWILIO_AUTH_TOKEN: &str = "twilio-token-4718";
const SMS_HTTP_HEADERS: &str = "Authorization: Bearer sms-bearer-4719";
const SMS_HTTP_URL: &str = "https://sms.example.com/send?api_key=sms-key-4720";

fn environment() -> std::collections::HashMap<String, String> {
    env_vars(&[
        ("DATABASE_URL", DATABASE_URL),
        ("AMQP_URL", AMQP_URL),
        ("SMTP_URL", SMTP_URL),
        ("EMAIL_DATABASE_URL", EMAIL_DATABASE_URL),
        ("WEBHOOK_DATABASE_URL", WEBHOOK_DATABASE_URL),
        ("WEBHOOK_API_TOKEN", WEBHOOK_API_TOKEN),
        ("CODE_HMAC_KEY", CODE_HMAC_KEY),
        ("SMS_TWILIO_AUTH_TOKEN", SMS_TWILIO_AUTH_TOKEN),
        ("SMS_HTTP_HEADERS", SMS_HTTP_HEADERS),
        ("SMS_HTTP_URL", SMS_HTTP_URL),
    ])
}

fn assert_redacted(what: &str, printed: &str) {
    for password in [
        "db-pw-4711",
        "amqp-pw-4712",
        "smtp-pw-4713",
        "email-pw-4714",
        "code-key-4715",
        "webhook-pw-4716",
        "api-token-4717",
        "twilio-token-4718",
        "sms-bearer-4719",
        "sms-key-4720",
    ] {
        assert!(
            !printed.contains(password),
            "{what} prints {password}: {printed}"
        );
    }
}

#[test]
fn debug_output_of_every_settings_struct_hides_the_passwords() {
    let user: user_service::Settings = common::settings::load_from(environment()).unwrap();
    let relay: outbox_relay::Settings = common::settings::load_from(environment()).unwrap();
    let email: email_service::Settings = common::settings::load_from(environment()).unwrap();
    let webhook: webhook_service::Settings = common::settings::load_from(environment()).unwrap();
    let runner: signup_outbox::RunnerSettings = common::settings::load_from(environment()).unwrap();

    // The same variables still reach the services in full.
    assert_eq!(user.database_url.expose(), DATABASE_URL);
    assert_eq!(relay.amqp_url.expose(), AMQP_URL);
    assert_eq!(email.smtp_url.as_ref().unwrap().0, SMTP_URL);
    assert_eq!(runner.email_database_url.expose(), EMAIL_DATABASE_URL);
    assert_eq!(runner.webhook_database_url.expose(), WEBHOOK_DATABASE_URL);
    assert_eq!(
        webhook.webhook_api_token,
        Some(webhook_service::ApiToken(WEBHOOK_API_TOKEN.into()))
    );

    assert_eq!(
        webhook.sms_twilio_auth_token,
        Some(webhook_service::SmsSecret(SMS_TWILIO_AUTH_TOKEN.into()))
    );
    assert_eq!(
        webhook.sms_http_url.as_ref().map(|url| url.expose()),
        Some(SMS_HTTP_URL)
    );

    assert_redacted("user-service Settings", &format!("{user:?}"));
    assert_redacted("outbox-relay Settings", &format!("{relay:?}"));
    assert_redacted("email-service Settings", &format!("{email:#?}"));
    assert_redacted("webhook-service Settings", &format!("{webhook:#?}"));
    assert_redacted("RunnerSettings", &format!("{runner:?}"));
    let stack = signup_outbox::StackSettings {
        user,
        relay,
        email,
        webhook,
    };
    let printed = format!("{stack:?}");
    assert_redacted("StackSettings", &printed);
    // Still useful for debugging: user and host stay.
    assert!(
        printed.contains("user_service:***@postgres:5432/users"),
        "{printed}"
    );
}
