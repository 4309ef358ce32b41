//! The validation matrix: each bad request gets its documented status and error code, and
//! nothing is written.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

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
