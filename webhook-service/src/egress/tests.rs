//! The egress client against local servers on 127.0.0.1 (raw TCP, so every answer is exactly
//! the bytes written).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{exchange::parse_retry_after, *};

fn egress(allowed: &[&str]) -> Egress {
    let settings = Settings {
        webhook_allowed_nets: allowed
            .iter()
            .map(|net| net.parse().expect("a network"))
            .collect(),
        webhook_connect_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    Egress::new(&settings).expect("the egress client builds")
}

fn get(url: &str) -> OutboundRequest {
    OutboundRequest {
        url: url.into(),
        method: "GET".into(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: Duration::from_secs(2),
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// Reads up to the end of the request head (or the end of the stream).
async fn read_head(socket: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    head
}

/// Answers every connection with `response` after reading the request head; the heads
/// received come out of the channel.
async fn serve(response: Vec<u8>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let (listener, addr) = listener().await;
    let (heads, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (response, heads) = (response.clone(), heads.clone());
            tokio::spawn(async move {
                let head = read_head(&mut socket).await;
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                // A client that stops reading makes this fail: expected.
                let _ = socket.write_all(&response).await;
            });
        }
    });
    (addr, received)
}

/// A short bounded wait: a connection made would already be in the accept queue.
async fn assert_no_connection(listener: &TcpListener) {
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made: {accepted:?}");
}

fn error_kind(result: &AttemptResult) -> Option<ErrorKind> {
    result.error.as_ref().map(|(kind, _)| *kind)
}

fn header<'a>(result: &'a AttemptResult, name: &str) -> Option<&'a str> {
    result
        .response_headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn loopback_is_blocked_in_every_spelling_without_connecting() {
    let egress = egress(&[]);
    let (listener, addr) = listener().await;
    let port = addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://127.0.0.1.:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        // A name: refused by the resolver, after DNS.
        format!("http://localhost:{port}/"),
        format!("https://localhost:{port}/"),
    ] {
        let result = egress.send(get(&url)).await;
        assert_eq!(
            error_kind(&result),
            Some(ErrorKind::Blocked),
            "{url}: {result:?}"
        );
        assert_eq!(result.status, None);
    }
    assert_no_connection(&listener).await;

    // IPv6 loopback, when the machine has it.
    if let Ok(listener) = TcpListener::bind("[::1]:0").await {
        let port = listener.local_addr().expect("local address").port();
        let result = egress.send(get(&format!("http://[::1]:{port}/"))).await;
        assert_eq!(error_kind(&result), Some(ErrorKind::Blocked), "{result:?}");
        assert_no_connection(&listener).await;
    }
}

#[tokio::test]
async fn internal_networks_are_blocked_before_any_connect() {
    let egress = egress(&[]);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ] {
        let result = egress.send(get(url)).await;
        assert_eq!(
            error_kind(&result),
            Some(ErrorKind::Blocked),
            "{url}: {result:?}"
        );
        // An attempted connect to these would hang until the connect timeout.
        assert!(
            result.duration < Duration::from_millis(200),
            "{url}: {result:?}"
        );
        let (_, message) = result.error.expect("an error");
        assert!(message.contains("SSRF guard"), "{message}");
    }
}

#[tokio::test]
async fn loopback_is_reachable_when_allowed() {
    let egress = egress(&["127.0.0.0/8"]);
    let (addr, mut heads) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-Id: r-1\r\nX-Other: no\r\n\
          Content-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_vec(),
    )
    .await;
    let mut request = get(&format!("http://127.0.0.1:{}/hook", addr.port()));
    request.method = "POST".into();
    request.headers = vec![("Webhook-Id".into(), "msg_1".into())];
    request.body = b"{}".to_vec();
    let result = egress.send(request.clone()).await;
    assert_eq!(result.status, Some(200), "{result:?}");
    assert_eq!(result.error, None);
    assert_eq!(result.response_body, "hello");
    assert_eq!(header(&result, "content-type"), Some("text/plain"));
    assert_eq!(header(&result, "x-request-id"), Some("r-1"));
    assert_eq!(header(&result, "x-other"), None);
    let head = heads.recv().await.expect("a request").to_ascii_lowercase();
    assert!(head.starts_with("post /hook http/1.1"), "{head}");
    assert!(head.contains("webhook-id: msg_1"), "{head}");
    assert!(
        head.contains("user-agent: signup-outbox-webhooks/"),
        "{head}"
    );

    request.headers = vec![("User-Agent".into(), "custom/1".into())];
    let result = egress.send(request).await;
    assert_eq!(result.status, Some(200), "{result:?}");
    let head = heads.recv().await.expect("a request").to_ascii_lowercase();
    assert!(head.contains("user-agent: custom/1"), "{head}");
    assert!(!head.contains("signup-outbox-webhooks"), "{head}");
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let egress = egress(&["127.0.0.0/8"]);
    let (target, target_addr) = listener().await;
    let location = format!("http://127.0.0.1:{}/elsewhere", target_addr.port());
    let (addr, _heads) = serve(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    let result = egress
        .send(get(&format!("http://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(result.status, Some(302), "{result:?}");
    assert_eq!(result.error, None);
    assert_eq!(header(&result, "location"), Some(location.as_str()));
    assert_no_connection(&target).await;
}

#[tokio::test]
async fn a_large_body_is_cut_at_the_limit_without_reading_the_rest() {
    let egress = egress(&["127.0.0.0/8"]);
    let size = 1024 * 1024;
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n")
            .into_bytes();
    response.extend(std::iter::repeat_n(b'a', size));
    let (addr, _heads) = serve(response).await;
    let result = egress
        .send(get(&format!("http://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(result.status, Some(200), "{:?}", result.error);
    assert_eq!(result.response_body.len(), MAX_RESPONSE_BODY);
    assert!(result.response_body.bytes().all(|byte| byte == b'a'));
    assert_eq!(header(&result, "content-length"), Some("1048576"));
    assert!(
        result.duration < Duration::from_secs(1),
        "{:?}",
        result.duration
    );
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_request_timeout() {
    let egress = egress(&["127.0.0.0/8"]);
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut request = get(&format!("http://127.0.0.1:{}/", addr.port()));
    request.timeout = Duration::from_millis(300);
    let result = egress.send(request).await;
    assert_eq!(error_kind(&result), Some(ErrorKind::Timeout), "{result:?}");
    assert!(result.duration >= Duration::from_millis(300), "{result:?}");
    assert!(result.duration < Duration::from_millis(800), "{result:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let egress = egress(&["127.0.0.0/8"]);
    let (listener, addr) = listener().await;
    drop(listener);
    let result = egress
        .send(get(&format!("http://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(error_kind(&result), Some(ErrorKind::Connect), "{result:?}");
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_tls_error() {
    let egress = egress(&["127.0.0.0/8"]);
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            let _ = socket.read(&mut [0; 1024]).await;
        }
    });
    let result = egress
        .send(get(&format!("https://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(error_kind(&result), Some(ErrorKind::Tls), "{result:?}");
}

#[tokio::test]
async fn an_unknown_name_is_a_dns_error() {
    let result = egress(&[]).send(get("http://no-such-host.invalid/")).await;
    assert_eq!(error_kind(&result), Some(ErrorKind::Dns), "{result:?}");
}

#[tokio::test]
async fn retry_after_is_read_from_429_and_503() {
    let egress = egress(&["127.0.0.0/8"]);
    let (addr, _heads) = serve(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n".to_vec(),
    )
    .await;
    let result = egress
        .send(get(&format!("http://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(result.status, Some(503));
    assert_eq!(result.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(header(&result, "retry-after"), Some("7"));

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let (addr, _heads) = serve(
        format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {date}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    let result = egress
        .send(get(&format!("http://127.0.0.1:{}/", addr.port())))
        .await;
    assert_eq!(result.status, Some(429));
    let delay = result.retry_after.expect("a delay");
    assert!(
        (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&delay),
        "{delay:?}"
    );
}

#[test]
fn retry_after_values_parse() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(90))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
    assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
    for garbage in ["", "-1", "1.5", "soon", "99999999999999999999999"] {
        assert_eq!(parse_retry_after(garbage, now), None, "{garbage}");
    }
}

#[tokio::test]
async fn unusable_requests_are_invalid_without_a_connect() {
    let egress = egress(&["127.0.0.0/8"]);
    let (listener, addr) = listener().await;
    let url = format!("http://127.0.0.1:{}/", addr.port());
    let cases: [(&str, &str, (&str, &str)); 6] = [
        ("not a url", "GET", ("x", "1")),
        ("ftp://example.com/", "GET", ("x", "1")),
        (&url, "GE T", ("x", "1")),
        (&url, "POST", ("bad header", "1")),
        (&url, "POST", ("x-token", "line\nbreak")),
        (&url, "POST", ("Host", "internal.example")),
    ];
    for (url, method, (name, value)) in cases {
        let mut request = get(url);
        request.method = method.into();
        request.headers = vec![(name.into(), value.into())];
        let result = egress.send(request).await;
        assert_eq!(
            error_kind(&result),
            Some(ErrorKind::InvalidRequest),
            "{url} {method} {name}: {result:?}"
        );
        let (_, message) = result.error.expect("an error");
        assert!(
            !message.contains("line"),
            "values are not echoed: {message}"
        );
    }
    assert_no_connection(&listener).await;
}

#[test]
fn check_url_refuses_what_can_never_be_sent() {
    let egress = egress(&[]);
    for (url, reason) in [
        ("ftp://example.com/file", "not http or https"),
        ("mailto:someone@example.com", "not http or https"),
        ("http://", "empty host"),
        ("/relative/path", "not a URL"),
        ("http://10.0.0.1/hook", "private"),
        ("http://172.20.1.1/hook", "private"),
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://169.254.169.254/", "cloud metadata"),
        ("http://localhost:8080/", "loopback name"),
        ("http://hooks.localhost./", "loopback name"),
    ] {
        let error = egress.check_url(url).expect_err(url);
        assert!(error.to_string().contains(reason), "{url}: {error}");
    }
    for url in [
        "https://example.com/hooks?token=abc",
        "http://user:password@example.com:8080/",
        "https://[2606:4700:4700::1111]/",
        "http://8.8.8.8/",
    ] {
        egress.check_url(url).expect(url);
    }
    let local = self::egress(&["127.0.0.0/8", "::1/128"]);
    for url in [
        "http://127.0.0.1:8080/",
        "http://localhost:8080/",
        "http://[::1]/",
    ] {
        local.check_url(url).expect(url);
    }
}

#[test]
fn redact_url_hides_credentials_query_values_and_the_fragment() {
    for (url, redacted) in [
        (
            "https://user:secret@example.com/hook?token=abc&x=1#frag",
            "https://***:***@example.com/hook?token=***&x=***",
        ),
        ("https://user@example.com/", "https://***@example.com/"),
        ("https://:pw@example.com/", "https://:***@example.com/"),
        ("https://example.com/a?sig", "https://example.com/a?***"),
        (
            "https://example.com/a?a=&b=2&&c",
            "https://example.com/a?a=***&b=***&***",
        ),
        ("https://example.com/a?", "https://example.com/a?"),
        (
            "http://example.com:8080/path",
            "http://example.com:8080/path",
        ),
        ("not a url with secret", "(not a URL)"),
    ] {
        assert_eq!(redact_url(url), redacted, "{url}");
    }
}

#[test]
fn truncation_keeps_whole_characters() {
    assert_eq!(truncate("abc", 5), "abc");
    assert_eq!(truncate("abcdef", 3), "abc");
    assert_eq!(truncate("aé", 2), "a", "é is two bytes");
}
