//! W3C trace context (`traceparent`, `tracestate`) across HTTP headers and gRPC metadata, and what
//! the gateway reads and changes of a span's OpenTelemetry side (its trace id, its exported name).

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Writes the context into outgoing gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// Reads the context from HTTP headers (and so from gRPC metadata, which travels as headers).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The remote parent carried by `headers`, or an empty context: also when `traceparent` is not
/// exactly as W3C Trace Context writes it, or is given twice, in which case the trace restarts
/// and `tracestate` is ignored as the recommendation says (the propagator alone would pad a
/// short id or accept a sign).
pub fn extract(headers: &http::HeaderMap) -> Context {
    let mut values = headers.get_all("traceparent").iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.to_str().is_ok_and(well_formed) => {
            TraceContextPropagator::new().extract(&HeaderExtractor(headers))
        }
        _ => Context::new(),
    }
}

/// Whether `traceparent` is `version-traceid-parentid-flags` in lowercase hex digits of 2, 32,
/// 16 and 2; a version after `00` may add fields after a `-`, and `ff` is no version.
fn well_formed(traceparent: &str) -> bool {
    let bytes = traceparent.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes.get(range).is_some_and(|digits| digits.iter().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')))
    };
    let dashes = [2, 35, 52].iter().all(|at| bytes.get(*at) == Some(&b'-'));
    let fields = dashes && hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55);
    let rest_allowed = match &bytes[..bytes.len().min(2)] {
        b"00" => bytes.len() == 55,
        b"ff" => false,
        _ => bytes.len() == 55 || bytes.get(55) == Some(&b'-'),
    };
    fields && rest_allowed
}

/// Writes `context` as `traceparent`/`tracestate` into `metadata`.
pub fn inject(context: &Context, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(context, &mut MetadataInjector(metadata));
}

/// Writes `span`'s context into `metadata`, so that the callee's span is its child.
pub fn inject_span(span: &tracing::Span, metadata: &mut MetadataMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    inject(&span.context(), metadata);
}

/// Makes `span` a child of the remote span that `headers` carry, if any.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // Fails only when no OpenTelemetry layer is installed; the span then simply has no parent.
    let _ = span.set_parent(extract(headers));
}

/// The W3C trace id of `span`, 32 lowercase hex digits, so that a log line can name the trace it
/// belongs to; `None` when no OpenTelemetry layer is installed or the span is disabled.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// `span`'s trace as W3C Trace Context Level 2 writes it in a `traceresponse` header,
/// `00-<trace id>-<span id>-<flags>`, so that a client finds the trace its request made (its trace
/// id, the 32 hex digits after `00-`, is [`trace_id`]'s); `None` as for [`trace_id`].
pub fn traceresponse(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    ids.is_valid().then(|| format!("00-{}-{}-{:02x}", ids.trace_id(), ids.span_id(), ids.trace_flags().to_u8()))
}

/// Renames `span` as exported, once its name is known (an HTTP route matched while the span
/// ran). tracing-opentelemetry 0.34 reads a recorded `otel.name` only until the span is started,
/// which happens when it is first entered, so the name is set on the OpenTelemetry span itself.
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().update_name(name);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    fn remote_trace(traceparents: &[&str]) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        for traceparent in traceparents {
            headers.append("traceparent", traceparent.parse().unwrap());
        }
        headers.insert("tracestate", "vendor=1".parse().unwrap());
        let context = extract(&headers);
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| span_context.trace_id().to_string())
    }

    #[test]
    fn a_well_formed_traceparent_is_adopted() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(remote_trace(&[&format!("00-{id}-00f067aa0ba902b7-01")]).as_deref(), Some(id));
        // A later version may carry more fields.
        assert_eq!(remote_trace(&[&format!("01-{id}-00f067aa0ba902b7-01-extra")]).as_deref(), Some(id));
    }

    #[test]
    fn a_traceparent_not_exactly_as_w3c_writes_it_starts_a_new_trace() {
        for traceparent in [
            "00-1-2-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(remote_trace(&[traceparent]), None, "{traceparent}");
        }
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(remote_trace(&[valid, valid]), None, "given twice");
    }
}
