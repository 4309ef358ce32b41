//! Sign-up end to end: register → verification mail → the link's page does not verify → its
//! POST does → welcome mail, exactly once.

use serde_json::{Value, json};

use crate::helpers::{code_in, link_in, spawn_stack, subject, token_of};

#[tokio::test]
async fn register_then_verify_by_link_sends_one_welcome_mail() {
    let stack = spawn_stack("e2e_signup_link").await;
    let body =
        json!({"email": "Ann@Example.com", "password": "correct horse", "first_name": "Ann"});
    assert_eq!(stack.register(&body).await.status(), 201);

    let mail = stack.mails(1).await.remove(0);
    assert_eq!(mail.to, ["ann@example.com"]);
    assert_eq!(subject(&mail), "Confirm your email address");
    assert!(mail.data.contains("Hello Ann,"));
    assert!(
        mail.data.contains("Content-Type: text/plain")
            && mail.data.contains("Content-Type: text/html")
    );
    let link = link_in(&mail);
    let path = &link[link.find("/user/verify").unwrap()..];

    // A GET (what a mail scanner does) shows the page and verifies nothing.
    let page = stack.client.get(stack.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    assert_eq!(
        stack
            .count("SELECT COUNT(*) AS n FROM users WHERE status = 'verified'")
            .await,
        0
    );

    // The page's button.
    let token = token_of(&link);
    let confirmed = stack
        .client
        .post(stack.url("/user/verify"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    let welcome = stack.mails(2).await.remove(1);
    assert_eq!(subject(&welcome), "Welcome!");
    assert_eq!(welcome.to, ["ann@example.com"]);

    // Again: already verified, and nothing is sent.
    let again: Value = stack.verify_token(&token).await.json().await.unwrap();
    assert_eq!(again, json!({"status": "already_verified"}));
    assert_eq!(
        stack
            .count("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'UserVerifiedV1'")
            .await,
        1
    );
    // A later sign-up's mail arriving shows the pipeline drained past that point.
    let bob = json!({"email": "bob@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&bob).await.status(), 201);
    let mails = stack.mails(3).await;
    let welcomes = mails.iter().filter(|m| subject(m) == "Welcome!").count();
    assert_eq!(
        welcomes,
        1,
        "{:?}",
        mails.iter().map(subject).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_resent_code_verifies_and_the_old_one_no_longer_does() {
    let stack = spawn_stack("e2e_signup_code").await;
    let body = json!({"email": "cleo@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let old_code = code_in(&stack.mails(1).await[0]);

    let resend = stack.resend("cleo@example.com").await;
    assert_eq!(resend.status(), 202);
    let resent = stack.mails(2).await.remove(1);
    assert_eq!(subject(&resent), "Your new confirmation link");
    let new_code = code_in(&resent);

    if new_code != old_code {
        let refused = stack.verify_code("cleo@example.com", &old_code).await;
        assert_eq!(refused.status(), 400);
    }
    let verified = stack.verify_code("cleo@example.com", &new_code).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(subject(&stack.mails(3).await[2]), "Welcome!");
}
