//! Secrets at rest: once the broker confirmed a row, its payload keeps the ids and event type
//! but no verification link or code; the published message still carries them. Both backends.

use std::time::Duration;

use chrono::Utc;
use common::{
    events::{UserRegisteredV1, VerificationDetails},
    trace::TraceContext,
};
use outbox_relay::Application;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use uuid::Uuid;

use crate::helpers::{TestContext, collect};

/// Writes one `UserRegisteredV1` whose link token and code are returned.
async fn write_registration(ctx: &TestContext) -> (Uuid, String, String) {
    let (user_id, token) = (Uuid::new_v4(), Uuid::new_v4().simple().to_string());
    let code = "831972".to_owned();
    let event = UserRegisteredV1 {
        user_id,
        email: "ann@example.com".into(),
        first_name: None,
        last_name: None,
        verification: VerificationDetails {
            link: format!("https://example.com/user/verify?token={token}"),
            code: code.clone(),
            expires_at: Utc::now(),
            code_expires_at: None,
        },
        registered_at: None,
    };
    let txn = ctx.db.begin().await.unwrap();
    outbox::enqueue(&txn, Utc::now(), event, &TraceContext::new_root())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    (user_id, token, code)
}

/// Every column of every outbox row, as text.
async fn outbox_text(ctx: &TestContext) -> String {
    let backend = ctx.db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "SELECT o::text AS row FROM outbox o",
        // Ids are blobs here; the payload holds them as text.
        _ => {
            "SELECT event_type || routing_key || payload || COALESCE(redacted_payload, '') \
             || headers AS row FROM outbox"
        }
    };
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", "row").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn secrets_are_blanked_once_published(ctx: TestContext) {
    let mut consumer = ctx.bind_test_queue().await;
    let app = Application::build(ctx.settings()).await.unwrap();
    let (user_id, token, code) = write_registration(&ctx).await;
    let pending = outbox_text(&ctx).await;
    assert!(
        pending.contains(&token) && pending.contains(&code),
        "{pending}"
    );

    assert_eq!(app.relay().relay_once().await.unwrap().published, 1);
    let delivery = collect(&mut consumer, 1, Duration::from_secs(10))
        .await
        .remove(0);
    let body = String::from_utf8(delivery.data.clone()).unwrap();
    assert!(body.contains(&token) && body.contains(&code), "{body}");

    let published = outbox_text(&ctx).await;
    assert!(!published.contains(&token), "{published}");
    assert!(!published.contains(&code), "{published}");
    assert!(published.contains(outbox::REDACTED), "{published}");
    assert!(published.contains("UserRegisteredV1"), "{published}");
    assert!(published.contains(&user_id.to_string()), "{published}");
}

#[tokio::test]
async fn a_published_row_keeps_no_secret_on_postgres() {
    secrets_are_blanked_once_published(TestContext::new("relay_secrets").await).await;
}

#[tokio::test]
async fn a_published_row_keeps_no_secret_on_sqlite() {
    let path = std::env::temp_dir().join(format!("relay-secrets-{}.db", Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    secrets_are_blanked_once_published(TestContext::with_db_url(url).await).await;
    let _ = std::fs::remove_file(&path);
}
