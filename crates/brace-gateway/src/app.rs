//! The HTTP API: routes, handlers and the response headers that say who answered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use brace_llm::{ChatRequest, ChatResponse, Message, Origin, ResponseBody};

use crate::error::ApiError;
use crate::stack::Gateway;

/// Builds the gateway's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let body_limit = gateway.config().server.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(seed_completions))
        .route("/v1/completions/circuit", post(seed_completions_circuit))
        .route("/v1/models", get(models))
        .route("/v1/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/circuits", get(circuits))
        .route(
            "/v1/degradation/level",
            post(set_degradation_level).get(degradation_level),
        )
        .route("/metrics", get(metrics))
        .merge(crate::ops::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            crate::ops::chaos_header,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(gateway)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

// ===== chat completions =====

fn parse_json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => {
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
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = parse_json(body)?;
    request.validate().map_err(ApiError::bad_request)?;
    let (response, attempts) = gateway.call(request).await?;
    let mut headers = meta_headers(&response, attempts);
    match response.body {
        ResponseBody::Complete(completion) => Ok((headers, Json(completion)).into_response()),
        ResponseBody::Stream(chunks) => {
            let metrics = gateway.metrics.clone();
            let provider = response.meta.provider.clone();
            let price = gateway.price_of(&provider);
            // Cached and static answers cost no tokens.
            let live = response.meta.origin() == Origin::Live;
            let events = crate::sse::events(chunks, move |outcome| {
                if let Ok(Some(usage)) = outcome
                    && live
                {
                    metrics.tokens(&provider, usage, price);
                }
                metrics.stream_ended(&provider, outcome.err());
            });
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
            Ok((
                headers,
                Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
            )
                .into_response())
        }
    }
}

fn meta_headers(response: &ChatResponse, attempts: u32) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("x-brace-provider", &response.meta.provider);
    put("x-brace-model", &response.meta.model);
    put("x-brace-attempts", &attempts.to_string());
    let level = response
        .meta
        .degradation
        .as_ref()
        .map_or("full", |degradation| &degradation.level);
    put("x-brace-degradation", level);
    put(
        "x-brace-cache",
        if response.meta.origin() == Origin::Cache {
            "hit"
        } else {
            "miss"
        },
    );
    if response.meta.origin() == Origin::Static {
        put("x-brace-static", "true");
    }
    if let Some(degradation) = &response.meta.degradation {
        // What the level took away; a model change shows in `x-brace-model`.
        let removed: Vec<_> = degradation
            .reshaped
            .changes()
            .filter(|change| *change != "model")
            .collect();
        if !removed.is_empty() {
            put("x-brace-removed", &removed.join(","));
        }
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

async fn seed_completions(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<SeedRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (response, json) = seed_call(&gateway, body).await?;
    Ok((meta_headers(&response.0, response.1), Json(json)).into_response())
}

async fn seed_completions_circuit(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<SeedRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (response, mut json) = seed_call(&gateway, body).await?;
    let provider = response.0.meta.provider.to_string();
    json["circuit_state"] = json!(gateway.circuit_state(&provider));
    Ok((meta_headers(&response.0, response.1), Json(json)).into_response())
}

async fn seed_call(
    gateway: &Gateway,
    body: Result<Json<SeedRequest>, JsonRejection>,
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
    .map_err(|err| ApiError::from_stack_error(&(Box::new(err) as brace_core::BoxError)))?;
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
    headers: HeaderMap,
    Query(query): Query<LevelQuery>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    gateway.authorize_admin(&headers)?;
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
