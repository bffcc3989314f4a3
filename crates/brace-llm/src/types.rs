//! The OpenAI chat-completions wire format: requests, messages, tools, completions, stream
//! chunks and usage.
//!
//! Every type keeps the fields it does not model in an `extra` map (a request in
//! [`ChatOptions::extra`]), so a request or response from a real client or provider
//! round-trips through brace without losing anything.

use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a type does not model, kept as they came.
pub type Extra = Map<String, Value>;

// ===== ChatRequest =====

/// A chat-completions request (`POST /v1/chat/completions`).
///
/// Small and cheap to clone, because retry, failover and degradation each keep a copy to
/// send again and move it on every call: the model name, the conversation and the tool list
/// are shared (`Arc`), and the parameters few requests set ([`ChatOptions`]: `top_p`,
/// `stop`, `response_format`, `user`, the unknown fields, …) sit together behind one shared
/// pointer. A clone copies a few scalars and increments reference counts; it never
/// allocates (unless `extensions` holds something). Reshaping a request (capping
/// `max_tokens`, changing `model`) copies nothing else; changing an option through
/// [`options_mut`](Self::options_mut) copies the options once if another clone shares them.
///
/// The JSON form is OpenAI's, field for field: the options serialize as top-level fields,
/// absent ones are left out, and fields brace does not model are kept in
/// [`ChatOptions::extra`] and written back.
///
/// `extensions` carries per-request data that is not part of the wire format (a preferred
/// provider, a deadline); it is never serialized.
///
/// ```
/// use brace_llm::{ChatRequest, Message, Stop};
///
/// let mut request =
///     ChatRequest::new("gpt-4o", vec![Message::user("Hello")]).with_max_tokens(64);
/// request.options_mut().stop = Some(Stop::One("\n".into()));
/// assert_eq!(request.model, "gpt-4o");
///
/// let json = serde_json::to_value(&request).unwrap();
/// assert_eq!(json["messages"][0]["content"], "Hello");
/// assert_eq!(json["max_tokens"], 64);
/// assert_eq!(json["stop"], "\n");
///
/// let back: ChatRequest = serde_json::from_value(json).unwrap();
/// assert_eq!(back, request);
/// ```
#[derive(Clone, Default)]
pub struct ChatRequest {
    /// The model asked for.
    pub model: ModelName,
    /// The conversation so far.
    pub messages: Arc<[Message]>,
    /// The most tokens to generate (legacy name, still the most widely supported).
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Tools the model may call.
    pub tools: Option<Arc<[Tool]>>,
    /// The rarely set parameters; `None` (nothing allocated) until one is set.
    options: Option<Arc<ChatOptions>>,
    /// Per-request data that is not part of the wire format.
    pub extensions: http::Extensions,
    /// The JSON the request was read from, with what it held then (see [`Self::json`]).
    source: Option<Arc<Source>>,
}

/// The JSON a request was read from and the wire fields it held then: the JSON is the
/// request's own while every field is still these (the shared ones compared by pointer,
/// which a change through `Arc::make_mut` or a new value always moves: the clones kept here
/// make sure of it).
struct Source {
    json: bytes::Bytes,
    model: ModelName,
    messages: Arc<[Message]>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    stream: Option<bool>,
    tools: Option<Arc<[Tool]>>,
    options: Option<Arc<ChatOptions>>,
}

fn same<T: ?Sized>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("stream", &self.stream)
            .field("tools", &self.tools.as_ref().map(|tools| tools.len()))
            .finish_non_exhaustive()
    }
}

impl PartialEq for ChatRequest {
    /// Compares the wire content; `extensions` are not compared.
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
            && self.messages == other.messages
            && self.max_tokens == other.max_tokens
            && self.temperature == other.temperature
            && self.stream == other.stream
            && self.tools == other.tools
            && self.options() == other.options()
    }
}

impl ChatRequest {
    /// A request for `model` with the given conversation.
    pub fn new(model: impl Into<ModelName>, messages: impl Into<Arc<[Message]>>) -> Self {
        Self {
            model: model.into(),
            messages: messages.into(),
            ..Self::default()
        }
    }

    /// Reads a request from OpenAI's JSON ([`json_from_bytes`]) and keeps the JSON, for
    /// [`json`](Self::json).
    ///
    /// ```
    /// use brace_llm::ChatRequest;
    ///
    /// let json = r#"{ "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}] }"#;
    /// let mut request = ChatRequest::from_json(json.into()).unwrap();
    /// assert_eq!(request.json().unwrap(), json.as_bytes());
    ///
    /// // Changed: the JSON read is no longer this request's.
    /// request.max_tokens = Some(16);
    /// assert!(request.json().is_none());
    /// ```
    ///
    /// The bytes are kept for as long as the request (and its clones) live: a slice of a
    /// larger buffer keeps all of that buffer, so copy one out first if the request may
    /// live long (a stream's).
    ///
    /// # Errors
    ///
    /// `serde_json`'s error, if `json` is not a chat request.
    pub fn from_json(json: bytes::Bytes) -> serde_json::Result<Self> {
        let mut request: Self = json_from_bytes(&json)?;
        request.source = Some(Arc::new(Source {
            json,
            model: request.model.clone(),
            messages: request.messages.clone(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stream: request.stream,
            tools: request.tools.clone(),
            options: request.options.clone(),
        }));
        Ok(request)
    }

    /// The JSON the request was read from ([`from_json`](Self::from_json)), while every
    /// field it sends is what that JSON said: a provider that speaks OpenAI's format can be
    /// sent these bytes as they came instead of the request written out again. `None` once
    /// any of those fields has changed (the model to another name, the messages, tools or
    /// rare parameters to other values — even equal ones — or borrowed to change them).
    /// [`extensions`](Self::extensions) are not sent and do not count.
    pub fn json(&self) -> Option<&bytes::Bytes> {
        let source = self.source.as_deref()?;
        let unchanged = self.model == source.model
            && Arc::ptr_eq(&self.messages, &source.messages)
            && self.max_tokens == source.max_tokens
            && self.temperature.map(f64::to_bits) == source.temperature.map(f64::to_bits)
            && self.stream == source.stream
            && same(self.tools.as_ref(), source.tools.as_ref())
            && same(self.options.as_ref(), source.options.as_ref());
        unchanged.then_some(&source.json)
    }

    /// Sets `max_tokens`.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `temperature`.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Asks for a streamed answer (or not).
    #[must_use]
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Sets the tools the model may call.
    #[must_use]
    pub fn with_tools(mut self, tools: impl Into<Arc<[Tool]>>) -> Self {
        self.tools = Some(tools.into());
        self
    }

    /// Replaces the rarely set parameters (`top_p`, `stop`, `user`, unknown fields, …).
    ///
    /// ```
    /// use brace_llm::{ChatRequest, Message, ChatOptions};
    ///
    /// let request = ChatRequest::new("gpt-4o", vec![Message::user("Hi")]).with_options(
    ///     ChatOptions {
    ///         seed: Some(7),
    ///         ..ChatOptions::default()
    ///     },
    /// );
    /// assert_eq!(request.options().seed, Some(7));
    /// ```
    #[must_use]
    pub fn with_options(mut self, options: ChatOptions) -> Self {
        self.options = (!options.is_empty()).then(|| Arc::new(options));
        self
    }

    /// The rarely set parameters: `max_completion_tokens`, `top_p`, `n`, `stream_options`,
    /// `stop`, `tool_choice`, `response_format`, `seed`, `user` and the unknown fields.
    pub fn options(&self) -> &ChatOptions {
        self.options
            .as_deref()
            .unwrap_or_else(|| ChatOptions::none())
    }

    /// The rarely set parameters, to change. Clones them first if another copy of the
    /// request shares them (copy on write), so the other copies do not change.
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        Arc::make_mut(self.options.get_or_insert_with(Arc::default))
    }

    /// `true` if the caller asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// `true` if the caller asked for a final usage chunk on a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.options()
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false)
    }

    /// The effective output-token limit: `max_completion_tokens` if set, else `max_tokens`.
    pub fn output_limit(&self) -> Option<u32> {
        self.options().max_completion_tokens.or(self.max_tokens)
    }

    /// `true` if any message carries an image.
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(Message::has_images)
    }

    /// `true` if tools are offered.
    pub fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|tools| !tools.is_empty())
    }

    /// Checks what the wire format alone cannot: a model name, at least one message, and
    /// sampling parameters in range. The message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let options = self.options();
        if self.model.trim().is_empty() {
            return Err("`model` must not be empty".into());
        }
        if self.messages.is_empty() {
            return Err("`messages` must contain at least one message".into());
        }
        if let Some(temperature) = self.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err(format!(
                "`temperature` must be between 0 and 2, got {temperature}"
            ));
        }
        if let Some(top_p) = options.top_p
            && !(0.0..=1.0).contains(&top_p)
        {
            return Err(format!("`top_p` must be between 0 and 1, got {top_p}"));
        }
        if options.n == Some(0) {
            return Err("`n` must be at least 1".into());
        }
        if self.output_limit() == Some(0) {
            return Err("`max_tokens` must be at least 1".into());
        }
        for (index, message) in self.messages.iter().enumerate() {
            if message.role == Role::Tool && message.tool_call_id.is_none() {
                return Err(format!(
                    "`messages[{index}]`: a tool message needs `tool_call_id`"
                ));
            }
        }
        Ok(())
    }

    /// The request as it is written on the wire (the OpenAI chat-completions body), borrowed:
    /// what `serde_json::to_vec(&request)` writes, without a copy of the request, and with
    /// [`WireRequest::with_model`] to name another model.
    ///
    /// ```
    /// use brace_llm::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new("fast", vec![Message::user("Hi")]);
    /// let body = serde_json::to_value(request.wire().with_model("gpt-4o-mini")).unwrap();
    /// assert_eq!(body["model"], "gpt-4o-mini");
    /// assert_eq!(body, {
    ///     let mut same = serde_json::to_value(&request).unwrap();
    ///     same["model"] = "gpt-4o-mini".into();
    ///     same
    /// });
    /// ```
    pub fn wire(&self) -> WireRequest<'_> {
        let options = self.options();
        WireRequest {
            model: &self.model,
            messages: &self.messages,
            max_tokens: self.max_tokens,
            max_completion_tokens: options.max_completion_tokens,
            temperature: self.temperature,
            top_p: options.top_p,
            n: options.n,
            stream: self.stream,
            stream_options: options.stream_options.as_ref(),
            stop: options.stop.as_ref(),
            tools: self.tools.as_deref(),
            tool_choice: options.tool_choice.as_ref(),
            response_format: options.response_format.as_ref(),
            seed: options.seed,
            user: options.user.as_deref(),
            extra: UnknownFields(&options.extra),
        }
    }
}

impl Serialize for ChatRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = OwnedWireRequest::deserialize(deserializer)?;
        let options = ChatOptions {
            max_completion_tokens: wire.max_completion_tokens,
            top_p: wire.top_p,
            n: wire.n,
            stream_options: wire.stream_options,
            stop: wire.stop,
            tool_choice: wire.tool_choice,
            response_format: wire.response_format,
            seed: wire.seed,
            user: wire.user,
            extra: wire.extra,
        };
        Ok(Self {
            model: wire.model,
            messages: wire.messages,
            max_tokens: wire.max_tokens,
            temperature: wire.temperature,
            stream: wire.stream,
            tools: wire.tools,
            options: None,
            extensions: http::Extensions::new(),
            source: None,
        }
        .with_options(options))
    }
}

/// `serde_json::from_slice`, with the body's UTF-8 checked once, up front: `from_slice`
/// checks every string it reads on its own (a call per field, in the profile of a gateway
/// request, about 2 % of the instructions), `from_str` trusts text already checked. A body
/// that is not UTF-8 goes to `from_slice`, whose error says where.
///
/// # Errors
///
/// `from_slice`'s error, word for word, for a body that is not the JSON of a `T`.
///
/// # Example
///
/// ```
/// use brace_llm::types::json_from_bytes;
///
/// let value: serde_json::Value = json_from_bytes(br#"{"model":"m"}"#).unwrap();
/// assert_eq!(value["model"], "m");
/// let err = json_from_bytes::<serde_json::Value>(b"{\"model\":\"\xff\"}").unwrap_err();
/// assert!(err.to_string().contains("line 1 column"));
/// ```
pub fn json_from_bytes<T: serde::de::DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// The names of the fields [`ChatRequest`] models; an unknown field by one of these names
/// (set by hand in [`ChatOptions::extra`]) is never written, so no field is written twice.
const REQUEST_FIELDS: [&str; 15] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "seed",
    "user",
];

/// A [`ChatRequest`] as written on the wire: every field at the top level, in the order
/// brace has always written them (the degradation cache key depends on a stable order).
///
/// Made by [`ChatRequest::wire`]; it only serializes.
#[derive(Debug, Serialize)]
pub struct WireRequest<'a> {
    pub(crate) model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream_options: Option<&'a StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
    #[serde(flatten)]
    extra: UnknownFields<'a>,
}

impl<'a> WireRequest<'a> {
    /// The same request for the model `model` (a provider's own name for the requested one).
    #[must_use]
    pub fn with_model(mut self, model: &'a str) -> Self {
        self.model = model;
        self
    }
}

/// The unknown fields, without any that carries a modelled field's name.
#[derive(Debug)]
struct UnknownFields<'a>(&'a Extra);

impl Serialize for UnknownFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .filter(|(name, _)| !REQUEST_FIELDS.contains(&name.as_str())),
        )
    }
}

/// A [`ChatRequest`] as read from the wire (named `ChatRequest` so error messages are too).
struct OwnedWireRequest {
    model: ModelName,
    messages: Arc<[Message]>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    tools: Option<Arc<[Tool]>>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    seed: Option<i64>,
    user: Option<String>,
    extra: Extra,
}

crate::extra::with_extra!(OwnedWireRequest, "struct ChatRequest", {
    model: ModelName = required,
    messages: Arc<[Message]> = required,
    max_tokens: Option<u32> = default,
    max_completion_tokens: Option<u32> = default,
    temperature: Option<f64> = default,
    top_p: Option<f64> = default,
    n: Option<u32> = default,
    stream: Option<bool> = default,
    stream_options: Option<StreamOptions> = default,
    stop: Option<Stop> = default,
    tools: Option<Arc<[Tool]>> = default,
    tool_choice: Option<Value> = default,
    response_format: Option<Value> = default,
    seed: Option<i64> = default,
    user: Option<String> = default,
});

/// The parameters of a [`ChatRequest`] that few requests set, kept together behind one
/// shared pointer so that copying a request stays cheap (see [`ChatRequest::options`] and
/// [`ChatRequest::options_mut`]). On the wire they are top-level fields of the request.
///
/// Its `Debug` shows which options are set and the numeric ones, never `user`, stop
/// sequences, schemas or unknown fields' values.
#[derive(Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// The most tokens to generate, reasoning included (newer name for `max_tokens`).
    pub max_completion_tokens: Option<u32>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// How many choices to generate.
    pub n: Option<u32>,
    /// Streaming options (`include_usage`).
    pub stream_options: Option<StreamOptions>,
    /// Stop sequences: one string or several.
    pub stop: Option<Stop>,
    /// How the model should choose tools (`"auto"`, `"none"`, `"required"` or an object).
    pub tool_choice: Option<Value>,
    /// Structured-output format (`{"type": "json_object"}` or a JSON schema).
    pub response_format: Option<Value>,
    /// Seed for sampling.
    pub seed: Option<i64>,
    /// An end-user identifier.
    pub user: Option<String>,
    /// Every other field of the request, kept as it came. An entry named like a modelled
    /// field (`model`, `top_p`, …) is not written: the modelled field is.
    pub extra: Extra,
}

impl ChatOptions {
    /// Options with nothing set, shared by every request that sets none.
    fn none() -> &'static Self {
        static NONE: LazyLock<ChatOptions> = LazyLock::new(ChatOptions::default);
        &NONE
    }

    /// `true` if no option is set and there are no unknown fields.
    pub fn is_empty(&self) -> bool {
        let Self {
            max_completion_tokens,
            top_p,
            n,
            stream_options,
            stop,
            tool_choice,
            response_format,
            seed,
            user,
            extra,
        } = self;
        max_completion_tokens.is_none()
            && top_p.is_none()
            && n.is_none()
            && stream_options.is_none()
            && stop.is_none()
            && tool_choice.is_none()
            && response_format.is_none()
            && seed.is_none()
            && user.is_none()
            && extra.is_empty()
    }
}

impl fmt::Debug for ChatOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatOptions")
            .field("max_completion_tokens", &self.max_completion_tokens)
            .field("top_p", &self.top_p)
            .field("n", &self.n)
            .field("stream_options", &self.stream_options.is_some())
            .field("stop", &self.stop.is_some())
            .field("tool_choice", &self.tool_choice.is_some())
            .field("response_format", &self.response_format.is_some())
            .field("seed", &self.seed)
            .field("user", &self.user.is_some())
            .field("extra", &self.extra.len())
            .finish()
    }
}

/// A model name, cheap to clone: a shared string (`Arc<str>`), so copying a request for a
/// retry or another provider does not allocate.
///
/// It reads as a `&str` (it dereferences to `str`), compares with `&str` and `String`, and
/// is made from either. On the wire it is a JSON string.
///
/// ```
/// use brace_llm::ModelName;
///
/// let model = ModelName::from("gpt-4o-mini");
/// assert_eq!(model, "gpt-4o-mini");
/// assert!(model.starts_with("gpt-4o"));
/// assert_eq!(model.clone().as_str(), "gpt-4o-mini");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ModelName(Arc<str>);

/// Read straight into the shared string: `Arc<str>`'s own `Deserialize` reads a `String`
/// first, then copies it (an allocation and a copy more per request).
impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl serde::de::Visitor<'_> for Name {
            type Value = ModelName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<ModelName, E> {
                Ok(ModelName::from(name))
            }
        }

        deserializer.deserialize_str(Name)
    }
}

impl ModelName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for ModelName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ModelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ModelName {
    fn from(name: &str) -> Self {
        Self(name.into())
    }
}

impl From<&String> for ModelName {
    fn from(name: &String) -> Self {
        Self(name.as_str().into())
    }
}

impl From<String> for ModelName {
    fn from(name: String) -> Self {
        Self(name.into())
    }
}

impl From<Box<str>> for ModelName {
    fn from(name: Box<str>) -> Self {
        Self(name.into())
    }
}

impl From<Arc<str>> for ModelName {
    fn from(name: Arc<str>) -> Self {
        Self(name)
    }
}

impl From<&Arc<str>> for ModelName {
    fn from(name: &Arc<str>) -> Self {
        Self(Arc::clone(name))
    }
}

impl From<&ModelName> for ModelName {
    fn from(name: &ModelName) -> Self {
        name.clone()
    }
}

impl From<ModelName> for Arc<str> {
    fn from(name: ModelName) -> Self {
        name.0
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        name.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for ModelName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for ModelName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for ModelName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<ModelName> for str {
    fn eq(&self, other: &ModelName) -> bool {
        *self == *other.0
    }
}

impl PartialEq<ModelName> for &str {
    fn eq(&self, other: &ModelName) -> bool {
        **self == *other.0
    }
}

impl PartialEq<ModelName> for String {
    fn eq(&self, other: &ModelName) -> bool {
        **self == *other.0
    }
}

/// Streaming options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with the usage of the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Stop sequences: one string or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }
}

// ===== Message =====

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// Instructions from the application (newer models' name for `system`).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// A function's result (deprecated form of `tool`).
    Function,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
            Self::Function => "function",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or parts; absent on an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field (`refusal`, `audio`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(Message, "struct Message", {
    role: Role = required,
    content: Option<Content> = default,
    name: Option<String> = default,
    tool_calls: Option<Vec<ToolCall>> = default,
    tool_call_id: Option<String> = default,
});

impl Message {
    /// A message with text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Extra::new(),
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, text)
        }
    }

    /// The message's text: the content if it is text, or its text parts joined.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }

    /// `true` if the message carries an image part.
    pub fn has_images(&self) -> bool {
        matches!(&self.content, Some(Content::Parts(parts)) if parts.iter().any(ContentPart::is_image))
    }
}

/// A message's content: plain text or a list of parts (text, images, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Several parts.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content; for parts, the text parts joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> de::Visitor<'de> for ContentVisitor {
            type Value = Content;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Content, E> {
                Ok(Content::Text(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Content, E> {
                Ok(Content::Text(text))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One part of a multi-part message.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    /// A text part (`{"type": "text", "text": ...}`).
    Text {
        /// The text.
        text: String,
        /// Every other field (e.g. `cache_control`).
        extra: Extra,
    },
    /// An image part (`{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`); the
    /// URL may be a `data:` URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
        /// Every other field.
        extra: Extra,
    },
    /// A part of another type (audio, file, …), kept as it came.
    Other(Value),
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            extra: Extra::new(),
        }
    }

    /// An image part.
    pub fn image_url(url: impl Into<String>) -> Self {
        Self::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }

    /// `true` for an image part.
    pub fn is_image(&self) -> bool {
        match self {
            Self::ImageUrl { .. } => true,
            Self::Text { .. } => false,
            Self::Other(value) => value
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.contains("image")),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KnownPart {
    Text {
        text: String,
        #[serde(flatten)]
        extra: Extra,
    },
    ImageUrl {
        image_url: ImageUrl,
        #[serde(flatten)]
        extra: Extra,
    },
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum KnownPartRef<'a> {
            Text {
                text: &'a str,
                #[serde(flatten)]
                extra: &'a Extra,
            },
            ImageUrl {
                image_url: &'a ImageUrl,
                #[serde(flatten)]
                extra: &'a Extra,
            },
        }
        match self {
            Self::Text { text, extra } => KnownPartRef::Text { text, extra }.serialize(serializer),
            Self::ImageUrl { image_url, extra } => {
                KnownPartRef::ImageUrl { image_url, extra }.serialize(serializer)
            }
            Self::Other(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return Err(de::Error::custom("a content part needs a string `type`"));
        };
        match kind {
            "text" | "image_url" => match KnownPart::deserialize(value)
                .map_err(de::Error::custom)?
            {
                KnownPart::Text { text, extra } => Ok(Self::Text { text, extra }),
                KnownPart::ImageUrl { image_url, extra } => Ok(Self::ImageUrl { image_url, extra }),
            },
            _ => Ok(Self::Other(value)),
        }
    }
}

/// An image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// An `https:` or `data:` URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

// ===== Tools =====

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

fn function_type() -> String {
    "function".to_owned()
}

impl Tool {
    /// A function tool.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: function_type(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                extra: Extra::new(),
            },
        }
    }
}

/// A function's name, description and JSON-schema parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters, as a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Every other field (`strict`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A call the model made to a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed by the tool message that answers it.
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function called and its arguments.
    pub function: FunctionCall,
}

/// A function name and its arguments, a JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function called.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

// ===== ChatCompletion =====

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Content was filtered.
    ContentFilter,
    /// The model called a function (deprecated form).
    FunctionCall,
    /// Another reason, kept as it came.
    Other(String),
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
            Self::Other(other) => other,
        }
    }
}

impl From<&str> for FinishReason {
    fn from(reason: &str) -> Self {
        match reason {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reason = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from(&*reason))
    }
}

/// Token counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Every other field (`prompt_tokens_details`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(Usage, "struct Usage", {
    prompt_tokens: u64 = default,
    completion_tokens: u64 = default,
    total_tokens: u64 = default,
});

impl Usage {
    /// Usage from prompt and completion counts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            extra: Extra::new(),
        }
    }

    /// An estimate of `request`'s prompt tokens, for a call whose provider never reported
    /// them (a stream that broke before its usage chunk): a quarter of the bytes of its
    /// messages' text, at least one — the usual rule of thumb for English text with
    /// OpenAI's tokenizers. brace has no tokenizer; use it only where nothing better is
    /// known, and say it is an estimate.
    pub fn estimate_prompt_tokens(request: &ChatRequest) -> u64 {
        let bytes: usize = request
            .messages
            .iter()
            .map(|message| message.text().len())
            .sum();
        bytes.div_ceil(4).max(1) as u64
    }

    /// Adds `other`'s counts to these (the `extra` fields are left as they are).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

/// A whole completion (`"object": "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// The completion's id.
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field (`system_fingerprint`, `service_tier`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(ChatCompletion, "struct ChatCompletion", {
    id: String = required,
    object: String = (completion_object()),
    created: u64 = default,
    model: String = required,
    choices: Vec<Choice> = required,
    usage: Option<Usage> = default,
});

fn completion_object() -> String {
    "chat.completion".to_owned()
}

impl ChatCompletion {
    /// A one-choice completion with an assistant text message.
    pub fn new(
        id: impl Into<String>,
        model: impl Into<String>,
        text: impl Into<String>,
        finish_reason: FinishReason,
    ) -> Self {
        Self {
            id: id.into(),
            object: completion_object(),
            created: unix_now(),
            model: model.into(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                finish_reason: Some(finish_reason),
                extra: Extra::new(),
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    /// The first choice's text.
    pub fn text(&self) -> String {
        self.choices
            .first()
            .map(|choice| choice.message.text())
            .unwrap_or_default()
    }
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The choice's index.
    #[serde(default)]
    pub index: u32,
    /// The assistant's message.
    pub message: Message,
    /// Why the model stopped.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Every other field (`logprobs`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(Choice, "struct Choice", {
    index: u32 = default,
    message: Message = required,
    finish_reason: Option<FinishReason> = default,
});

// ===== ChatChunk =====

/// One server-sent event of a streamed completion (`"object": "chat.completion.chunk"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    /// The completion's id (the same on every chunk).
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// The choices' deltas (empty on a usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when asked for (`null` elsewhere).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(ChatChunk, "struct ChatChunk", {
    id: String = required,
    object: String = (chunk_object()),
    created: u64 = default,
    model: String = default,
    choices: Vec<ChunkChoice> = default,
    usage: Option<Usage> = default,
});

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

impl ChatChunk {
    /// A chunk with one choice carrying `delta`.
    pub fn new(id: impl Into<String>, model: impl Into<String>, delta: Delta) -> Self {
        Self {
            id: id.into(),
            object: chunk_object(),
            created: unix_now(),
            model: model.into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
                extra: Extra::new(),
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    /// `true` if the chunk carries content or a tool-call delta: the point at which a stream
    /// commits to the provider sending it. Role-only and empty chunks do not.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|choice| choice.delta.has_content())
    }

    /// The finish reason of the first choice that has one.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.choices
            .iter()
            .find_map(|choice| choice.finish_reason.as_ref())
    }
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    /// The choice's index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Every other field (`logprobs`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(ChunkChoice, "struct ChunkChoice", {
    index: u32 = default,
    delta: Delta = default,
    finish_reason: Option<FinishReason> = default,
});

/// What one chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Every other field (`refusal`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

crate::extra::with_extra!(Delta, "struct Delta", {
    role: Option<Role> = default,
    content: Option<String> = default,
    tool_calls: Option<Vec<ToolCallDelta>> = default,
});

impl Delta {
    /// A text delta.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: Some(text.into()),
            ..Self::default()
        }
    }

    /// `true` if it carries text or a tool-call fragment.
    pub fn has_content(&self) -> bool {
        self.content.as_ref().is_some_and(|text| !text.is_empty())
            || self
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
    }
}

/// A fragment of a tool call in a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call this fragment belongs to.
    #[serde(default)]
    pub index: u32,
    /// The call's id (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `function` (first fragment only).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The function name and a piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// A piece of a streamed function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function's name (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More of the arguments text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
