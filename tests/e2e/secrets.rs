//! Secrets at rest and in transit, end to end: after publishing, the outbox holds no
//! verification code or token (the mails did carry them), and the stack runs on a PostgreSQL
//! connection that `sslmode=require` keeps encrypted.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    TestStack, code_in, eventually, has_code, link_in, spawn_stack, spawn_stack_with, token_of,
};

/// Every row of the outbox, every column, as PostgreSQL prints it.
async fn outbox_text(stack: &TestStack) -> String {
    use sea_orm::ConnectionTrait;
    let rows = stack
        .user_db
        .query_all_raw(sea_orm::Statement::from_string(
            stack.user_db.get_database_backend(),
            "SELECT o::text AS row FROM outbox o ORDER BY seq",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", "row").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_until_all_published(stack: &TestStack, rows: i64) {
    eventually(
        Duration::from_secs(30),
        "every outbox row published",
        || async {
            let published = stack
                .count("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NOT NULL")
                .await;
            published == rows
        },
    )
    .await;
}

#[tokio::test]
async fn no_code_or_token_stays_in_the_outbox_after_publishing() {
    let stack = spawn_stack("e2e_outbox_secrets").await;
    let body = json!({"email": "otto@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    assert_eq!(stack.resend("otto@example.com").await.status(), 202);
    let mails = stack.mails(2).await;
    wait_until_all_published(&stack, 2).await;

    let outbox = outbox_text(&stack).await;
    assert!(outbox.contains("UserRegisteredV1") && outbox.contains("VerificationResentV1"));
    assert!(outbox.contains(outbox::REDACTED), "{outbox}");
    for mail in &mails {
        let (token, code) = (token_of(&link_in(mail)), code_in(mail));
        assert!(
            !outbox.contains(&token),
            "token {token} in the outbox: {outbox}"
        );
        assert!(
            !has_code(&outbox, &code),
            "code {code} in the outbox: {outbox}"
        );
    }
}

#[tokio::test]
async fn the_stack_runs_on_postgresql_with_sslmode_require() {
    let stack = spawn_stack_with("e2e_postgres_tls", |settings| {
        let url = format!("{}?sslmode=require", settings.user.database_url.expose());
        settings.user.database_url = url.as_str().into();
        settings.relay.database_url = url.into();
    })
    .await;
    let body = json!({"email": "tess@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    stack.mails(1).await;
    let plain = stack
        .count(
            "SELECT COUNT(*) AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = current_database() AND NOT ssl",
        )
        .await;
    let encrypted = stack
        .count(
            "SELECT COUNT(*) AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = current_database() AND ssl",
        )
        .await;
    assert_eq!(plain, 0, "every connection of the stack is encrypted");
    assert!(encrypted > 0);
}
