//! Correlation id and W3C trace context of a request, carried into the outbox headers so one
//! sign-up can be followed from the HTTP request to the mail send.

use axum::http::HeaderMap;
use rand::RngCore;

/// The request's correlation id (`x-request-id`) and `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `x-request-id` of the request (set by the request-id layer when the client sent none).
    pub correlation_id: String,
    /// W3C `traceparent`: the client's when valid, else a new trace.
    pub traceparent: String,
}

impl TraceContext {
    /// Reads the context from request headers, starting a new trace when there is none.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let correlation_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_valid_traceparent(v))
            .map(str::to_owned)
            .unwrap_or_else(new_traceparent);
        Self {
            correlation_id,
            traceparent,
        }
    }

    /// A context for work not started by a request (e.g. the reminder scheduler).
    pub fn new_root() -> Self {
        Self {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            traceparent: new_traceparent(),
        }
    }
}

fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let trace_id = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
    format!("00-{trace_id:032x}-{:016x}-01", rng.next_u64())
}

/// `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`.
fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_propagated_and_an_invalid_one_replaced() {
        let mut headers = HeaderMap::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", incoming.parse().unwrap());
        headers.insert("x-request-id", "req-1".parse().unwrap());
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(ctx.traceparent, incoming);
        assert_eq!(ctx.correlation_id, "req-1");

        headers.insert("traceparent", "00-zz-00-01".parse().unwrap());
        let ctx = TraceContext::from_headers(&headers);
        assert_ne!(ctx.traceparent, "00-zz-00-01");
        assert!(is_valid_traceparent(&ctx.traceparent));
    }
}
