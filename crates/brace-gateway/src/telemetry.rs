//! Traces: the `telemetry` section, the spans the gateway opens, and (with the `otel` cargo
//! feature) their export over OTLP.
//!
//! # Spans
//!
//! Every HTTP request runs in a `request` span (level info: its fields show in each log line
//! the request writes), and every call to a provider in an `attempt` span (level debug), a
//! child of it. Both carry the attributes of the OpenTelemetry semantic conventions for
//! generative AI, and brace's own:
//!
//! | span | attributes |
//! |---|---|
//! | `request` (kind server, named `POST /v1/chat/completions`) | `http.response.status_code`, `gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `brace.provider`, `brace.attempts`, `brace.degradation.level`, `brace.cache.hit`, `brace.continuation`, `error.type` |
//! | `attempt` (kind client, named `chat {model}`) | `gen_ai.operation.name`, `gen_ai.system`, `gen_ai.request.model`, `gen_ai.request.max_tokens`, `gen_ai.request.temperature`, `gen_ai.response.model`, `gen_ai.response.id`, `gen_ai.usage.*`, `server.address`, `server.port`, `brace.provider`, `brace.attempt`, `brace.outcome`, `brace.circuit.state`, `brace.stream`, `error.type` |
//!
//! The layers below log what they do as `tracing` events inside these spans — `retry`
//! (attempt, delay, reason), `retries exhausted`, `provider failed`, `failover`, `hedge`,
//! `all providers failed`, `circuit state changed`, `degradation level changed`,
//! `cache hit` / `cache miss`, `static answer`, `stream committed`, `stream broke` — which
//! an OpenTelemetry layer turns into span events.
//!
//! # Export
//!
//! Off by default. A `telemetry` section, or the standard `OTEL_EXPORTER_OTLP_*` variables,
//! turn it on (see [`TelemetryConfig::resolve`] for which wins):
//!
//! ```yaml
//! telemetry:
//!   otlp_endpoint: http://127.0.0.1:4318   # a collector; gRPC usually listens on 4317
//!   protocol: http/protobuf                # or grpc
//!   service_name: brace-gateway
//!   sample_ratio: 0.1                      # of the traces that start here
//! ```
//!
//! A caller's W3C `traceparent` makes the request span its child (and its sampling decision
//! is kept); each attempt sends its own `traceparent` to the provider, so a provider that
//! traces shows its spans under the attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use pin_project_lite::pin_project;
use serde::{Deserialize, Deserializer, Serialize};
use tower::{Layer, Service};
use tracing::field::Empty;

use brace_circuit::CircuitHandle;
use brace_core::BoxError;
use brace_llm::{ChatRequest, ChatResponse, ChatStream, LlmError, Origin, ResponseBody, Usage};

use crate::config::{ProviderConfig, ProviderKind};

// ===== configuration =====

/// The `telemetry` section: where traces are exported.
///
/// Every key is optional; what the file leaves out comes from the standard OpenTelemetry
/// environment variables, then the defaults (see [`resolve`](Self::resolve)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP collector: a base URL such as `http://127.0.0.1:4318` (HTTP) or
    /// `http://127.0.0.1:4317` (gRPC). Over HTTP, `/v1/traces` is added unless the path
    /// already ends with it. gRPC is spoken without TLS (a collector on the host or a
    /// sidecar); for a collector behind TLS, use `http/protobuf` with an `https` URL.
    #[serde(default, deserialize_with = "endpoint")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (the default).
    #[serde(default)]
    pub protocol: Option<OtlpProtocol>,
    /// The `service.name` of the exported spans (default `brace-gateway`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of traces starting here that are kept, from 0 to 1 (default 1). A
    /// caller's sampling decision, sent in its `traceparent`, is always kept.
    #[serde(default, deserialize_with = "ratio")]
    pub sample_ratio: Option<f64>,
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name configuration and `OTEL_EXPORTER_OTLP_PROTOCOL` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => {
                Err("protocol `http/json` is not supported: use `grpc` or `http/protobuf`".into())
            }
            other => Err(format!(
                "unknown protocol `{other}`: use `grpc` or `http/protobuf`"
            )),
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn endpoint<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let Some(url) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    check_url(&url).map_err(serde::de::Error::custom)?;
    Ok(Some(url))
}

fn ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let Some(ratio) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    check_ratio(ratio).map_err(serde::de::Error::custom)?;
    Ok(Some(ratio))
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(format!(
            "`{url}` is not an http:// or https:// URL with a host"
        )),
        Err(err) => Err(format!("`{url}` is not a URL: {err}")),
    }
}

fn check_ratio(ratio: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(format!("sample ratio must be from 0 to 1, got {ratio}"))
    }
}

/// The export settings in force, from the `telemetry` section and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Where spans are sent: the full URL for HTTP (`…/v1/traces`), the server for gRPC.
    pub endpoint: String,
    /// How.
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The share of traces starting here that are kept.
    pub sample_ratio: f64,
}

/// Telemetry could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryError(String);

impl TelemetryError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "telemetry: {}", self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "brace-gateway";

impl TelemetryConfig {
    /// The export settings, or `None` when traces are not exported (the default).
    ///
    /// Each setting comes from the `telemetry` section if it has it, else from the standard
    /// variables (read through `env`), else the default:
    ///
    /// - endpoint: `otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it
    ///   is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, as `otlp_endpoint`); none of
    ///   them: no export;
    /// - protocol: `protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    ///   `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`;
    /// - service name: `service_name`, else `OTEL_SERVICE_NAME`, else `brace-gateway`;
    /// - sample ratio: `sample_ratio`, else `OTEL_TRACES_SAMPLER_ARG` when
    ///   `OTEL_TRACES_SAMPLER` is `traceidratio` or `parentbased_traceidratio` (0 for
    ///   `always_off`), else 1.
    ///
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off whatever
    /// the section says. Headers (`OTEL_EXPORTER_OTLP_HEADERS`), timeout and compression are
    /// read from the environment by the exporter itself.
    ///
    /// # Errors
    ///
    /// A [`TelemetryError`] naming the setting or variable that cannot be used.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpSettings>, TelemetryError> {
        let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let protocol = match self.protocol {
            Some(protocol) => protocol,
            None => match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
                .or_else(|| {
                    var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
                }) {
                Some((name, value)) => OtlpProtocol::parse(&value)
                    .map_err(|err| TelemetryError::new(format!("{name}: {err}")))?,
                None => OtlpProtocol::HttpProtobuf,
            },
        };
        // (the URL, its source, whether it is a base URL)
        let found = if let Some(url) = &self.otlp_endpoint {
            Some((url.clone(), "telemetry.otlp_endpoint", true))
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some((url, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", false))
        } else {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|url| (url, "OTEL_EXPORTER_OTLP_ENDPOINT", true))
        };
        let Some((url, source, base)) = found else {
            return Ok(None);
        };
        let url = url.trim().to_owned();
        check_url(&url).map_err(|err| TelemetryError::new(format!("{source}: {err}")))?;
        if protocol == OtlpProtocol::Grpc && url.starts_with("https:") {
            return Err(TelemetryError::new(format!(
                "{source}: gRPC export is spoken without TLS; for `{url}` use protocol \
                 http/protobuf"
            )));
        }
        let endpoint = if base && protocol == OtlpProtocol::HttpProtobuf {
            traces_url(&url)
        } else {
            url
        };
        let service_name = self
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        let sample_ratio = match self.sample_ratio {
            Some(ratio) => ratio,
            None => sampler_from_env(&var)?,
        };
        Ok(Some(OtlpSettings {
            endpoint,
            protocol,
            service_name,
            sample_ratio,
        }))
    }
}

/// The HTTP traces URL under a base URL: `/v1/traces` appended to its path, unless it is
/// already there.
fn traces_url(base: &str) -> String {
    let trimmed = base.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

fn sampler_from_env(var: &impl Fn(&str) -> Option<String>) -> Result<f64, TelemetryError> {
    let Some(sampler) = var("OTEL_TRACES_SAMPLER") else {
        return Ok(1.0);
    };
    match sampler.trim() {
        "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => {
            let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") else {
                return Ok(1.0);
            };
            let ratio: f64 = arg.trim().parse().map_err(|_| {
                TelemetryError::new(format!("OTEL_TRACES_SAMPLER_ARG: `{arg}` is not a number"))
            })?;
            check_ratio(ratio)
                .map_err(|err| TelemetryError::new(format!("OTEL_TRACES_SAMPLER_ARG: {err}")))?;
            Ok(ratio)
        }
        other => Err(TelemetryError::new(format!(
            "OTEL_TRACES_SAMPLER: `{other}` is not supported (use always_on, always_off, \
             traceidratio or their parentbased_ forms)"
        ))),
    }
}

// ===== set-up =====

/// Set when an OpenTelemetry layer is installed: spans carry trace context, and provider
/// clients are given the hook that propagates it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// `true` once [`init`] installed an exporting layer.
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What [`init`] set up; keep it until the process ends, then call
/// [`shutdown`](Self::shutdown) so that the last spans are sent.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    settings: Option<OtlpSettings>,
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Where spans are exported, if they are.
    pub fn settings(&self) -> Option<&OtlpSettings> {
        self.settings.as_ref()
    }

    /// `true` if spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.settings.is_some()
    }

    /// Sends the spans finished so far (waits for the collector's answer).
    ///
    /// # Errors
    ///
    /// The exporter's error.
    #[cfg_attr(not(feature = "otel"), allow(clippy::unused_async))]
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        #[cfg(feature = "otel")]
        if let Some(provider) = &self.provider {
            return otel::flush(provider.clone()).await;
        }
        Ok(())
    }

    /// Sends the spans finished so far and stops exporting.
    ///
    /// # Errors
    ///
    /// The exporter's error.
    #[cfg_attr(not(feature = "otel"), allow(clippy::unused_async))]
    pub async fn shutdown(self) -> Result<(), TelemetryError> {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            return otel::shutdown(provider).await;
        }
        Ok(())
    }
}

/// Sets up the process's logs and traces: logs on stdout filtered by `RUST_LOG` (default
/// `info`, `error` when `quiet`), as text or JSON lines, coloured only on a terminal; and,
/// with the `otel` feature and export configured (see [`TelemetryConfig::resolve`]), spans
/// and events exported over OTLP.
///
/// Must be called inside a tokio runtime when export is configured (the exporter sends on
/// it). Does nothing but return a guard if a global subscriber is already set.
///
/// # Errors
///
/// A [`TelemetryError`] when the export settings cannot be used (nothing is installed
/// then).
pub fn init(
    json: bool,
    quiet: bool,
    telemetry: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    use tracing_subscriber::util::SubscriberInitExt;

    let settings = telemetry.resolve(|var| std::env::var(var).ok())?;
    #[cfg(feature = "otel")]
    if let Some(settings) = settings {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt;

        let provider = otel::tracer_provider(&settings)?;
        // Each layer its own filter: the logs follow `RUST_LOG`, the export its own levels.
        let installed = tracing_subscriber::registry()
            .with(
                crate::metrics::log_layer(json, crate::metrics::ansi_stdout(), std::io::stdout)
                    .with_filter(crate::metrics::log_filter(quiet)),
            )
            .with(otel::layer(&provider))
            .try_init()
            .is_ok();
        if !installed {
            // Another subscriber owns the process: it decides what happens to spans.
            return Ok(TelemetryGuard::default());
        }
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = %settings.endpoint,
            protocol = %settings.protocol,
            service_name = %settings.service_name,
            sample_ratio = settings.sample_ratio,
            "exporting traces over OTLP"
        );
        return Ok(TelemetryGuard {
            settings: Some(settings),
            provider: Some(provider),
        });
    }
    let _ = crate::metrics::subscriber(json, quiet, crate::metrics::ansi_stdout(), std::io::stdout)
        .try_init();
    #[cfg(not(feature = "otel"))]
    if let Some(settings) = settings {
        tracing::warn!(
            endpoint = %settings.endpoint,
            "trace export is configured, but this build has no `otel` feature: no spans are \
             exported"
        );
    }
    Ok(TelemetryGuard::default())
}

/// The hook provider clients call with each request's headers: it adds the `traceparent`
/// of the current span (the attempt's). `None` unless spans are exported.
pub(crate) fn upstream_hook() -> Option<brace_providers::provider::RequestHook> {
    #[cfg(feature = "otel")]
    if is_exporting() {
        return Some(otel::propagation_hook());
    }
    None
}

#[cfg(feature = "otel")]
pub use self::otel::{layer, tracer_provider};

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::registry::LookupSpan;

    use super::{OtlpProtocol, OtlpSettings, TelemetryError};

    /// An OpenTelemetry tracer provider exporting to `settings`' collector in batches, with
    /// a parent-based ratio sampler.
    ///
    /// Call it inside a tokio runtime: the exporter sends on it.
    ///
    /// # Errors
    ///
    /// A [`TelemetryError`] when there is no runtime or the exporter cannot be built.
    pub fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, TelemetryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TelemetryError::new("trace export must be started inside a tokio runtime")
        })?;
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .build(),
            OtlpProtocol::HttpProtobuf => {
                brace_providers::provider::install_crypto_provider();
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .map_err(|err| TelemetryError::new(format!("HTTP client: {err}")))?;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(settings.endpoint.clone())
                    .with_http_client(OnRuntime { client, runtime })
                    .build()
            }
        }
        .map_err(|err| TelemetryError::new(format!("OTLP exporter: {err}")))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build())
    }

    /// The `tracing` layer that turns spans and events into OpenTelemetry spans of
    /// `provider`: brace's spans and events from debug up, others' from info up.
    pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let targets = Targets::new().with_default(LevelFilter::INFO).with_targets(
            [
                "brace_core",
                "brace_circuit",
                "brace_retry",
                "brace_degrade",
                "brace_failover",
                "brace_llm",
                "brace_providers",
                "brace_gateway",
            ]
            .map(|target| (target, LevelFilter::DEBUG)),
        );
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("brace-gateway"))
            .with_filter(targets)
    }

    pub(super) async fn flush(provider: SdkTracerProvider) -> Result<(), TelemetryError> {
        // Flushing blocks until the exporter, which sends on this runtime, is done.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|err| TelemetryError::new(err.to_string()))?
            .map_err(|err| TelemetryError::new(format!("flush: {err}")))
    }

    pub(super) async fn shutdown(provider: SdkTracerProvider) -> Result<(), TelemetryError> {
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(|err| TelemetryError::new(err.to_string()))?
            .map_err(|err| TelemetryError::new(format!("shutdown: {err}")))
    }

    /// Makes `span` (a request's) the child of the trace context in `headers`, if they carry
    /// a valid `traceparent`.
    pub(super) fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        if opentelemetry::trace::TraceContextExt::span(&parent)
            .span_context()
            .is_valid()
        {
            let _ = span.set_parent(parent);
        }
    }

    pub(super) fn propagation_hook() -> brace_providers::provider::RequestHook {
        brace_providers::provider::RequestHook::new(|headers| {
            let context = tracing::Span::current().context();
            TraceContextPropagator::new()
                .inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
        })
    }

    /// The OTLP/HTTP exporter's client: it sends on the gateway's tokio runtime (the batch
    /// processor exports from a thread of its own, outside any runtime), with brace's
    /// reqwest set-up (rustls).
    #[derive(Debug)]
    struct OnRuntime {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    /// The largest collector answer read (a partial-success message is small).
    const MAX_ANSWER: usize = 64 * 1024;

    #[async_trait::async_trait]
    impl opentelemetry_http::HttpClient for OnRuntime {
        async fn send_bytes(
            &self,
            request: http::Request<bytes::Bytes>,
        ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
            let client = self.client.clone();
            let sent = self.runtime.spawn(async move {
                let request = reqwest::Request::try_from(request)?;
                let mut response = client.execute(request).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    headers.clone_from(response.headers());
                }
                let mut body = bytes::BytesMut::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER {
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, opentelemetry_http::HttpError>(answer.body(body.freeze())?)
            });
            sent.await?
        }
    }
}

// ===== the request span =====

/// The span of one HTTP request: `request`, at info level, with the request's method, path
/// and id, the client `key` (filled in by [`auth`](crate::auth)), and empty GenAI and brace
/// attributes that [`Gateway::call`](crate::Gateway::call) fills in. When spans are exported, it is named and kinded for OpenTelemetry and made the
/// child of the caller's `traceparent`.
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(crate::request_id::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        key = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
        http.response.status_code = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        brace.provider = Empty,
        brace.attempts = Empty,
        brace.degradation.level = Empty,
        brace.cache.hit = Empty,
        brace.continuation = Empty,
        error.type = Empty,
    );
    if is_exporting() && !span.is_disabled() {
        span.record(
            "otel.name",
            span_name(request.method(), request.uri().path()),
        );
        span.record("otel.kind", "server");
        #[cfg(feature = "otel")]
        otel::adopt_parent(&span, request.headers());
    }
    span
}

/// `{method} {route}` for the gateway's routes; the method alone for any other path (a
/// path from the request would make one span name per URL).
fn span_name(method: &http::Method, path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/completions/circuit",
        "/v1/models",
        "/v1/health",
        "/v1/circuits",
        "/v1/degradation/level",
        "/metrics",
    ];
    let Some(route) = ROUTES.iter().position(|route| *route == path) else {
        return match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            _ => "HTTP",
        };
    };
    const GET: [&str; 8] = [
        "GET /v1/chat/completions",
        "GET /v1/completions",
        "GET /v1/completions/circuit",
        "GET /v1/models",
        "GET /v1/health",
        "GET /v1/circuits",
        "GET /v1/degradation/level",
        "GET /metrics",
    ];
    const POST: [&str; 8] = [
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/completions/circuit",
        "POST /v1/models",
        "POST /v1/health",
        "POST /v1/circuits",
        "POST /v1/degradation/level",
        "POST /metrics",
    ];
    match *method {
        http::Method::GET => GET[route],
        http::Method::POST => POST[route],
        _ => "HTTP",
    }
}

/// Calls `record` with the current span, where the request's span may be; not when no
/// subscriber takes info-level spans (a check of a global flag, so that a gateway without
/// logs pays nothing more). The span is the subscriber's current one as it knows it: no
/// `tracing::Span` handle is made for it (a reference counted up, then down and checked for
/// closing, twice per request).
fn in_request_span(record: impl FnOnce(&Current<'_>)) {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return;
    }
    let mut record = Some(record);
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        if let (Some(id), Some(metadata), Some(record)) =
            (current.id(), current.metadata(), record.take())
        {
            record(&Current {
                dispatch,
                id,
                metadata,
            });
        }
    });
}

/// A span values are recorded on.
trait Target {
    fn metadata(&self) -> Option<&'static tracing::Metadata<'static>>;

    fn record_values(&self, values: &tracing::field::ValueSet<'_>);

    /// Records `value` as the field `name`, if the span has one.
    fn record_one(&self, name: &str, value: &dyn tracing::Value) {
        let Some(metadata) = self.metadata() else {
            return;
        };
        let fields = metadata.fields();
        if let Some(field) = fields.field(name) {
            self.record_values(&fields.value_set(&[(&field, Some(value))]));
        }
    }
}

impl Target for tracing::Span {
    fn metadata(&self) -> Option<&'static tracing::Metadata<'static>> {
        tracing::Span::metadata(self)
    }

    fn record_values(&self, values: &tracing::field::ValueSet<'_>) {
        self.record_all(values);
    }
}

/// The current span, as its subscriber knows it.
struct Current<'a> {
    dispatch: &'a tracing::Dispatch,
    id: &'a tracing::span::Id,
    metadata: &'static tracing::Metadata<'static>,
}

impl Target for Current<'_> {
    fn metadata(&self) -> Option<&'static tracing::Metadata<'static>> {
        Some(self.metadata)
    }

    fn record_values(&self, values: &tracing::field::ValueSet<'_>) {
        self.dispatch
            .record(self.id, &tracing::span::Record::new(values));
    }
}

/// The fields one caller of [`record_all`] names, as found in the field set of the first
/// span they are recorded on, kept for later spans of the same callsite: the request
/// span's fields are then found once per process instead of by comparing names at every
/// request.
struct Names<const N: usize>(OnceLock<(tracing::callsite::Identifier, [tracing::field::Field; N])>);

impl<const N: usize> Names<N> {
    const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// Calls `with` on `names` as fields of `metadata`'s field set, or returns `None` if one
    /// is missing. The kept fields are lent, not copied.
    fn with<R>(
        &self,
        metadata: &'static tracing::Metadata<'static>,
        names: [&str; N],
        with: impl FnOnce(&[tracing::field::Field; N]) -> R,
    ) -> Option<R> {
        let callsite = metadata.callsite();
        if let Some((of, fields)) = self.0.get()
            && *of == callsite
        {
            return Some(with(fields));
        }
        let set = metadata.fields();
        let found = names.map(|name| set.field(name));
        if !found.iter().all(Option::is_some) {
            return None;
        }
        let fields = found.map(|field| field.expect("checked above"));
        // The first callsite kept wins; another callsite's fields are found each time.
        Some(match self.0.set((callsite, fields)) {
            Ok(()) => with(&self.0.get().expect("just kept").1),
            Err((_, fields)) => with(&fields),
        })
    }
}

/// Records `values` on `span` in one call: each subscriber layer visits the span once for
/// all of them, where a `record` per field would look the span up once per field. A `None`
/// value is left as it was. On a span that lacks one of the names (not the request's), the
/// values are recorded one by one, each where it fits.
fn record_all<const N: usize>(
    span: &impl Target,
    names: &Names<N>,
    values: [(&str, Option<&dyn tracing::Value>); N],
) {
    let Some(metadata) = span.metadata().filter(|_| N > 0) else {
        return;
    };
    let recorded = names.with(metadata, values.map(|(name, _)| name), |fields| {
        let mut pairs = [(&fields[0], None); N];
        for (pair, (field, (_, value))) in pairs.iter_mut().zip(fields.iter().zip(values)) {
            *pair = (field, value);
        }
        span.record_values(&metadata.fields().value_set(&pairs));
    });
    if recorded.is_some() {
        return;
    }
    for (name, value) in values {
        if let Some(value) = value {
            span.record_one(name, value);
        }
    }
}

/// Records what a chat request asks for on the current span (the request's).
pub(crate) fn record_request(request: &ChatRequest) {
    static NAMES: Names<2> = Names::new();
    in_request_span(|span| {
        record_all(
            span,
            &NAMES,
            [
                ("gen_ai.operation.name", Some(&"chat")),
                ("gen_ai.request.model", Some(&request.model.as_str())),
            ],
        );
    });
}

/// Records who answered a chat request, and how, on the current span (the request's).
pub(crate) fn record_answer(response: &ChatResponse, attempts: u32) {
    static NAMES: Names<8> = Names::new();
    let meta = &response.meta;
    let level = meta.degradation.as_ref().map_or("full", |d| &*d.level);
    let usage = response.completion().and_then(|c| c.usage.as_ref());
    let (input, output) = usage.map(tokens).unzip();
    in_request_span(|span| {
        record_all(
            span,
            &NAMES,
            [
                ("http.response.status_code", Some(&200_i64)),
                ("gen_ai.response.model", Some(&meta.model.as_str())),
                ("brace.provider", Some(&&*meta.provider)),
                ("brace.attempts", Some(&i64::from(attempts))),
                ("brace.degradation.level", Some(&level)),
                ("brace.cache.hit", Some(&(meta.origin() == Origin::Cache))),
                (
                    "gen_ai.usage.input_tokens",
                    input.as_ref().map(|v| v as &dyn tracing::Value),
                ),
                (
                    "gen_ai.usage.output_tokens",
                    output.as_ref().map(|v| v as &dyn tracing::Value),
                ),
            ],
        );
    });
}

/// Records a chat request the stack could not answer on the current span.
pub(crate) fn record_failure(status: http::StatusCode, attempts: u32) {
    static NAMES: Names<4> = Names::new();
    let code = i64::from(status.as_u16());
    let attempts = i64::from(attempts);
    let error = status.is_server_error().then(|| status.as_str());
    in_request_span(|span| {
        record_all(
            span,
            &NAMES,
            [
                ("http.response.status_code", Some(&code)),
                ("brace.attempts", Some(&attempts)),
                (
                    "error.type",
                    error.as_ref().map(|v| v as &dyn tracing::Value),
                ),
                (
                    "otel.status_code",
                    error.map(|_| &"error" as &dyn tracing::Value),
                ),
            ],
        );
    });
}

/// Records the token usage a stream reported at its end on the current span (the
/// request's, while its body is sent).
pub(crate) fn record_stream_usage(usage: &Usage) {
    in_request_span(|span| record_usage(span, usage));
}

fn record_usage(span: &impl Target, usage: &Usage) {
    static NAMES: Names<2> = Names::new();
    let (input, output) = tokens(usage);
    record_all(
        span,
        &NAMES,
        [
            ("gen_ai.usage.input_tokens", Some(&input)),
            ("gen_ai.usage.output_tokens", Some(&output)),
        ],
    );
}

/// Records the provider that continued a broken stream on the current span.
pub(crate) fn record_continuation(provider: &str) {
    in_request_span(|span| span.record_one("brace.continuation", &provider));
}

/// Input and output tokens as span values.
fn tokens(usage: &Usage) -> (i64, i64) {
    (
        i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
        i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
    )
}

// ===== the attempt span =====

/// Opens an `attempt` span around each call to one provider (below retry, so each retry
/// is an attempt of its own): the GenAI attributes of the request and the answer, the
/// attempt's number in the request, its outcome and the provider's circuit state. A
/// streamed answer's span lasts until the stream ends.
///
/// The span is at debug level: without a subscriber interested in it (no export, logs at
/// info), nothing is created or allocated per call.
#[derive(Clone)]
pub(crate) struct AttemptSpanLayer {
    meta: Arc<AttemptMeta>,
}

struct AttemptMeta {
    provider: Arc<str>,
    system: &'static str,
    address: Option<String>,
    port: Option<i64>,
    circuit: CircuitHandle,
}

impl AttemptSpanLayer {
    /// For `provider`'s calls, sent to `base_url` (`None` in-process); `circuit` is its
    /// breaker.
    pub(crate) fn new(
        provider: &ProviderConfig,
        base_url: Option<&str>,
        circuit: CircuitHandle,
    ) -> Self {
        let base = base_url.and_then(|url| reqwest::Url::parse(url).ok());
        Self {
            meta: Arc::new(AttemptMeta {
                provider: provider.name.as_str().into(),
                system: gen_ai_system(provider.kind()),
                address: base
                    .as_ref()
                    .and_then(|url| url.host_str().map(str::to_owned)),
                port: base
                    .as_ref()
                    .and_then(reqwest::Url::port_or_known_default)
                    .map(i64::from),
                circuit,
            }),
        }
    }
}

/// The `gen_ai.system` of a provider kind (the values of the semantic conventions; an
/// OpenAI-compatible server speaks OpenAI's API).
fn gen_ai_system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Simulated => "brace.simulated",
    }
}

impl<S> Layer<S> for AttemptSpanLayer {
    type Service = AttemptSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptSpan {
            inner,
            meta: self.meta.clone(),
        }
    }
}

/// The service of [`AttemptSpanLayer`].
#[derive(Clone)]
pub(crate) struct AttemptSpan<S> {
    inner: S,
    meta: Arc<AttemptMeta>,
}

impl AttemptMeta {
    fn span(&self, request: &ChatRequest) -> tracing::Span {
        tracing::debug_span!(
            "attempt",
            otel.name = %format_args!("chat {}", request.model),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.system = self.system,
            gen_ai.request.model = request.model.as_str(),
            gen_ai.request.max_tokens = request.max_tokens.map(i64::from),
            gen_ai.request.temperature = request.temperature,
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            server.address = self.address.as_deref(),
            server.port = self.port,
            brace.provider = &*self.provider,
            brace.attempt = Empty,
            brace.outcome = Empty,
            brace.circuit.state = self.circuit.state().as_str(),
            brace.stream = request.is_stream(),
            error.type = Empty,
        )
    }
}

impl<S, E> Service<ChatRequest> for AttemptSpan<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = E>,
    E: AttemptError,
{
    type Response = ChatResponse;
    type Error = E;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let span = self.meta.span(&request);
        if span.is_disabled() {
            return AttemptFuture {
                future: self.inner.call(request),
                record: None,
            };
        }
        // Entered while the call is made: a client that sends from `call` sends the
        // attempt's trace context.
        let future = span.in_scope(|| self.inner.call(request));
        // The request's attempts are counted by the time the call is made (above or below
        // this layer): the count is this attempt's number.
        if let Some(attempt) = crate::stack::Attempts::so_far() {
            span.record("brace.attempt", i64::from(attempt));
        }
        AttemptFuture {
            future,
            record: Some(Record { span, done: false }),
        }
    }
}

/// What an attempt's error says about how it ended.
pub(crate) trait AttemptError {
    /// The outcome: an [`LlmError`] kind, `timeout`, or `error`.
    fn kind(&self) -> &'static str;
}

impl AttemptError for LlmError {
    fn kind(&self) -> &'static str {
        LlmError::kind(self).as_str()
    }
}

impl AttemptError for BoxError {
    fn kind(&self) -> &'static str {
        let err: &(dyn std::error::Error + 'static) = &**self;
        if let Some(err) = brace_core::error::find::<LlmError>(err) {
            err.kind().as_str()
        } else if err.is::<tower::timeout::error::Elapsed>() {
            "timeout"
        } else {
            "error"
        }
    }
}

pin_project! {
    /// The response future of [`AttemptSpan`]: the call, polled inside the attempt's span.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the call, and ends the span with the outcome `cancelled`.
    pub(crate) struct AttemptFuture<F> {
        #[pin]
        future: F,
        record: Option<Record>,
    }
}

impl<F, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<ChatResponse, E>>,
    E: AttemptError,
{
    type Output = Result<ChatResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(record) = this.record.as_mut() else {
            return this.future.poll(cx);
        };
        let result = {
            let _entered = record.span.enter();
            ready!(this.future.poll(cx))
        };
        let mut record = this.record.take().expect("checked above");
        Poll::Ready(match result {
            Ok(mut response) => {
                record.answer(&mut response);
                Ok(response)
            }
            Err(err) => {
                record.finish(err.kind());
                Err(err)
            }
        })
    }
}

/// An attempt's span, and whether its outcome is recorded: dropped unrecorded, the attempt
/// was cancelled.
struct Record {
    span: tracing::Span,
    done: bool,
}

impl Record {
    fn answer(mut self, response: &mut ChatResponse) {
        let span = &self.span;
        span.record("gen_ai.response.model", response.meta.model.as_str());
        match &mut response.body {
            ResponseBody::Complete(completion) => {
                if !completion.id.is_empty() {
                    span.record("gen_ai.response.id", completion.id.as_str());
                }
                if let Some(usage) = &completion.usage {
                    record_usage(span, usage);
                }
                self.finish("ok");
            }
            ResponseBody::Stream(stream) => {
                // The span lasts as long as the stream: its end says how the attempt went.
                let inner = std::mem::replace(stream, ChatStream::from_items(Vec::new()));
                *stream = ChatStream::new(TracedStream {
                    inner,
                    record: Some(self),
                });
            }
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        self.done = true;
        self.span.record("brace.outcome", outcome);
        if outcome != "ok" {
            self.span.record("error.type", outcome);
            self.span.record("otel.status_code", "error");
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.done {
            self.finish("cancelled");
        }
    }
}

/// A streamed answer whose chunks are read inside the attempt's span, which ends with it.
struct TracedStream {
    inner: ChatStream,
    record: Option<Record>,
}

impl Stream for TracedStream {
    type Item = Result<brace_llm::StreamChunk, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = match &this.record {
            Some(record) => {
                let _entered = record.span.enter();
                ready!(Pin::new(&mut this.inner).poll_next(cx))
            }
            None => return Pin::new(&mut this.inner).poll_next(cx),
        };
        match &item {
            Some(Ok(chunk)) => {
                if let (Some(usage), Some(record)) = (&chunk.usage, &this.record) {
                    record_usage(&record.span, usage);
                }
            }
            Some(Err(err)) => {
                if let Some(mut record) = this.record.take() {
                    record.finish(err.kind().as_str());
                }
            }
            None => {
                if let Some(mut record) = this.record.take() {
                    record.finish("ok");
                }
            }
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_names_are_found_on_each_callsite_the_first_kept() {
        use std::sync::Mutex;

        /// The fields recorded on each span, as `name=value` text.
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<String>>>);

        struct Text<'a>(&'a mut String);

        impl tracing::field::Visit for Text<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }

        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_record(
                &self,
                span: &tracing::span::Id,
                values: &tracing::span::Record<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let mut text = format!("{}: ", span.into_u64());
                values.record(&mut Text(&mut text));
                self.0.lock().unwrap().push(text.trim_end().to_owned());
            }
        }

        use tracing_subscriber::layer::SubscriberExt;
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            static NAMES: Names<2> = Names::new();
            // Two callsites with the same names at different positions: the fields kept
            // for the first must not be used for the second.
            let first = tracing::info_span!("first", a = Empty, b = Empty);
            let second = tracing::info_span!("second", x = 0, b = Empty, a = Empty);
            for round in 0..2_i64 {
                for span in [&first, &second] {
                    record_all(span, &NAMES, [("a", Some(&round)), ("b", Some(&"v"))]);
                }
            }
            // A span without the names: each value where it fits (here: nowhere).
            let other = tracing::info_span!("other", c = Empty);
            record_all(&other, &NAMES, [("a", Some(&1_i64)), ("b", None)]);
            let ids = [&first, &second].map(|span| span.id().unwrap().into_u64());
            assert_eq!(
                *seen.0.lock().unwrap(),
                [
                    format!("{}: a=0 b=\"v\"", ids[0]),
                    format!("{}: a=0 b=\"v\"", ids[1]),
                    format!("{}: a=1 b=\"v\"", ids[0]),
                    format!("{}: a=1 b=\"v\"", ids[1]),
                ]
            );
        });
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn off_without_a_section_or_variables() {
        assert_eq!(TelemetryConfig::default().resolve(env(&[])), Ok(None));
    }

    #[test]
    fn the_http_endpoint_gets_the_traces_path() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..TelemetryConfig::default()
        };
        let settings = config.resolve(env(&[])).unwrap().unwrap();
        assert_eq!(settings.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(settings.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(settings.sample_ratio, 1.0);
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318/v1/traces/".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            config.resolve(env(&[])).unwrap().unwrap().endpoint,
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn grpc_from_the_file_keeps_the_endpoint_as_it_is() {
        let config: crate::GatewayConfig = crate::GatewayConfig::from_yaml(
            "providers: [{name: a, kind: simulated, model: m}]\n\
             telemetry:\n  otlp_endpoint: http://127.0.0.1:4317\n  protocol: grpc\n  \
             service_name: edge-gw\n  sample_ratio: 0.25\n",
        )
        .unwrap();
        let settings = config
            .telemetry
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(
            settings,
            OtlpSettings {
                endpoint: "http://127.0.0.1:4317".into(),
                protocol: OtlpProtocol::Grpc,
                service_name: "edge-gw".into(),
                sample_ratio: 0.25,
            }
        );
    }

    #[test]
    fn the_standard_variables_fill_what_the_file_leaves_out() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ];
        let settings = TelemetryConfig::default()
            .resolve(env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!(
            settings,
            OtlpSettings {
                endpoint: "http://collector:4317".into(),
                protocol: OtlpProtocol::Grpc,
                service_name: "gw-eu".into(),
                sample_ratio: 0.5,
            }
        );
        // The traces-only variables win over the generic ones; their URL is used as it is.
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        let settings = TelemetryConfig::default()
            .resolve(env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!(settings.endpoint, "http://traces:4318/custom");
        assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn the_kill_switches_win_over_the_file() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            config.resolve(env(&[("OTEL_SDK_DISABLED", "true")])),
            Ok(None)
        );
        assert_eq!(
            config.resolve(env(&[("OTEL_TRACES_EXPORTER", "none")])),
            Ok(None)
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |vars: &[(&str, &str)]| {
            TelemetryConfig::default()
                .resolve(env(vars))
                .unwrap_err()
                .to_string()
        };
        let message = err(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        assert!(
            message.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && message.contains("http/json"),
            "{message}"
        );
        let message = err(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(message.contains("without TLS"), "{message}");
        let message = err(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        assert!(message.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{message}");
        let message = err(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]);
        assert!(message.contains("OTEL_TRACES_SAMPLER_ARG"), "{message}");
    }

    #[test]
    fn the_file_is_checked_where_it_is_written() {
        for (section, expected) in [
            ("  sample_ratio: 1.5\n", "sample ratio must be from 0 to 1"),
            (
                "  otlp_endpoint: collector:4317\n",
                "not an http:// or https:// URL",
            ),
            ("  protocol: http/json\n", "protocol"),
            ("  endpoint: http://c:4318\n", "endpoint"),
        ] {
            let yaml = format!(
                "providers: [{{name: a, kind: simulated, model: m}}]\ntelemetry:\n{section}"
            );
            let err = crate::GatewayConfig::from_yaml(&yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{section:?}: {err}");
            assert!(err.contains("line 3"), "{section:?} names its line: {err}");
        }
    }

    #[test]
    fn span_names_are_routes_or_methods() {
        assert_eq!(
            span_name(&http::Method::POST, "/v1/chat/completions"),
            "POST /v1/chat/completions"
        );
        assert_eq!(span_name(&http::Method::GET, "/metrics"), "GET /metrics");
        assert_eq!(span_name(&http::Method::GET, "/secret/abc123"), "GET");
    }
}
