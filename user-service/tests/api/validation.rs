//! The validation matrix: each bad request gets its documented status and error code, and
//! nothing is written.

use serde_json::{Value, json};

use crate::helpers::{ann, spawn_app};

#[tokio::test]
async fn bad_json_bodies_get_422_with_per_field_details() {
    let app = spawn_app("validation").await;
    let long = "x".repeat(129);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no at sign",
            json!({"email": "ann.example.com", "password": "long enough"}),
            "email",
        ),
        (
            "empty email",
            json!({"email": "   ", "password": "long enough"}),
            "email",
        ),
        (
            "two at signs",
            json!({"email": "a@b@c.com", "password": "long enough"}),
            "email",
        ),
        (
            "too long email",
            json!({"email": format!("{}@x.com", "a".repeat(250)), "password": "long enough"}),
            "email",
        ),
        (
            "short password",
            json!({"email": "ann@x.com", "password": "short"}),
            "password",
        ),
        (
            "7 chars",
            json!({"email": "ann@x.com", "password": "1234567"}),
            "password",
        ),
        (
            "129 chars",
            json!({"email": "ann@x.com", "password": long}),
            "password",
        ),
        (
            "long first name",
            json!({"email": "ann@x.com", "password": "long enough", "first_name": "n".repeat(101)}),
            "first_name",
        ),
        (
            "long last name",
            json!({"email": "ann@x.com", "password": "long enough", "last_name": "n".repeat(101)}),
            "last_name",
        ),
        ("missing email", json!({"password": "long enough"}), "body"),
        ("missing password", json!({"email": "ann@x.com"}), "body"),
        (
            "number as email",
            json!({"email": 42, "password": "long enough"}),
            "body",
        ),
        (
            "null password",
            json!({"email": "ann@x.com", "password": null}),
            "body",
        ),
        (
            "unknown field",
            json!({"email": "ann@x.com", "password": "long enough", "fist_name": "Ann"}),
            "body",
        ),
        ("array body", json!(["ann@x.com"]), "body"),
    ];
    for (name, body, field) in cases {
        let response = app.register(&body).await;
        assert_eq!(response.status(), 422, "{name}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed", "{name}");
        assert!(error["error"]["message"].is_string(), "{name}");
        assert!(
            error["error"]["details"][field].is_array(),
            "{name}: {error}"
        );
    }
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("outbox").await, 0);
}

#[tokio::test]
async fn boundary_lengths_are_accepted() {
    let app = spawn_app("boundaries").await;
    let ok = [
        json!({"email": "a@x.com", "password": "12345678"}),
        json!({"email": "b@x.com", "password": "p".repeat(128), "first_name": "n".repeat(100)}),
        json!({"email": "c@x.com", "password": "pässwörd-ünïcode"}),
    ];
    for body in ok {
        assert_eq!(app.register(&body).await.status(), 201, "{body}");
    }
}

#[tokio::test]
async fn malformed_oversized_and_non_json_requests_get_their_status() {
    let app = spawn_app("transport_errors").await;
    let post = |content_type: Option<&'static str>, body: Vec<u8>| {
        let mut request = app.client.post(app.url("/user/register")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    let cases: Vec<(Option<&'static str>, Vec<u8>, u16, &str)> = vec![
        (
            Some("application/json"),
            b"{\"email\": ".to_vec(),
            400,
            "malformed_json",
        ),
        (
            Some("application/json"),
            b"not json at all".to_vec(),
            400,
            "malformed_json",
        ),
        (
            Some("text/plain"),
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (None, b"{}".to_vec(), 415, "unsupported_media_type"),
        (
            Some("application/json"),
            format!("{{\"email\": \"{}\"}}", "a".repeat(100_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code);
    }
    let unknown = app.get("/user/register").await;
    assert_eq!(unknown.status(), 405);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn names_that_could_carry_a_message_are_refused() {
    let app = spawn_app("names").await;
    for (field, name) in [
        ("first_name", "http://spam.example"),
        ("first_name", "Win at casino.example"),
        ("last_name", "Call 555 0100"),
        ("last_name", "Ann\u{202e}nnA"),
        ("first_name", "Ann\u{0}"),
    ] {
        let mut body = ann();
        body[field] = json!(name);
        let response = app.register(&body).await;
        assert_eq!(response.status(), 422, "{name:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["error"]["details"][field][0]["code"], "invalid_characters",
            "{name:?}: {error}"
        );
    }
    let mut body = ann();
    body["first_name"] = json!("Jean-Luc");
    body["last_name"] = json!("D\u{2019}Angelo-Ólafsdóttir J.");
    assert_eq!(app.register(&body).await.status(), 201);
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn ip_literal_domains_are_refused_and_international_domains_are_one_account() {
    let app = spawn_app("email_domains").await;
    for email in ["ann@[10.0.0.1]", "ann@127.0.0.1"] {
        let response = app
            .register(&json!({"email": email, "password": "correct horse battery"}))
            .await;
        assert_eq!(response.status(), 422, "{email}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["details"]["email"].is_array(), "{error}");
    }
    let unicode = json!({"email": "Ann@Bücher.Example", "password": "correct horse battery"});
    assert_eq!(app.register(&unicode).await.status(), 201);
    let ascii = json!({"email": "ann@xn--bcher-kva.example", "password": "correct horse battery"});
    assert_eq!(app.register(&ascii).await.status(), 409);
    assert_eq!(
        app.scalar("SELECT COUNT(*) AS n FROM users WHERE email = 'ann@xn--bcher-kva.example'")
            .await,
        1
    );
}

#[tokio::test]
async fn passwords_are_compared_after_nfkc_normalisation() {
    let app = spawn_app("password_nfkc").await;
    // Full-width letters and a decomposed é, as another keyboard or OS may send them.
    let typed = json!({"email": "ann@example.com", "password": "ｃｏｒｒｅｃｔ horse e\u{301}te"});
    assert_eq!(app.register_with_key("k", &typed).await.status(), 201);
    // The replay checks the password against the stored argon2 hash: the normalised form matches.
    let normal = json!({"email": "ann@example.com", "password": "correct horse \u{e9}te"});
    let replay = app.register_with_key("k", &normal).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}
