//! The operator's endpoints: force a circuit, run a failover drill, read the configuration in
//! force, watch the live status.
//!
//! | endpoint | what | admin |
//! |---|---|---|
//! | `POST /v1/circuits/{name}` | `{"state": "forced_open" \| "closed" \| "disabled" \| "metrics_only" \| "auto"}` | yes |
//! | `GET /v1/chaos` | the drills running | no |
//! | `POST /v1/chaos` | start a drill (see [`crate::chaos`]) | yes |
//! | `DELETE /v1/chaos/{provider}` | end a drill early | yes |
//! | `GET /v1/config` | the configuration in force, its hash, reload outcomes | yes |
//! | `GET /v1/status` | what the status page shows, as JSON | no |
//! | `GET /status` | the live status page | no |
//!
//! Admin endpoints are protected as `POST /v1/degradation/level` is
//! ([`Gateway::authorize_admin`]).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::chaos::{ChaosConfig, StartError};
use crate::error::ApiError;
use crate::stack::Gateway;

/// The operator's routes, to merge into the gateway's router.
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/circuits/{name}", post(set_circuit))
        .route("/v1/chaos", get(drills).post(start_drill))
        .route("/v1/chaos/{provider}", axum::routing::delete(stop_drill))
        .route("/v1/config", get(config))
        .route("/v1/status", get(status))
        .route("/status", get(status_page))
}

/// Lets a request through to an admin endpoint, or answers why not
/// ([`Gateway::authorize_admin`]): a token when one is configured, else a loopback address.
#[derive(Debug)]
struct Admin;

impl FromRequestParts<Arc<Gateway>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, ApiError> {
        let listening = parts
            .extensions
            .get::<crate::server::ListenAddr>()
            .map(|addr| addr.0);
        gateway.authorize_admin(&parts.headers, listening)?;
        Ok(Self)
    }
}

// ===== circuits =====

/// A state an operator can put a circuit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Override {
    /// Reject every call until another state is set.
    ForcedOpen,
    /// Close it with an empty window; it opens again on failures.
    Closed,
    /// Admit every call and record nothing until another state is set.
    Disabled,
    /// Admit and record every call but never open, until another state is set.
    MetricsOnly,
    /// Back to the normal state machine: closed, its window and wait growth forgotten.
    Auto,
}

impl Override {
    fn as_str(self) -> &'static str {
        match self {
            Self::ForcedOpen => "forced_open",
            Self::Closed => "closed",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
            Self::Auto => "auto",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitBody {
    state: Override,
}

/// `POST /v1/circuits/{name}`.
async fn set_circuit(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    _: Admin,
    body: Result<Json<CircuitBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::bad_request(format!(
            "expected {{\"state\": \"forced_open\" | \"closed\" | \"disabled\" | \
             \"metrics_only\" | \"auto\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let handle = gateway.circuits().get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no circuit named `{name}` (circuits: {})",
                gateway
                    .circuits()
                    .handles()
                    .iter()
                    .map(|h| h.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let from = handle.state();
    match body.state {
        Override::ForcedOpen => handle.force_open(),
        Override::Closed => handle.force_closed(),
        Override::Disabled => handle.disable(),
        Override::MetricsOnly => handle.metrics_only(),
        Override::Auto => handle.reset(),
    }
    let to = handle.state();
    tracing::warn!(
        provider = %name,
        from = from.as_str(),
        to = to.as_str(),
        requested = body.state.as_str(),
        "circuit state set by an operator"
    );
    metrics::counter!(
        "brace_circuit_overrides_total",
        "provider" => name.clone(),
        "state" => body.state.as_str(),
    )
    .increment(1);
    gateway.refresh_gauges();
    let mut circuits = gateway.circuits_json();
    Ok(Json(json!({
        "name": name,
        "requested": body.state.as_str(),
        "circuit": circuits.get_mut(&name).map(serde_json::Value::take),
    })))
}

// ===== drills =====

/// `GET /v1/chaos`.
async fn drills(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.chaos.json())
}

/// `POST /v1/chaos`: a drill as the configuration's `chaos` list writes one.
async fn start_drill(
    State(gateway): State<Arc<Gateway>>,
    _: Admin,
    body: Result<Json<ChaosConfig>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(drill) = body.map_err(|rejection| {
        ApiError::bad_request(format!(
            "expected {{\"provider\", one of \"error_rate\" | \"status\" | \"latency\" | \
             \"stall\", \"duration\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let config = gateway.config();
    let known = |name: &str| config.providers.iter().any(|p| p.name == name);
    let switch = gateway
        .chaos
        .start(&drill, "admin", known)
        .map_err(|err| match err {
            StartError::UnknownProvider(name) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no provider named `{name}`"))
            }
            StartError::Invalid(key, why) => ApiError::bad_request(format!("{key}: {why}")),
        })?;
    gateway.refresh_gauges();
    let drill = switch
        .drill()
        .map(|drill| crate::chaos::drill_json(&switch, &drill));
    Ok(Json(json!({ "drill": drill })))
}

/// `DELETE /v1/chaos/{provider}`.
async fn stop_drill(
    State(gateway): State<Arc<Gateway>>,
    Path(provider): Path<String>,
    _: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stopped = gateway.chaos.stop(&provider);
    gateway.refresh_gauges();
    Ok(Json(json!({ "provider": provider, "stopped": stopped })))
}

/// Adds `x-brace-chaos` to every data-plane answer while a drill runs: a `map_response`
/// layer (no boxed future, nothing cloned per request but the gateway's `Arc`).
pub(crate) fn chaos_header_layer(
    gateway: Arc<Gateway>,
) -> tower::util::MapResponseLayer<impl Fn(Response) -> Response + Clone> {
    tower::util::MapResponseLayer::new(move |mut response: Response| {
        if let Some(value) = gateway.chaos.header()
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            response.headers_mut().insert("x-brace-chaos", value);
        }
        response
    })
}

// ===== configuration and status =====

/// `GET /v1/config`.
async fn config(
    State(gateway): State<Arc<Gateway>>,
    _: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(gateway.config_json()))
}

/// `GET /v1/status`.
async fn status(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.status_json())
}

/// `GET /status`.
async fn status_page() -> impl IntoResponse {
    (
        [(http::header::CACHE_CONTROL, "no-cache")],
        Html(crate::status::PAGE),
    )
}
