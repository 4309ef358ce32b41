//! The HTTP edge: slow or silent clients (headers or body) cannot hold connections, the connection cap, metrics
//! only on the admin port, and what the middleware does to every request and answer.

use std::time::Duration;

use common::testing::{http_get, slow_header_clients};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::spawn_tuned;

/// How many of the slow-header clients the server has not closed within the allowed time.
fn still_open(closed: &[Option<Duration>], within: Duration) -> usize {
    closed
        .iter()
        .filter(|c| c.is_none_or(|after| after > within))
        .count()
}

#[tokio::test]
async fn a_thousand_slow_header_clients_are_cut_off_while_health_answers() {
    let app = spawn_tuned("slowloris", |s| {
        s.http_header_read_timeout = Duration::from_secs(1);
        // Long enough that only the header timeout can close them.
        s.http_idle_timeout = Duration::from_secs(600);
        s.http_max_connections = 2000;
    })
    .await;
    let clients = tokio::spawn(slow_header_clients(
        app.addr,
        1000,
        Duration::from_millis(300),
        Duration::from_secs(15),
    ));
    // While they trickle in, a fresh client is served.
    let mut answered = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    while !clients.is_finished() {
        pace.tick().await;
        let (status, _) = http_get(&app.url("/health/live")).await;
        assert_eq!(
            status, 200,
            "/health/live while 1,000 slow clients are connected"
        );
        answered += 1;
    }
    let closed = clients.await.unwrap();
    let slowest = closed.iter().flatten().max().copied();
    eprintln!(
        "1,000 slow-header clients: slowest closed after {slowest:?}; health answered {answered} times"
    );
    // 1 s timeout; the margin covers connecting 1,000 sockets on a loaded 2-core machine.
    assert_eq!(
        still_open(&closed, Duration::from_secs(5)),
        0,
        "{slowest:?}"
    );
    assert!(
        answered >= 3,
        "health was checked while the clients were connected"
    );
}

#[tokio::test]
async fn the_admin_port_cuts_off_slow_header_clients_too() {
    let app = spawn_tuned("slowloris_admin", |s| {
        s.http_header_read_timeout = Duration::from_secs(1);
        s.http_idle_timeout = Duration::from_secs(600);
    })
    .await;
    let closed = slow_header_clients(
        app.admin,
        100,
        Duration::from_millis(300),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(still_open(&closed, Duration::from_secs(4)), 0, "{closed:?}");
    let (status, _) = http_get(&format!("http://{}/health/live", app.admin)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn silent_connections_are_closed_when_idle_and_the_cap_makes_new_clients_wait() {
    let app = spawn_tuned("idle_cap", |s| {
        s.http_idle_timeout = Duration::from_secs(1);
        s.http_max_connections = 5;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    // At the cap the sixth connection is not served until an idle one is closed.
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(10), http_get(&app.url("/health/live")))
            .await
            .expect("the idle connections are closed, so a new client is served");
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}: the cap did not hold"
    );
    assert!(waited < Duration::from_secs(5), "served after {waited:?}");
    // The silent ones were closed by the server (read sees EOF).
    for stream in &mut silent {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0_u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the server closes an idle connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_port_only() {
    let app = spawn_tuned("metrics_port", |_| {}).await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 404);
    let metrics = app.admin_metrics().await;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let (status, _) = http_get(&format!("http://{}/health/ready", app.admin)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_methods_are_counted_as_other() {
    let app = spawn_tuned("method_label", |_| {}).await;
    let method = reqwest::Method::from_bytes(b"XYZZYPLUGH").unwrap();
    let response = app
        .client
        .request(method, app.url("/user/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let metrics = app.admin_metrics().await;
    assert!(!metrics.contains("XYZZYPLUGH"), "{metrics}");
    assert!(
        metrics.contains("method=\"other\",route=\"/user/register\",status=\"405\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_short_and_well_formed() {
    let app = spawn_tuned("request_id", |_| {}).await;
    let echoed = |id: String| {
        let request = app
            .client
            .get(app.url("/health/live"))
            .header("x-request-id", id);
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(echoed("abc-123.X_y".into()).await, "abc-123.X_y");
    for bad in [
        "x".repeat(65),
        "a b".into(),
        "<script>".into(),
        "a\"b".into(),
    ] {
        let replaced = echoed(bad.clone()).await;
        assert_ne!(replaced, bad);
        assert!(
            uuid::Uuid::parse_str(&replaced).is_ok(),
            "{bad:?} became {replaced:?}"
        );
    }
}

#[tokio::test]
async fn answers_carry_security_headers_and_the_verify_page_keeps_its_own() {
    let app = spawn_tuned("security_headers", |_| {}).await;
    let register = app.register(&crate::helpers::ann()).await;
    let page = app.get("/user/verify?token=nope").await;
    let error = app.get("/nowhere").await;
    for response in [&register, &page, &error] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{headers:?}");
        assert_eq!(headers["x-frame-options"], "DENY", "{headers:?}");
        assert_eq!(headers["cache-control"], "no-store", "{headers:?}");
    }
    // The page's own policy survives.
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(register.status(), 201);
}

#[tokio::test]
async fn a_body_trickled_slowly_is_cut_off_after_the_header_timeout() {
    let app = spawn_tuned("slow_body", |s| {
        s.http_header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(
            b"POST /user/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // One byte every 200 ms: the body would take over three minutes.
    let mut reply = [0u8; 512];
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                read = socket.read(&mut reply) => return read.unwrap_or(0),
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if socket.write_all(b" ").await.is_err() {
                        return 0;
                    }
                }
            }
        }
    })
    .await
    .expect("the server neither answered nor closed within 10 s");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    let head = String::from_utf8_lossy(&reply[..answered]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    assert_eq!(app.count("users").await, 0);
}
