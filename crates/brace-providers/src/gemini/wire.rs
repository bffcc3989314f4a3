//! [`GeminiWire`]: Google's Gemini API as a [`ProviderApi`].

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use super::stream::GeminiDecoder;
use super::translate::{decode_response, encode_request};
use crate::api::{Encoded, ProviderApi};
use crate::provider::{ClientConfig, ClientConfigError, endpoint};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::types::{ChatCompletion, ChatRequest};

/// Google's Gemini API base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The environment variable the default configuration reads the key from.
pub const API_KEY_ENV: &str = "GEMINI_API_KEY";

/// Google's Gemini API (`POST {base}/v1beta/models/{model}:generateContent`, or
/// `:streamGenerateContent?alt=sse` for streams): requests translated from the OpenAI chat
/// format (see [`encode_request`]), answers and stream events translated back, without I/O.
///
/// The model in the URL is [`ClientConfig::resolve_model`] of the requested one, checked to
/// be a model name. The key goes in the `x-goog-api-key` header, marked sensitive — never in
/// the URL. Its `Debug` shows no key and no header value.
/// [`GeminiClient`](super::GeminiClient) is a [`ProviderClient`](crate::ProviderClient) over
/// it.
pub struct GeminiWire {
    client: ClientConfig,
    headers: HeaderMap,
    urls: Urls,
}

impl fmt::Debug for GeminiWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiWire")
            .field("client", &self.client)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The endpoints, parsed once when the wire is made (a request clones one: no parsing
/// per call). Never printed.
struct Urls {
    /// The base, for a model the configuration does not name.
    base: reqwest::Url,
    /// `generateContent` and `streamGenerateContent?alt=sse` of each model the
    /// configuration names (and that is a valid model name).
    models: HashMap<String, (reqwest::Url, reqwest::Url)>,
    /// The probe's URL; `None` if the default model is not a valid model name (the probe
    /// then fails with that error).
    probe: Option<reqwest::Url>,
}

impl Urls {
    fn new(config: &ClientConfig) -> Result<Self, ClientConfigError> {
        let base = config.parsed_base_url()?;
        let models = config
            .models
            .values()
            .chain(config.default_model.as_ref())
            .filter_map(|model| {
                let path = model_path(model).ok()?;
                let urls = (
                    generate_url(&base, path, false),
                    generate_url(&base, path, true),
                );
                Some((model.clone(), urls))
            })
            .collect();
        let probe = match config.default_model.as_deref() {
            Some(model) => model_path(model)
                .ok()
                .map(|path| endpoint(&base, &format!("/v1beta/models/{path}"), None)),
            None => Some(endpoint(&base, "/v1beta/models", Some("pageSize=1"))),
        };
        Ok(Self {
            base,
            models,
            probe,
        })
    }

    /// The URL for `model` (as the configuration resolved it; `path` is its
    /// [`model_path`]).
    fn generate(&self, model: &str, path: &str, stream: bool) -> reqwest::Url {
        match self.models.get(model) {
            Some((whole, streamed)) => if stream { streamed } else { whole }.clone(),
            None => generate_url(&self.base, path, stream),
        }
    }
}

/// `{base}/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
fn generate_url(base: &reqwest::Url, model: &str, stream: bool) -> reqwest::Url {
    if stream {
        let path = format!("/v1beta/models/{model}:streamGenerateContent");
        endpoint(base, &path, Some("alt=sse"))
    } else {
        endpoint(
            base,
            &format!("/v1beta/models/{model}:generateContent"),
            None,
        )
    }
}

/// The model's name as it goes in the URL: `models/` dropped, and only characters a
/// model name has (so a request cannot reach another path).
fn model_path(model: &str) -> Result<&str, LlmError> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(LlmError::new(
            LlmErrorKind::BadRequest,
            format!("`{model}` is not a valid Gemini model name"),
        ));
    }
    Ok(model)
}

impl GeminiWire {
    /// The default configuration: provider `gemini`, [`DEFAULT_BASE_URL`], the key from
    /// [`API_KEY_ENV`].
    pub fn default_config() -> ClientConfig {
        ClientConfig::new("gemini", DEFAULT_BASE_URL).with_api_key_env(API_KEY_ENV)
    }

    /// Checks `config` and prepares the headers every request carries.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the base URL is not an http(s) URL, the key's environment
    /// variable is unset, or a header is invalid.
    pub fn new(config: ClientConfig) -> Result<Self, ClientConfigError> {
        let mut headers = config.header_map()?;
        if let Some(key) = config.resolve_api_key()? {
            headers.insert("x-goog-api-key", key.header_value("")?);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let urls = Urls::new(&config)?;
        Ok(Self {
            client: config,
            headers,
            urls,
        })
    }
}

impl ProviderApi for GeminiWire {
    type Config = ClientConfig;
    type Decoder = GeminiDecoder;

    fn from_config(config: ClientConfig) -> Result<Self, ClientConfigError> {
        Self::new(config)
    }

    fn client_config(config: &ClientConfig) -> &ClientConfig {
        config
    }

    fn config(&self) -> &ClientConfig {
        &self.client
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `POST {base}/v1beta/models/{model}:generateContent` (a stream:
    /// `:streamGenerateContent?alt=sse`) with the request translated by [`encode_request`].
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`] error if the request cannot be translated or the
    /// model name is not one.
    fn encode(&self, request: &ChatRequest) -> Result<Encoded, LlmError> {
        let resolved = self.client.resolve_model(&request.model);
        let model = model_path(resolved)?;
        let body = encode_request(request)?;
        Ok(Encoded {
            url: self.urls.generate(resolved, model, request.is_stream()),
            body: Bytes::from(body),
            model: model.to_owned(),
        })
    }

    fn decode(&self, body: &[u8], model: &str) -> Result<ChatCompletion, LlmError> {
        decode_response(body, model)
    }

    fn decoder(&self, model: &str, include_usage: bool) -> GeminiDecoder {
        GeminiDecoder::new(model, include_usage)
    }

    /// The default model's description (`GET {base}/v1beta/models/{model}`), which checks
    /// the model too; with no default model, one model listed.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`] error if the default model is not a model name.
    fn probe_url(&self) -> Result<reqwest::Url, LlmError> {
        match (&self.urls.probe, self.client.default_model.as_deref()) {
            (Some(url), _) => Ok(url.clone()),
            (None, model) => Err(match model_path(model.unwrap_or_default()) {
                Err(err) => err,
                Ok(_) => LlmError::new(LlmErrorKind::BadRequest, "invalid probe URL"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiKey;
    use brace_llm::types::Message;

    fn wire(config: ClientConfig) -> GeminiWire {
        GeminiWire::new(config.with_api_key(ApiKey::new("AIza-KEY123456"))).unwrap()
    }

    #[test]
    fn urls_for_named_and_unnamed_models_whole_and_streamed() {
        let wire = wire(
            ClientConfig::new("gemini", "http://127.0.0.1:9/base/")
                .with_model("fast", "models/gemini-2.5-flash"),
        );
        let url = |model: &str, stream: bool| {
            let request = ChatRequest::new(model, vec![Message::user("Hi")]).with_stream(stream);
            wire.encode(&request).unwrap().url.to_string()
        };
        // Parsed once (a named model) or made from the base (any other).
        assert_eq!(
            url("fast", true),
            "http://127.0.0.1:9/base/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("fast", false),
            "http://127.0.0.1:9/base/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            url("gemini-x", true),
            "http://127.0.0.1:9/base/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("gemini-x", false),
            "http://127.0.0.1:9/base/v1beta/models/gemini-x:generateContent"
        );
        let bad = ChatRequest::new("../other", vec![]);
        assert_eq!(
            wire.encode(&bad).unwrap_err().kind(),
            LlmErrorKind::BadRequest
        );
    }

    #[test]
    fn probe_urls_are_parsed_once_and_a_bad_default_model_is_an_error() {
        let listing = wire(ClientConfig::new("gemini", "http://127.0.0.1:9"));
        assert_eq!(
            listing.probe_url().unwrap().as_str(),
            "http://127.0.0.1:9/v1beta/models?pageSize=1"
        );
        let described = wire(
            ClientConfig::new("gemini", "http://127.0.0.1:9").with_default_model("gemini-2.5-pro"),
        );
        assert_eq!(
            described.probe_url().unwrap().as_str(),
            "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro"
        );
        let bad = wire(ClientConfig::new("gemini", "http://127.0.0.1:9").with_default_model("a/b"));
        assert_eq!(
            bad.probe_url().unwrap_err().kind(),
            LlmErrorKind::BadRequest
        );
    }
}
