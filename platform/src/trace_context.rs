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

/// The remote parent carried by `headers`, or an empty context.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
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

/// Renames `span` as exported, once its name is known (an HTTP route matched while the span
/// ran). tracing-opentelemetry 0.34 reads a recorded `otel.name` only until the span is started,
/// which happens when it is first entered, so the name is set on the OpenTelemetry span itself.
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().update_name(name);
}
