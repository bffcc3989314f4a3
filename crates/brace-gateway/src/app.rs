//! The HTTP API: routes, handlers and the response headers that say who answered.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use brace_llm::{ChatRequest, ChatResponse, Message, Origin, ResponseBody};

use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::stack::Gateway;

/// Builds the gateway's router.
///
/// The data plane (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) checks client
/// keys when the configuration has an `auth` section, and is bounded by
/// `server.max_in_flight`; the health, metrics and admin endpoints are outside both, so they
/// keep answering while the data plane sheds. Every request body is read under
/// `server.body_timeout`, and every error — the framework's own rejections included, such
/// as 405 — is answered in OpenAI's error shape.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let edge = edge(&gateway.config().server);
    routes(gateway, None).layer(edge)
}

/// The layers of [`edge`], innermost first (as `tower::ServiceBuilder` stacks them).
type EdgeLayers<F> = tower::layer::util::Stack<
    axum::extract::DefaultBodyLimit,
    tower::layer::util::Stack<
        tower::util::MapRequestLayer<F>,
        tower::layer::util::Stack<crate::error::OpenAiShapeLayer, tower::layer::util::Identity>,
    >,
>;

/// The edge of [`router`], outermost first: every error in OpenAI's shape, the request
/// body read under `server.body_timeout` and `server.request_timeout`, and bounded by
/// `server.body_limit`. [`serve`](crate::serve) puts it around [`routes`].
pub(crate) fn edge(
    server: &crate::config::ServerConfig,
) -> tower::ServiceBuilder<
    EdgeLayers<impl Fn(axum::extract::Request) -> axum::extract::Request + Clone + use<>>,
> {
    tower::ServiceBuilder::new()
        .layer(crate::error::OpenAiShapeLayer)
        .layer(tower::util::MapRequestLayer::new(
            crate::limits::time_request_body(server.body_timeout, server.request_timeout),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(server.body_limit))
}

/// The routes of [`router`] without its edge (the OpenAI error shape, the body's time and
/// size limits), for [`serve`](crate::serve), which puts the edge around the router rather
/// than on every route: each `Router::layer` boxes every route once more, and a request
/// pays for each box (a clone of the boxed service and a boxed future).
///
/// With `listening`, the admin endpoints find it in their requests' extensions
/// ([`ListenAddr`](crate::server::ListenAddr), for their loopback check); the data plane's
/// requests do not carry it, having no use for it.
pub(crate) fn routes(gateway: Arc<Gateway>, listening: Option<std::net::SocketAddr>) -> Router {
    // One route layer (one box per route) for the data plane's three checks.
    let data_plane = Router::new()
        .route(CHAT_COMPLETIONS, post(chat_completions))
        .route("/v1/completions", post(seed_completions))
        .route("/v1/completions/circuit", post(seed_completions_circuit))
        .route("/v1/models", get(models))
        .route_layer(data_plane_checks(&gateway));
    let mut admin = Router::new()
        .route(
            "/v1/degradation/level",
            post(set_degradation_level).get(degradation_level),
        )
        .merge(crate::ops::routes());
    if let Some(listening) = listening {
        admin = admin.layer(Extension(crate::server::ListenAddr(listening)));
    }
    Router::new()
        .merge(data_plane)
        .route("/v1/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/circuits", get(circuits))
        .route("/metrics", get(metrics))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

/// The chat route's path: in the router, and where [`ChatFirst`] answers it without one.
const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// The layers of [`data_plane_checks`], innermost first (as `tower::ServiceBuilder` stacks
/// them).
type DataPlaneChecks<F> = tower::layer::util::Stack<
    crate::limits::InFlightLimitLayer,
    tower::layer::util::Stack<
        crate::auth::RequireKeyLayer,
        tower::layer::util::Stack<tower::util::MapResponseLayer<F>, tower::layer::util::Identity>,
    >,
>;

/// The data plane's checks, outermost first: the chaos header on every answer, the client's
/// key, and `server.max_in_flight`.
fn data_plane_checks(
    gateway: &Arc<Gateway>,
) -> tower::ServiceBuilder<DataPlaneChecks<impl Fn(Response) -> Response + Clone + use<>>> {
    let server = &gateway.config().server;
    tower::ServiceBuilder::new()
        .layer(crate::ops::chaos_header_layer(gateway.clone()))
        .layer(crate::auth::RequireKeyLayer::new(gateway.clone()))
        .layer(crate::limits::InFlightLimitLayer::new(
            server.max_in_flight,
            gateway.metrics.clone(),
        ))
}

/// [`routes`] with `POST /v1/chat/completions` — nearly every request a gateway takes —
/// answered by its handler under the data plane's checks directly, not through the router:
/// the router's path lookup, its boxed route (a clone of the boxed service and a boxed
/// future per request) and the path parameters it inserts into every request's extensions
/// cost a chat request ~2.7 K instructions and seven allocations for nothing (the route has
/// no parameters; BENCHMARKS.md, issue 22's tenth pass). Every other request, and any
/// other method on that path (a 405), goes to the router. What a request meets is the same
/// either way: the same checks in the same order, the same handler, and the edge
/// [`serve`](crate::serve) puts around both.
#[derive(Clone)]
pub(crate) struct ChatFirst<C> {
    chat: C,
    router: Router,
}

/// [`ChatFirst`] over `routes(gateway, listening)`.
pub(crate) fn chat_first(
    gateway: Arc<Gateway>,
    listening: Option<std::net::SocketAddr>,
) -> ChatFirst<
    impl tower::Service<
        axum::extract::Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + use<>,
> {
    use axum::handler::Handler;

    let chat = data_plane_checks(&gateway).service(chat_completions.with_state(gateway.clone()));
    ChatFirst {
        chat,
        router: routes(gateway, listening),
    }
}

impl<C> tower::Service<axum::extract::Request> for ChatFirst<C>
where
    C: tower::Service<
            axum::extract::Request,
            Response = Response,
            Error = std::convert::Infallible,
        >,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        C::Future,
        <Router as tower::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both are ready at once (the router always is; the checks ask the handler, which
        // always is), so readiness for either request is readiness for both.
        std::task::ready!(self.chat.poll_ready(cx))?;
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        if request.method() == http::Method::POST && request.uri().path() == CHAT_COMPLETIONS {
            futures_util::future::Either::Left(self.chat.call(request))
        } else {
            futures_util::future::Either::Right(self.router.call(request))
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A route's path asked with a method it does not take (the router adds the `Allow`
/// header). Answered here, where the request is at hand, so that the edge's
/// [`OpenAiShape`](crate::error::OpenAiShapeLayer) need not keep every request's URI for
/// the message — a clone of the URI shares the connection's read buffer, which a stream
/// would then hold for as long as it waits for its first token.
async fn method_not_allowed(method: http::Method, uri: http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed for {}; the `Allow` header lists those that are",
            uri.path()
        ),
    )
}

/// The answer to a request body that could not be read: 408 when it stalled, 413 when it is
/// over the limit, else 400.
fn body_error(rejection: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut source = Some(rejection);
    while let Some(err) = source {
        if let Some(timed_out) = err.downcast_ref::<crate::limits::BodyTimedOut>() {
            return Some(
                ApiError::new(StatusCode::REQUEST_TIMEOUT, timed_out.to_string())
                    .with_code("request_timeout"),
            );
        }
        source = err.source();
    }
    None
}

// ===== chat completions =====

fn parse_json<T>(body: Result<JsonBody<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(JsonBody(value)) => Ok(value),
        Err(rejection) => {
            if let Some(err) = body_error(&rejection) {
                return Err(err);
            }
            let status = rejection.status();
            let message = match &rejection {
                JsonRejection::JsonDataError(err) => {
                    format!(
                        "invalid request body: {}",
                        std::error::Error::source(err)
                            .map_or_else(|| err.body_text(), ToString::to_string)
                    )
                }
                JsonRejection::JsonSyntaxError(err) => {
                    format!(
                        "request body is not valid JSON: {}",
                        std::error::Error::source(err)
                            .map_or_else(|| err.body_text(), ToString::to_string)
                    )
                }
                JsonRejection::MissingJsonContentType(_) => {
                    "expected `Content-Type: application/json`".to_owned()
                }
                other => other.body_text(),
            };
            let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
                status
            } else if status.is_client_error() {
                StatusCode::BAD_REQUEST
            } else {
                status
            };
            Err(ApiError::new(status, message))
        }
    }
}

async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    body: Result<JsonBody<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let request = parse_json(body)?;
    request.validate().map_err(ApiError::bad_request)?;
    let (response, attempts) = gateway.call(request).await?;
    let mut headers = meta_headers(&response, attempts);
    match response.body {
        ResponseBody::Complete(completion) => complete_response(&completion, headers),
        ResponseBody::Stream(chunks) => {
            let metrics = gateway.metrics.clone();
            let provider = response.meta.provider.clone();
            // A live stream is accounted per provider inside the stack (each provider its
            // own tokens and how its stream ended, continuations included); a cached or
            // static one costs no tokens and is counted here.
            let live = response.meta.origin() == Origin::Live;
            let trailers = crate::sse::TrailerSlot::default();
            let slot = trailers.clone();
            let limits = gateway
                .streams()
                .limits(started, gateway.config().server.max_stream_duration);
            let events = crate::sse::events(chunks, limits, move |end| {
                if !live {
                    metrics.stream_ended(&provider, end.outcome.err());
                }
                if let Ok(Some(usage)) = end.outcome {
                    crate::telemetry::record_stream_usage(usage);
                }
                if let Some((by, how)) = end.continued {
                    crate::telemetry::record_continuation(by);
                    *slot.lock() = Some(crate::sse::continued_trailers(by, how));
                }
            });
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
            headers.insert(
                http::header::TRAILER,
                HeaderValue::from_static("x-brace-continued-by, x-brace-continued-how"),
            );
            let body = crate::sse::SseBody::new(events, crate::sse::KEEP_ALIVE);
            let mut response = Response::new(axum::body::Body::new(crate::sse::WithTrailers::new(
                body, trailers,
            )));
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}

/// A complete answer: the completion as JSON under the meta headers, in one header map. The
/// JSON is the provider's own when it answered in OpenAI's format and nothing changed the
/// completion since (forwarded without a copy, as a proxy would), else written out in one
/// buffer sized for the completion.
fn complete_response(
    completion: &brace_llm::CompletionBody,
    mut headers: HeaderMap,
) -> Result<Response, ApiError> {
    let body = completion.to_json().map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the answer could not be encoded: {err}"),
        )
    })?;
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(axum::body::Body::from(body));
    *response.headers_mut() = headers;
    Ok(response)
}

fn meta_headers(response: &ChatResponse, attempts: u32) -> HeaderMap {
    use http::header::HeaderName;
    const PROVIDER: HeaderName = HeaderName::from_static("x-brace-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-brace-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-brace-attempts");
    const DEGRADATION: HeaderName = HeaderName::from_static("x-brace-degradation");
    const CACHE: HeaderName = HeaderName::from_static("x-brace-cache");
    const STATIC: HeaderName = HeaderName::from_static("x-brace-static");
    const REMOVED: HeaderName = HeaderName::from_static("x-brace-removed");

    // Room for the content type (a complete answer) or the two stream headers.
    let mut headers = HeaderMap::with_capacity(10);
    // The model comes from the provider's body: its length and characters are not ours.
    let put = |headers: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Some(value) = crate::bounded::header_value(value) {
            headers.insert(name, value);
        }
    };
    put(&mut headers, PROVIDER, &response.meta.provider);
    put(&mut headers, MODEL, &response.meta.model);
    let level = response
        .meta
        .degradation
        .as_ref()
        .map_or("full", |degradation| &degradation.level);
    if level == "full" {
        // Full service, the usual answer: a static value, nothing to check or copy.
        headers.insert(DEGRADATION, HeaderValue::from_static("full"));
    } else {
        put(&mut headers, DEGRADATION, level);
    }
    if let Some(degradation) = &response.meta.degradation {
        // What the level took away; a model change shows in `x-brace-model`.
        let removed: Vec<_> = degradation
            .reshaped
            .changes()
            .filter(|change| *change != "model")
            .collect();
        if !removed.is_empty() {
            put(&mut headers, REMOVED, &removed.join(","));
        }
    }
    // The usual counts, without formatting one.
    const FEW: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let attempts = usize::try_from(attempts)
        .ok()
        .and_then(|n| FEW.get(n))
        .map_or_else(
            || HeaderValue::from(attempts),
            |n| HeaderValue::from_static(n),
        );
    headers.insert(ATTEMPTS, attempts);
    let cache = if response.meta.origin() == Origin::Cache {
        "hit"
    } else {
        "miss"
    };
    headers.insert(CACHE, HeaderValue::from_static(cache));
    if response.meta.origin() == Origin::Static {
        headers.insert(STATIC, HeaderValue::from_static("true"));
    }
    headers
}

// ===== the seed's API =====

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    messages: Vec<Message>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    preferred_provider: Option<String>,
}

impl crate::json_body::FromJson for SeedRequest {}

async fn seed_completions(
    State(gateway): State<Arc<Gateway>>,
    body: Result<JsonBody<SeedRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (response, json) = seed_call(&gateway, body).await?;
    Ok((meta_headers(&response.0, response.1), Json(json)).into_response())
}

async fn seed_completions_circuit(
    State(gateway): State<Arc<Gateway>>,
    body: Result<JsonBody<SeedRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (response, mut json) = seed_call(&gateway, body).await?;
    let provider = response.0.meta.provider.to_string();
    json["circuit_state"] = json!(gateway.circuit_state(&provider));
    Ok((meta_headers(&response.0, response.1), Json(json)).into_response())
}

async fn seed_call(
    gateway: &Gateway,
    body: Result<JsonBody<SeedRequest>, JsonRejection>,
) -> Result<((ChatResponse, u32), serde_json::Value), ApiError> {
    let seed = parse_json(body)?;
    let model = seed
        .model
        .clone()
        .unwrap_or_else(|| gateway.default_model());
    let mut request = ChatRequest::new(model, seed.messages);
    request.max_tokens = seed.max_tokens;
    request.temperature = seed.temperature;
    if let Some(preferred) = seed.preferred_provider {
        if !gateway.has_provider(&preferred) {
            return Err(ApiError::bad_request(format!(
                "unknown preferred_provider `{preferred}`"
            )));
        }
        gateway.prefer(&mut request, preferred);
    }
    request.validate().map_err(ApiError::bad_request)?;
    let (mut response, attempts) = gateway.call(request).await?;
    let body = std::mem::replace(
        &mut response.body,
        ResponseBody::Stream(brace_llm::ChatStream::from_items(Vec::new())),
    );
    let completion = ChatResponse {
        meta: response.meta.clone(),
        body,
    }
    .into_completion()
    .await
    .map_err(|err| {
        ApiError::from_stack_error(&(Box::new(err) as brace_core::BoxError))
            .clamp_retry_after(gateway.config().server.max_retry_after)
    })?;
    let json = json!({
        "content": completion.text(),
        "provider": &*response.meta.provider,
        "model": response.meta.model,
    });
    Ok(((response, attempts), json))
}

// ===== models =====

async fn models(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": gateway.model_names().into_iter().map(|(id, owner)| json!({
            "id": id,
            "object": "model",
            "created": 0,
            "owned_by": owner,
        })).collect::<Vec<_>>(),
    }))
}

// ===== operations =====

/// `GET /v1/health`: 200 while some provider can be tried, 503 when none can.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let body = gateway.health_json();
    let status = if body["status"] == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// `GET /livez`: 200 while the process serves (Kubernetes' liveness probe).
async fn livez() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

/// `GET /readyz`: 200 when the gateway should get traffic; 503 while it shuts down or while
/// no provider of the default route can be tried (Kubernetes' readiness probe).
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    match gateway.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": why})),
        )
            .into_response(),
    }
}

async fn circuits(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.circuits_json())
}

#[derive(Debug, Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

async fn degradation_level(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.degradation_json())
}

async fn set_degradation_level(
    State(gateway): State<Arc<Gateway>>,
    listening: Option<Extension<crate::server::ListenAddr>>,
    headers: HeaderMap,
    query: Result<Query<LevelQuery>, QueryRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    gateway.authorize_admin(&headers, listening.map(|Extension(addr)| addr.0))?;
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let body = body.map_err(|rejection| {
        body_error(&rejection)
            .unwrap_or_else(|| ApiError::new(rejection.status(), rejection.body_text()))
    })?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<LevelQuery>(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?
            .level
    };
    let level = query.level.or(from_body).ok_or_else(|| {
        ApiError::bad_request("missing `level` (query `?level=` or JSON `{\"level\": ...}`)")
    })?;
    gateway.set_level(&level)?;
    Ok(Json(gateway.degradation_json()))
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    gateway.refresh_gauges();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gateway.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> ChatResponse {
        let completion = serde_json::from_value(serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m-1",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop"
            }]
        }))
        .unwrap();
        ChatResponse::complete("primary", completion)
    }

    #[test]
    fn meta_headers_name_the_level_that_answered() {
        use brace_core::degrade::{Degradation, Origin};
        let mut response = answer();
        for level in ["full", "economy", "fallback-1"] {
            response.meta.degradation = Some(Degradation {
                level: level.into(),
                index: usize::from(level != "full"),
                origin: Origin::Live,
                reshaped: brace_llm::degrade::Reshaped::nothing(),
            });
            let headers = meta_headers(&response, 1);
            assert_eq!(headers["x-brace-degradation"], level);
        }
    }

    #[test]
    fn meta_headers_count_every_attempt_and_name_a_full_answer() {
        let response = answer();
        for (attempts, text) in [(0, "0"), (1, "1"), (9, "9"), (10, "10"), (12, "12")] {
            let headers = meta_headers(&response, attempts);
            assert_eq!(headers["x-brace-attempts"], text);
        }
        let headers = meta_headers(&response, u32::MAX);
        assert_eq!(headers["x-brace-attempts"], "4294967295");
        assert_eq!(headers["x-brace-degradation"], "full");
        assert_eq!(headers["x-brace-provider"], "primary");
        assert_eq!(headers["x-brace-model"], "m-1");
        assert_eq!(headers["x-brace-cache"], "miss");
        assert!(headers.get("x-brace-removed").is_none());
    }
}
