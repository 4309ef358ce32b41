//! Verification by link and code, expiry, locking, resend and no account enumeration.

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, ann, spawn_app};

async fn registered(label: &str) -> TestApp {
    let app = spawn_app(label).await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    app
}

#[tokio::test]
async fn the_link_page_does_not_verify_and_its_form_post_does() {
    let app = registered("verify_link").await;
    let (token, _) = app.latest_secrets().await;

    let page = app.get(&format!("/user/verify?token={token}")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\" action=\"/user/verify\">"),
        "{html}"
    );
    assert!(html.contains(&token));
    // Fetching the page (as a mail scanner would) twice changes nothing.
    app.get(&format!("/user/verify?token={token}")).await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) AS n FROM users WHERE status = 'verified'")
            .await,
        0
    );
    assert!(app.events("UserVerifiedV1").await.is_empty());

    let confirmed = app
        .client
        .post(app.url("/user/verify"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("verified"));
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) AS n FROM users WHERE status = 'verified' AND next_reminder_at IS NULL"
        )
        .await,
        1
    );
    let verified = app.events("UserVerifiedV1").await;
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["data"]["email"], "ann@example.com");

    // Repeating is idempotent: already verified, no second event.
    let (status, body) = app.verify_token(&token).await;
    assert_eq!((status, body), (200, json!({"status": "already_verified"})));
    assert_eq!(app.events("UserVerifiedV1").await.len(), 1);
}

#[tokio::test]
async fn json_token_verification_and_bad_tokens() {
    let app = registered("verify_token_json").await;
    let (token, _) = app.latest_secrets().await;
    for bad in ["", "abc", &"0".repeat(64)] {
        let (status, body) = app.verify_token(bad).await;
        assert_eq!(status, 404, "{bad:?}");
        assert_eq!(body["error"]["code"], "invalid_token");
        let page = app.get(&format!("/user/verify?token={bad}")).await;
        assert_eq!(page.status(), 404);
        assert!(page.text().await.unwrap().contains("not valid"));
    }
    let (status, body) = app.verify_token(&token).await;
    assert_eq!((status, body), (200, json!({"status": "verified"})));
}

#[tokio::test]
async fn wrong_codes_lock_the_code_and_a_resend_issues_a_working_code() {
    let app = registered("verify_code").await;
    let (_, code) = app.latest_secrets().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, body) = app.verify_code("ann@example.com", wrong).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_code");
        assert!(body["error"].get("details").is_none(), "{body}");
    }
    // Locked: even the right code is refused now, with the same answer as a wrong one.
    let (status, body) = app.verify_code("ann@example.com", &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_code");

    let resend = app.resend("ANN@example.com").await;
    assert_eq!(resend.status(), 202);
    assert_eq!(app.events("VerificationResentV1").await.len(), 1);
    let (new_token, new_code) = app.latest_secrets().await;

    // The old code no longer works (its verification was superseded) ...
    if new_code != code {
        let (status, body) = app.verify_code("ann@example.com", &code).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_code"))
        );
    }
    // ... and neither does the old link.
    let (old_token, _) = {
        let registered = app.events("UserRegisteredV1").await;
        let link = registered[0]["data"]["verification"]["link"]
            .as_str()
            .unwrap()
            .to_owned();
        (link.split("token=").nth(1).unwrap().to_owned(), ())
    };
    assert_ne!(old_token, new_token);
    let (status, _) = app.verify_token(&old_token).await;
    assert_eq!(status, 404);

    let (status, body) = app.verify_code("ann@example.com", &new_code).await;
    assert_eq!((status, body), (200, json!({"status": "verified"})));
}

#[tokio::test]
async fn expired_tokens_get_410_and_expired_codes_the_wrong_code_answer() {
    let app = registered("verify_expired").await;
    let (token, code) = app.latest_secrets().await;
    app.db
        .execute_unprepared("UPDATE verifications SET expires_at = now() - interval '1 second'")
        .await
        .unwrap();
    let (status, body) = app.verify_token(&token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("verification_expired"))
    );
    let (status, body) = app.verify_code("ann@example.com", &code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_code"))
    );
    let page = app.get(&format!("/user/verify?token={token}")).await;
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("expired"));
    assert_eq!(
        app.scalar("SELECT COUNT(*) AS n FROM users WHERE status = 'verified'")
            .await,
        0
    );
}

#[tokio::test]
async fn resend_answers_alike_for_unknown_and_known_addresses_and_is_rate_limited() {
    let app = registered("resend").await;
    let known = app.resend("ann@example.com").await;
    let unknown = app.resend("nobody@example.com").await;
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), known.status());
    let names = |r: &reqwest::Response| {
        let mut names: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&known), names(&unknown));
    let known_body: Value = known.json().await.unwrap();
    let unknown_body: Value = unknown.json().await.unwrap();
    assert_eq!(known_body, unknown_body);
    assert_eq!(app.events("VerificationResentV1").await.len(), 1);

    // Within RESEND_MIN_INTERVAL: accepted, ignored.
    let again = app.resend("ann@example.com").await;
    assert_eq!(again.status(), 202);
    assert_eq!(app.events("VerificationResentV1").await.len(), 1);
    let metrics = app.admin_metrics().await;
    assert!(
        metrics.contains("verification_resends_total{outcome=\"rate_limited\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn concurrent_confirmations_verify_once() {
    let app = registered("verify_concurrent").await;
    let (token, _) = app.latest_secrets().await;
    let body = json!({"token": token});
    let requests = (0..10).map(|_| app.post_json("/user/verify", &body));
    let mut outcomes: Vec<String> = Vec::new();
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        outcomes.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "verified").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(app.events("UserVerifiedV1").await.len(), 1);
}

#[tokio::test]
async fn a_verified_address_answers_a_wrong_code_like_an_unknown_one() {
    let app = registered("verified_enumeration").await;
    let (_, code) = app.latest_secrets().await;
    let ok = app
        .post_json(
            "/user/verify",
            &json!({"email": "ann@example.com", "code": code}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let verified_wrong = app.verify_code("ann@example.com", wrong).await;
    let unknown = app.verify_code("nobody@example.com", wrong).await;
    assert_eq!(verified_wrong, unknown);
    assert_eq!(unknown.0, 400);
    // The right code still says "already verified".
    let (status, body) = app.verify_code("ann@example.com", &code).await;
    assert_eq!((status, body), (200, json!({"status": "already_verified"})));
}

#[tokio::test]
async fn a_code_check_waits_for_a_resend_in_progress_instead_of_deadlocking() {
    use sea_orm::TransactionTrait;
    let app = registered("verify_lock_order").await;
    let (_, code) = app.latest_secrets().await;

    // A resend in progress: it holds the user row and is about to supersede the verifications.
    let resend = app.db.begin().await.unwrap();
    resend
        .execute_unprepared(
            "UPDATE users SET last_resend_at = now() WHERE email = 'ann@example.com'",
        )
        .await
        .unwrap();
    let verify = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/user/verify"));
        async move {
            let body = json!({"email": "ann@example.com", "code": code});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    // Wait until the code check is blocked on a lock.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .scalar("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        .await
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "the code check never waited");
        tokio::task::yield_now().await;
    }
    // Had the code check locked the verification first, this would deadlock.
    resend
        .execute_unprepared(
            "UPDATE verifications SET superseded_at = now() WHERE superseded_at IS NULL",
        )
        .await
        .expect("no deadlock");
    resend.commit().await.unwrap();
    // The verification it checked was replaced meanwhile: a clean 400, not a 500.
    assert_eq!(verify.await.unwrap(), 400);
}
