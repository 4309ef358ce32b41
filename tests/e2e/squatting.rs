//! Squatting end to end: a duplicate sign-up answers 409 and the address owner receives one
//! notice mail however many duplicates follow; the verification mail says when the sign-up was
//! made.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::helpers::{spawn_stack, subject};

const NOTICE: &str = "Someone tried to sign up with your address";

#[tokio::test]
async fn five_duplicate_sign_ups_get_409_and_the_owner_one_notice_mail() {
    let stack = spawn_stack("e2e_squat_notice").await;
    let body = json!({"email": "owner@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let verification = stack.mails(1).await.remove(0);

    // The verification mail says when the sign-up was made (PostgreSQL's clock of the row).
    let row = stack
        .user_db
        .query_one_raw(Statement::from_string(
            stack.user_db.get_database_backend(),
            "SELECT created_at FROM users WHERE email = 'owner@example.com'",
        ))
        .await
        .unwrap()
        .unwrap();
    let created_at: sea_orm::prelude::ChronoDateTimeUtc = row.try_get("", "created_at").unwrap();
    let line = format!(
        "This address was used to sign up on {}.",
        created_at.format("%Y-%m-%d %H:%M UTC")
    );
    assert!(verification.data.contains(&line), "{}", verification.data);

    for i in 0..5 {
        let duplicate =
            json!({"email": "Owner@Example.com", "password": format!("other password {i}")});
        let response = stack.register(&duplicate).await;
        assert_eq!(response.status(), 409);
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "email_taken");
    }
    let notice = stack.mails(2).await.remove(1);
    assert_eq!(subject(&notice), NOTICE);
    assert_eq!(notice.to, ["owner@example.com"]);
    assert!(!notice.data.contains("http://"), "nothing to click");

    // A later sign-up's mail arriving shows the pipeline drained past the duplicates.
    let marker = json!({"email": "marker@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&marker).await.status(), 201);
    let mails = stack.mails(3).await;
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "every outbox row published",
        || async {
            stack
                .count("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
                .await
                == 0
        },
    )
    .await;
    let notices = mails.iter().filter(|m| subject(m) == NOTICE).count();
    assert_eq!(
        notices,
        1,
        "{:?}",
        mails.iter().map(subject).collect::<Vec<_>>()
    );
    assert_eq!(stack.sink.received().len(), 3);
}
