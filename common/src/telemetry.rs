//! `tracing` subscriber setup and trace-context helpers.

use tracing_subscriber::{
    EnvFilter,
    filter::LevelFilter,
    filter::Targets,
    fmt::{
        self, MakeWriter,
        format::{Format, Json, JsonFields},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::settings::LogFormat;

/// The most each of these targets may log, whatever `RUST_LOG` says (a target is matched as a
/// prefix: `amq_protocol` covers `amq_protocol_tcp`). Event bodies carry verification links and
/// codes, and connection URIs carry passwords:
/// - lapin prints whole frames, bodies included, at trace (`will handle frame`), and a message
///   the broker returned (unroutable) with its body at warn;
/// - amq-protocol prints the connection URI with its password at trace (`Connecting.`).
///
/// sqlx needs no cap: its statement logging is off (`common::database`), and it would print
/// the statements' text, never their bound values (every value here is bound).
pub const SECRET_SAFE_CAPS: &[(&str, LevelFilter)] = &[
    ("lapin", LevelFilter::DEBUG),
    ("lapin::returned_messages", LevelFilter::ERROR),
    ("amq_protocol", LevelFilter::DEBUG),
];

/// A filter that lets everything through except what [`SECRET_SAFE_CAPS`] caps. Layered with
/// the `RUST_LOG` filter, an event must pass both: it can only lower a level, never raise one.
pub fn secret_safe_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(SECRET_SAFE_CAPS.iter().copied())
}

/// Installs the global subscriber: `RUST_LOG` filter (else `default_filter`) capped by
/// [`secret_safe_caps`], pretty or JSON lines on stdout. Call once, from `main`.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter = env_filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(secret_safe_caps());
    match format {
        LogFormat::Pretty => registry.with(fmt::layer()).try_init()?,
        LogFormat::Json => registry.with(json_layer(std::io::stdout)).try_init()?,
    }
    Ok(())
}

/// One JSON object per line: the event's fields at the top level and `spans`, every entered
/// span from the outermost (the request's `http` span with its `request_id`) to the current
/// one, each with its fields. No separate `span` object: it would repeat the list's last entry
/// (about a quarter of a request's line).
fn json_layer<S, W>(writer: W) -> fmt::Layer<S, JsonFields, Format<Json>, W>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_writer(writer)
}

/// `rust_log`, else `default_filter`.
fn env_filter(rust_log: Option<&str>, default_filter: &str) -> EnvFilter {
    // An empty RUST_LOG (`RUST_LOG=` in a .env file) counts as unset, like every setting.
    rust_log
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter))
}

/// `error: cause: cause…`: an error with its whole source chain, each cause printed once (our
/// errors never repeat their source in their own message), for a log field.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The user-service's sign-up → verification histogram: people take minutes to days, far
/// beyond the default buckets' two minutes.
pub const TIME_TO_VERIFY_METRIC: &str = "user_time_to_verify_seconds";

/// Buckets of [`TIME_TO_VERIFY_METRIC`]: 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, 6 h, 12 h,
/// 1 d, 2 d, 3 d, 7 d.
const TIME_TO_VERIFY_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 172_800.0, 259_200.0,
    604_800.0,
];

/// The process-wide Prometheus recorder, installed on first use. Every service (and the
/// all-in-one runner, which hosts three) renders `GET /metrics` from this one handle.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 120.0,
            ])
            .expect("static, non-empty bucket list")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(TIME_TO_VERIFY_METRIC.to_owned()),
                TIME_TO_VERIFY_BUCKETS,
            )
            .expect("static, non-empty bucket list")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn an_empty_rust_log_counts_as_unset() {
        use tracing_subscriber::filter::LevelFilter;
        let filter = super::env_filter(Some(""), "debug");
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::DEBUG));
        let filter = super::env_filter(Some("warn"), "debug");
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
    }

    #[test]
    fn an_error_chain_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outbox database error")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            super::error_chain(&error),
            "outbox database error: connection refused"
        );
    }

    /// Whatever `rust_log` lets through, after the caps.
    fn logged_with(rust_log: &str, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(super::env_filter(Some(rust_log), "info"))
            .with(super::secret_safe_caps())
            .with(tracing_subscriber::fmt::layer().with_writer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn frame_bodies_and_uris_are_never_logged_even_at_trace() {
        let logged = logged_with("trace", || {
            tracing::trace!(target: "lapin::channels", frame = "body-secret", "will handle frame");
            tracing::warn!(target: "lapin::returned_messages", body = "returned-secret", "returned");
            tracing::trace!(target: "amq_protocol_tcp", uri = "amqp://u:pw-secret@h", "Connecting.");
            tracing::debug!(target: "lapin::channels", "lapin debug still shows");
            tracing::warn!(target: "lapin::channel", "other lapin warnings still show");
            tracing::trace!(target: "outbox_relay", "our own trace still shows");
        });
        for secret in ["body-secret", "returned-secret", "pw-secret"] {
            assert!(!logged.contains(secret), "{logged}");
        }
        for visible in ["lapin debug", "other lapin warnings", "our own trace"] {
            assert!(logged.contains(visible), "{logged}");
        }
    }

    #[test]
    fn a_json_line_names_each_span_once_outermost_first() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(super::json_layer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let http = tracing::info_span!("http", request_id = "req-1");
            let _http = http.enter();
            let register = tracing::info_span!("register", correlation_id = "req-1");
            let _register = register.enter();
            tracing::info!(user_id = "u1", "user registered");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "user registered");
        assert_eq!(line["user_id"], "u1");
        assert_eq!(line["spans"][0]["name"], "http");
        assert_eq!(line["spans"][0]["request_id"], "req-1");
        assert_eq!(line["spans"][1]["name"], "register");
        assert_eq!(line["spans"][1]["correlation_id"], "req-1");
        assert!(
            line.get("span").is_none(),
            "the current span is not repeated: {text}"
        );
        assert_eq!(text.matches("correlation_id").count(), 1, "{text}");
    }

    #[test]
    fn the_caps_never_raise_a_level() {
        let logged = logged_with("warn", || {
            tracing::debug!(target: "lapin::channels", "lapin debug under warn");
            tracing::info!(target: "amq_protocol", "amq info under warn");
        });
        assert!(logged.is_empty(), "{logged}");
    }
}
