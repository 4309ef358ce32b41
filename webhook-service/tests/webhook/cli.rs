//! The operator commands of the binary (`endpoints`, `messages`, `retry`, `recover`) against a
//! running service.

use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::{
    api::{insert_delivery, send},
    helpers::{TOKEN, TestService, test_settings},
};

/// Runs `webhook-service <args>` against `service`: exit success, stdout, stderr.
async fn run(service: &TestService, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_webhook-service"))
        .args(args)
        .env("HTTP_ADDR", service.base.trim_start_matches("http://"))
        .env("WEBHOOK_API_TOKEN", TOKEN)
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn failed_messages_are_listed_and_recovered_from_the_command_line() {
    let service = TestService::start(test_settings("cli_recover").await).await;
    let (_, endpoint) = send(
        service
            .api(reqwest::Method::POST, "/v1/endpoints")
            .json(&json!({"url": "https://hooks.example.com/x"})),
    )
    .await;
    let id = endpoint["id"].as_str().expect("id");
    let old = insert_delivery(&service.db, id, "failed", Duration::from_secs(3 * 86_400)).await;
    let recent = insert_delivery(&service.db, id, "failed", Duration::from_secs(60)).await;

    let (ok, listed, _) = run(&service, &["endpoints"]).await;
    assert!(ok && listed.contains(id), "{listed}");
    let (ok, failed, _) = run(&service, &["messages", id]).await;
    assert!(ok, "{failed}");
    assert!(failed.contains(&old.to_string()) && failed.contains(&recent.to_string()));

    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (ok, recovered, _) = run(&service, &["recover", id, "--since", &since]).await;
    assert!(ok, "{recovered}");
    let answer: serde_json::Value = serde_json::from_str(&recovered).expect("JSON");
    assert_eq!(answer["recovered"], 1, "only the failure since then");

    let (ok, _, error) = run(&service, &["recover", id, "--since", "yesterday"]).await;
    assert!(!ok);
    assert!(
        error.contains("\"yesterday\" is not an RFC 3339 time"),
        "{error}"
    );
    let (ok, _, error) = run(&service, &["messages", "not-an-endpoint"]).await;
    assert!(!ok);
    assert!(error.contains("404"), "{error}");
}
