//! The admin port runs on the shared `common::http::serve`: clients that send their headers
//! slowly are cut off after `HTTP_HEADER_READ_TIMEOUT` while health keeps answering.

use std::time::Duration;

use crate::helpers::{TestContext, http_get, spawn_live_relay};

#[tokio::test]
async fn slow_header_clients_are_cut_off_on_the_admin_port() {
    let ctx = TestContext::new("admin_slowloris").await;
    let (admin, _stop) = spawn_live_relay(outbox_relay::Settings {
        http_header_read_timeout: Duration::from_secs(1),
        http_idle_timeout: Duration::from_secs(600),
        ..ctx.settings()
    })
    .await;
    let live = format!("{admin}/health/live");
    let clients = tokio::spawn(common::testing::slow_header_clients(
        admin,
        200,
        Duration::from_millis(300),
        Duration::from_secs(15),
    ));
    assert_eq!(http_get(&live).await.0, 200, "health answers meanwhile");
    let closed = clients.await.unwrap();
    let slowest = closed.iter().flatten().max().copied();
    let still_open = closed
        .iter()
        .filter(|c| c.is_none_or(|after| after > Duration::from_secs(4)))
        .count();
    assert_eq!(still_open, 0, "slowest closed after {slowest:?}");
    assert_eq!(http_get(&live).await.0, 200);
}
