//! `tracing` subscriber setup and trace-context helpers.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogFormat;

/// Always appended to the filter, whatever `RUST_LOG` says: lapin logs a message the broker
/// returned (unroutable) with its whole body at `warn`, and event bodies carry verification
/// links and codes, which must never reach a log.
pub const SECRET_SAFE_DIRECTIVE: &str = "lapin::returned_messages=error";

/// Installs the global subscriber: `RUST_LOG` filter (else `default_filter`), pretty or JSON lines
/// on stdout. Call once, from `main`.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter = env_filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter)?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Pretty => registry.with(fmt::layer()).try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init()?,
    }
    Ok(())
}

/// `rust_log` (else `default_filter`) plus [`SECRET_SAFE_DIRECTIVE`].
fn env_filter(rust_log: Option<&str>, default_filter: &str) -> anyhow::Result<EnvFilter> {
    // An empty RUST_LOG (`RUST_LOG=` in a .env file) counts as unset, like every setting.
    let filter = rust_log
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    Ok(filter.add_directive(SECRET_SAFE_DIRECTIVE.parse()?))
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
        let filter = super::env_filter(Some(""), "debug").unwrap();
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::DEBUG));
        let filter = super::env_filter(Some("warn"), "debug").unwrap();
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

    #[test]
    fn returned_message_bodies_are_never_logged_even_at_trace() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(super::env_filter(Some("trace"), "info").unwrap())
            .with(tracing_subscriber::fmt::layer().with_writer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "lapin::returned_messages", body = "secret-token", "returned");
            tracing::warn!(target: "lapin::channel", "other lapin warnings still show");
        });
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!logged.contains("secret-token"), "{logged}");
        assert!(
            logged.contains("other lapin warnings still show"),
            "{logged}"
        );
    }
}
