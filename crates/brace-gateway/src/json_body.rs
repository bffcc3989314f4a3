//! [`JsonBody`]: axum's `Json` extractor with the same answers, for less work per request.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A value read from a JSON request body.
pub(crate) trait FromJson: DeserializeOwned {
    /// Reads the value from `bytes`, checking their UTF-8 once.
    fn from_json(bytes: &Bytes) -> serde_json::Result<Self> {
        brace_providers::provider::json_from_bytes(bytes)
    }
}

/// A chat request keeps the JSON it came in: a provider that speaks OpenAI's format is sent
/// it as it came while nothing changes the request ([`ChatRequest::json`]). It keeps a copy:
/// the body as read is a slice of the connection's read buffer, which a request kept for a
/// whole stream would otherwise hold on to (and the connection would allocate another).
///
/// [`ChatRequest::json`]: brace_llm::ChatRequest::json
impl FromJson for brace_llm::ChatRequest {
    fn from_json(bytes: &Bytes) -> serde_json::Result<Self> {
        Self::from_json(Bytes::copy_from_slice(bytes))
    }
}

/// A JSON request body, extracted as axum's [`Json`] extracts it — the same content-type
/// check, body limit and rejections, with the same messages — but parsed with plain
/// `serde_json` first. axum's extractor records the path of every key it reads (to say
/// where a bad value was), which costs an allocation per field of every request; here that
/// is done only for a body that fails, by handing it to `Json` to reject.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: FromJson,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !plain_json(request.headers()) {
            // Anything but the common content type: axum decides, as it would.
            let Json(value) = Json::<T>::from_request(request, state).await?;
            return Ok(Self(value));
        }
        let bytes = Bytes::from_request(request, state).await?;
        match T::from_json(&bytes) {
            Ok(value) => Ok(Self(value)),
            // Not UTF-8, or not the JSON asked for: the rejection `Json` gives, with the path
            // to the bad value.
            Err(_) => Json::<T>::from_bytes(&bytes).map(|Json(value)| Self(value)),
        }
    }
}

/// `Content-Type: application/json`, alone or with a UTF-8 charset: a subset of what `Json`
/// accepts, so that every other value goes through `Json`'s own check.
fn plain_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.eq_ignore_ascii_case(b"application/json")
        || value.eq_ignore_ascii_case(b"application/json; charset=utf-8")
        || value.eq_ignore_ascii_case(b"application/json;charset=utf-8")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Asked {
        model: String,
        messages: Vec<Message>,
    }

    impl FromJson for Asked {}

    #[derive(Debug, Deserialize, PartialEq)]
    struct Message {
        role: Role,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Role {
        User,
    }

    /// What each extractor makes of one request: the value, or the rejection's status and
    /// message.
    async fn both(content_type: Option<&str>, body: &'static str) -> [Result<Asked, String>; 2] {
        both_bytes(content_type, body.as_bytes()).await
    }

    async fn both_bytes(
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> [Result<Asked, String>; 2] {
        let request = || {
            let mut builder = http::Request::post("/");
            if let Some(content_type) = content_type {
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
            }
            builder.body(Body::from(body)).unwrap()
        };
        let said =
            |rejection: JsonRejection| format!("{} {}", rejection.status(), rejection.body_text());
        let ours = JsonBody::<Asked>::from_request(request(), &())
            .await
            .map(|JsonBody(value)| value)
            .map_err(said);
        let axums = Json::<Asked>::from_request(request(), &())
            .await
            .map(|Json(value)| value)
            .map_err(said);
        [ours, axums]
    }

    #[tokio::test]
    async fn answers_as_axums_json_does() {
        let good = r#"{"model":"m","messages":[{"role":"user"}]}"#;
        let cases: &[(Option<&str>, &'static str)] = &[
            (Some("application/json"), good),
            (Some("Application/JSON; charset=UTF-8"), good),
            (Some("application/vnd.api+json"), good),
            (Some("text/plain"), good),
            (None, good),
            // A bad value deep inside: the message names its path.
            (
                Some("application/json"),
                r#"{"model":"m","messages":[{"role":"user"},{"role":"robot"}]}"#,
            ),
            (Some("application/json"), r#"{"model":"m"}"#),
            (Some("application/json"), r#"{"model":"m","messages":[]"#),
            (
                Some("application/json"),
                r#"{"model":"m","messages":[]} trailing"#,
            ),
            (Some("application/json"), ""),
        ];
        for (content_type, body) in cases {
            let [ours, axums] = both(*content_type, body).await;
            assert_eq!(ours, axums, "{content_type:?} {body}");
        }
        let [bad_role, _] = both(
            Some("application/json"),
            r#"{"model":"m","messages":[{"role":"user"},{"role":"robot"}]}"#,
        )
        .await;
        assert!(bad_role.unwrap_err().contains("messages[1].role"));
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_rejected_as_axums_json_rejects_it() {
        // Bytes that are not UTF-8, inside a string and outside one.
        for body in [
            &b"{\"model\":\"m\xff\",\"messages\":[]}"[..],
            &b"{\"model\":\"m\",\"messages\":[]}\xc3"[..],
        ] {
            let [ours, axums] = both_bytes(Some("application/json"), body).await;
            assert!(ours.is_err(), "{ours:?}");
            assert_eq!(ours, axums);
        }
    }

    #[tokio::test]
    async fn the_body_limit_applies() {
        let big = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(4096));
        let request = http::Request::post("/")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(big))
            .unwrap();
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::post(|body: Result<JsonBody<Asked>, JsonRejection>| async move {
                    match body {
                        Ok(_) => http::StatusCode::OK.into_response(),
                        Err(rejection) => rejection.into_response(),
                    }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1024));
        let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
