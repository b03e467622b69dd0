//! Traces with OpenTelemetry: one trace per case, whose id is the case id (as in the
//! `traceparent` every agency receives), exported over OTLP/HTTP (protobuf) when an endpoint is
//! configured, and nothing at all when not.
//!
//! A case's trace is a root span made when the case starts (span id: the case id's last 8
//! bytes, so that any node can name it later without storing it), and under it a span per step
//! attempt and per status poll (its span id is the one in the `traceparent` sent to the agency,
//! so the agency's own spans nest under it), per callback and per operator action. These spans
//! belong to a case that outlives any one process, so they are built with the OpenTelemetry API
//! and explicit ids. The spans of API requests are `tracing` spans, exported through
//! `tracing-opentelemetry` (see `main.rs`), each under the caller's `traceparent` if it sent one;
//! a portal's `traceparent` on a case start is also linked from the case's root span.
//!
//! Span names and attributes hold workflow, step, agency and adapter names, attempt numbers,
//! outcome classes and HTTP statuses: never personal data nor who acted.

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider,
    Tracer,
};

use crate::case::CaseId;

#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {detail}")]
pub struct TracesError {
    endpoint: String,
    detail: String,
}

/// Where traces go: an OTLP/HTTP exporter, or nowhere.
#[derive(Debug, Default)]
pub struct Traces {
    exporting: Option<(SdkTracerProvider, Tracer)>,
}

/// The variables that name a collector (the OpenTelemetry specification's).
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl Traces {
    /// No exporter: every span is dropped where it is made, nothing is sent anywhere.
    pub fn off() -> Traces {
        Traces::default()
    }

    /// Exports to the collector at `endpoint` (its base URL: `/v1/traces` is added, as for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); with no endpoint, to the one the standard `OTEL_*`
    /// variables name, if any (`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn
    /// them off); else off. `OTEL_SERVICE_NAME` (default `civicflow`), `OTEL_RESOURCE_ATTRIBUTES`
    /// and `OTEL_EXPORTER_OTLP_HEADERS`/`_TIMEOUT` are read as the specification says.
    pub fn from_config(endpoint: Option<&str>) -> Result<Traces, TracesError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let from_env = ENDPOINT_VARIABLES.iter().any(|v| env(v).is_some());
        if endpoint.is_none() && (disabled || !from_env) {
            return Ok(Traces::off());
        }
        let url = endpoint.map(|e| format!("{}/v1/traces", e.trim_end_matches('/')));
        let named = url
            .clone()
            .or_else(|| ENDPOINT_VARIABLES.iter().find_map(|v| env(v)))
            .unwrap_or_default();
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(url) = url {
            use opentelemetry_otlp::WithExportConfig;
            builder = builder
                .with_endpoint(url)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        }
        let exporter = builder.build().map_err(|e| TracesError {
            endpoint: named,
            detail: e.to_string(),
        })?;
        let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "civicflow".to_owned());
        // A busy node makes thousands of spans a second: the SDK's default queue (2,048) would
        // drop most of them between exports. The `OTEL_BSP_*` variables still decide if set.
        let mut batch = BatchConfigBuilder::default();
        if env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            batch = batch.with_max_queue_size(65_536);
        }
        if env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
            batch = batch.with_max_export_batch_size(4_096);
        }
        if env("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            batch = batch.with_scheduled_delay(std::time::Duration::from_secs(1));
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(CaseIds::default())
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "civicflow");
        Ok(Traces {
            exporting: Some((provider, tracer)),
        })
    }

    /// Whether spans are exported (an endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// The tracer, for the `tracing` bridge; `None` when off.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.exporting.as_ref().map(|(_, t)| t)
    }

    /// Sends what is still buffered and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.exporting
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }

    /// The root span of a case's trace, made when the case starts (`from` until now), linked
    /// to the portal's `traceparent` if it sent one.
    pub fn case_started(
        &self,
        case: CaseId,
        workflow: &str,
        version: u32,
        from: SystemTime,
        portal: Option<&str>,
    ) {
        let Some((_, tracer)) = &self.exporting else {
            return;
        };
        let mut builder = tracer
            .span_builder(format!("case {workflow}"))
            .with_kind(SpanKind::Server)
            .with_start_time(from)
            .with_attributes([
                KeyValue::new("civicflow.workflow", workflow.to_owned()),
                KeyValue::new("civicflow.workflow.version", i64::from(version)),
            ]);
        if let Some(portal) = portal.and_then(parse_traceparent) {
            builder = builder.with_links(vec![Link::with_context(portal)]);
        }
        let mut span = with_ids(Some(trace_id(case)), root_span_id(case), || {
            tracer.build_with_context(builder, &Context::new())
        });
        span.end();
    }

    /// A span under the case's root, with `span_id` if given (an attempt's, as the agency got
    /// it), from `from` until now.
    pub fn case_span(&self, case: CaseId, span: CaseSpan) {
        let Some((_, tracer)) = &self.exporting else {
            return;
        };
        let parent = Context::new().with_remote_span_context(SpanContext::new(
            trace_id(case),
            root_span_id(case),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let builder = tracer
            .span_builder(span.name)
            .with_kind(span.kind)
            .with_start_time(span.from)
            .with_attributes(span.attributes);
        let made = |b| tracer.build_with_context(b, &parent);
        let mut otel = match span.span_id {
            Some(id) => with_ids(None, id, || made(builder)),
            None => made(builder),
        };
        if span.failed {
            otel.set_status(Status::error(span.outcome));
        }
        otel.end();
    }
}

/// A span of a case's trace, as the engine or the API describes it.
#[derive(Debug)]
pub struct CaseSpan {
    pub name: String,
    pub kind: SpanKind,
    pub from: SystemTime,
    /// The span's id, when something outside already has it (an agency's `traceparent`).
    pub span_id: Option<SpanId>,
    pub attributes: Vec<KeyValue>,
    /// The outcome class, also an attribute (`civicflow.outcome`); a failure marks the span's
    /// status as an error.
    pub outcome: String,
    pub failed: bool,
}

impl CaseSpan {
    pub fn new(name: String, kind: SpanKind, from: SystemTime) -> CaseSpan {
        CaseSpan {
            name,
            kind,
            from,
            span_id: None,
            attributes: Vec::new(),
            outcome: String::new(),
            failed: false,
        }
    }

    pub fn attribute(
        mut self,
        key: &'static str,
        value: impl Into<opentelemetry::Value>,
    ) -> CaseSpan {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    pub fn outcome(mut self, outcome: &str, failed: bool) -> CaseSpan {
        self.outcome = outcome.to_owned();
        self.failed = failed;
        self.attributes
            .push(KeyValue::new("civicflow.outcome", outcome.to_owned()));
        self
    }

    pub fn span_id(mut self, id: Option<SpanId>) -> CaseSpan {
        self.span_id = id;
        self
    }
}

/// A case's trace id: the case id's 16 bytes.
pub fn trace_id(case: CaseId) -> TraceId {
    TraceId::from_bytes(*case.as_bytes())
}

/// The span id of a case's root span: the case id's last 8 bytes (random in a UUIDv7), never
/// zero.
pub fn root_span_id(case: CaseId) -> SpanId {
    let bytes = case.as_bytes();
    let mut id: [u8; 8] = bytes[8..].try_into().expect("a UUID has 16 bytes");
    if id == [0; 8] {
        id[7] = 1;
    }
    SpanId::from_bytes(id)
}

/// The span context a W3C `traceparent` names, if it is well formed.
/// The W3C `traceparent` of a case's root span: what a case or an event it causes links to.
pub fn case_traceparent(case: CaseId) -> String {
    format!("00-{}-{}-01", trace_id(case), root_span_id(case))
}

pub fn parse_traceparent(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

thread_local! {
    /// The ids the next span made on this thread takes, set around one `build_with_context`.
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
    static NEXT_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Makes a span with these ids: the SDK asks its id generator ([`CaseIds`]) while `build` runs
/// on this thread.
fn with_ids<T>(trace: Option<TraceId>, span: SpanId, build: impl FnOnce() -> T) -> T {
    NEXT_TRACE.with(|t| t.set(trace));
    NEXT_SPAN.with(|s| s.set(Some(span)));
    let made = build();
    NEXT_TRACE.with(|t| t.set(None));
    NEXT_SPAN.with(|s| s.set(None));
    made
}

/// Random ids, unless [`with_ids`] set the next ones: how a case's spans get the ids the case
/// and its agencies already know.
#[derive(Debug, Default)]
struct CaseIds(RandomIdGenerator);

impl IdGenerator for CaseIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_names_its_trace_and_root_span() {
        let case: CaseId = "01a22df6-b323-7652-9dab-70f219cd618d".parse().unwrap();
        assert_eq!(
            trace_id(case).to_string(),
            "01a22df6b32376529dab70f219cd618d"
        );
        assert_eq!(root_span_id(case).to_string(), "9dab70f219cd618d");
    }

    #[test]
    fn traceparents_parse_or_are_refused() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let c = parse_traceparent(good).unwrap();
        assert_eq!(c.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(c.span_id().to_string(), "b7ad6b7169203331");
        assert!(c.is_sampled() && c.is_remote());
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-xyz7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn with_no_endpoint_nothing_is_made() {
        let traces = Traces::off();
        assert!(traces.tracer().is_none());
        traces.case_started(CaseId::now_v7(), "w", 1, SystemTime::now(), None);
    }
}
