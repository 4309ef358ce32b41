//! Trace context: the correlation id and W3C `traceparent` of the request that started a
//! sign-up step, carried from the HTTP request through the outbox row headers and the AMQP
//! message headers to the mail send, so one `grep <correlation id>` shows the whole story.

/// Header names, one place for every hop.
pub mod headers {
    /// HTTP request header with the client's (or the request-id layer's) id.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Outbox-row and AMQP header carrying the request id.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// W3C trace context, under the same name on HTTP, outbox and AMQP.
    pub const TRACEPARENT: &str = "traceparent";
}

/// The request's correlation id and `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `x-request-id` of the request (set by the request-id layer when the client sent none).
    pub correlation_id: String,
    /// W3C `traceparent`: the client's when valid, else a new trace.
    pub traceparent: String,
}

impl TraceContext {
    /// Reads the context from HTTP request headers, starting a new trace when there is none or
    /// the client's `traceparent` is malformed.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let correlation_id = text(headers::REQUEST_ID)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let traceparent = text(headers::TRACEPARENT)
            .filter(|v| is_valid_traceparent(v))
            .map_or_else(new_traceparent, str::to_owned);
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

    /// The headers an outbox row (and so its AMQP message) carries.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            headers::CORRELATION_ID: self.correlation_id,
            headers::TRACEPARENT: self.traceparent,
        })
    }
}

/// The `traceparent` of an outbound call made on behalf of `parent`: the same trace id and
/// flags with a new span id, so the receiver's spans join the trace; a new trace when `parent`
/// is absent or malformed.
pub fn child_traceparent(parent: Option<&str>) -> String {
    match parent.filter(|p| is_valid_traceparent(p)) {
        Some(parent) => {
            let span_id = uuid::Uuid::new_v4().as_u64_pair().0.max(1);
            let (trace_id, flags) = (&parent[3..35], &parent[53..55]);
            format!("00-{trace_id}-{span_id:016x}-{flags}")
        }
        None => new_traceparent(),
    }
}

/// A new trace: version 00, random trace and parent ids, sampled.
fn new_traceparent() -> String {
    // v4 UUIDs come from the OS CSPRNG; their fixed version bits do not matter here.
    let trace_id = uuid::Uuid::new_v4().as_u128();
    let parent_id = uuid::Uuid::new_v4().as_u64_pair().0;
    format!("00-{trace_id:032x}-{parent_id:016x}-01")
}

/// `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`.
pub fn is_valid_traceparent(value: &str) -> bool {
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
        let mut headers = http::HeaderMap::new();
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

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let child = child_traceparent(Some(parent));
        assert!(is_valid_traceparent(&child), "{child}");
        assert_eq!(&child[..36], &parent[..36]);
        assert_ne!(&child[36..52], &parent[36..52]);
        assert_eq!(&child[52..], "-00");
        for orphan in [None, Some("garbage")] {
            let root = child_traceparent(orphan);
            assert!(is_valid_traceparent(&root), "{root}");
        }
    }

    #[test]
    fn new_traces_are_valid_and_distinct() {
        let (a, b) = (TraceContext::new_root(), TraceContext::new_root());
        assert!(is_valid_traceparent(&a.traceparent), "{}", a.traceparent);
        assert_ne!(a.traceparent, b.traceparent);
        assert_ne!(a.correlation_id, b.correlation_id);
        let json = a.to_json();
        assert_eq!(json["correlation_id"], a.correlation_id.as_str());
        assert_eq!(json["traceparent"], a.traceparent.as_str());
    }
}
