//! `GET /openapi.json` parses and lists every route the router serves.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_openapi_document_parses_and_matches_the_router() {
    let app = spawn_app("openapi").await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_str(&text).expect("a valid OpenAPI document");
    assert!(parsed.info.title.contains("user-service"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/user/register"),
        ("GET", "/user/verify"),
        ("POST", "/user/verify"),
        ("POST", "/user/verification/resend"),
        ("POST", "/user/phone/verify"),
        ("POST", "/user/phone/verification/resend"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, expected);

    // Every documented operation is served (not 404/405), and every error response names the
    // shared error schema.
    for (method, path) in &documented {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let status = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status != 404 || path == "/user/verify",
            "{method} {path} is not served"
        );
        assert_ne!(status, 405, "{method} {path} is not served");
    }
    let register_409 = &doc["paths"]["/user/register"]["post"]["responses"]["409"];
    assert!(
        register_409.to_string().contains("ErrorBody"),
        "{register_409}"
    );
    assert!(doc["components"]["schemas"]["RegisterRequest"]["properties"]["email"].is_object());
    assert!(doc["components"]["schemas"]["RegisterRequest"]["properties"]["phone"].is_object());
    // The check results are an enum of the schema, not prose only.
    let results = doc["components"]["schemas"]["CheckResult"].to_string();
    for result in [
        "verified",
        "incorrect",
        "expired",
        "max_attempts_reached",
        "already_verified",
    ] {
        assert!(results.contains(&format!("\"{result}\"")), "{results}");
    }
}
