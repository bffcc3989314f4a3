//! A small request/response pair implementing the degradation traits, and an inner service
//! whose health the test controls.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use brace_core::BoxError;
use brace_core::degrade::{Degradable, DegradeResponse, Reshape};
use futures::Stream;
use futures::StreamExt;
use parking_lot::Mutex;

// ===== what a level does to a `Req`: the test's own shape =====

/// Features of a `Req` a level may allow or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    pub tools: bool,
    pub stream: bool,
    pub images: bool,
    pub response_format: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self::ALL
    }
}

impl Features {
    pub const ALL: Features = Features {
        tools: true,
        stream: true,
        images: true,
        response_format: true,
    };
    pub const NONE: Features = Features {
        tools: false,
        stream: false,
        images: false,
        response_format: false,
    };
}

/// How a level reshapes a `Req`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    pub model: Option<Arc<str>>,
    pub max_tokens: Option<u32>,
    pub allow: Features,
}

impl Shape {
    pub fn unchanged() -> Self {
        Self::default()
    }
}

/// What reshaping changed in a `Req`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reshaped {
    pub removed: Features,
    pub model: Option<Arc<str>>,
    pub max_tokens: Option<u32>,
}

impl Reshape for Reshaped {
    fn nothing() -> Self {
        Self {
            removed: Features::NONE,
            model: None,
            max_tokens: None,
        }
    }

    fn is_nothing(&self) -> bool {
        *self == Self::nothing()
    }

    fn retargets(&self, previous: &Self) -> bool {
        self.model != previous.model
    }
}

pub type Degradation = brace_core::degrade::Degradation<Reshaped>;

/// A request with the features a level can remove.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub prompt: String,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub tools: bool,
    pub images: bool,
    pub stream: bool,
    pub deterministic: bool,
    /// Not part of the answer: left out of the cache key.
    pub user: Option<String>,
}

impl Req {
    pub fn new(prompt: &str) -> Self {
        Self {
            prompt: prompt.into(),
            model: "big".into(),
            max_tokens: None,
            tools: false,
            images: false,
            stream: false,
            deterministic: true,
            user: None,
        }
    }
}

impl Degradable for Req {
    type Response = Resp;
    type Shape = Shape;
    type Reshaped = Reshaped;

    fn reshape(&mut self, shape: &Shape) -> Reshaped {
        let mut reshaped = Reshaped::nothing();
        if let Some(model) = &shape.model {
            self.model = model.to_string();
            reshaped.model = Some(model.clone());
        }
        if let Some(cap) = shape.max_tokens {
            let capped = self.max_tokens.map_or(cap, |asked| asked.min(cap));
            if self.max_tokens != Some(capped) {
                reshaped.max_tokens = Some(capped);
            }
            self.max_tokens = Some(capped);
        }
        let allow = shape.allow;
        let mut removed = Features::NONE;
        if !allow.tools && self.tools {
            self.tools = false;
            removed.tools = true;
        }
        if !allow.images && self.images {
            self.images = false;
            removed.images = true;
        }
        if !allow.stream && self.stream {
            self.stream = false;
            removed.stream = true;
        }
        reshaped.removed = removed;
        reshaped
    }

    fn write_cache_key(&self, out: &mut dyn io::Write) -> io::Result<()> {
        write!(out, "{}\0{}\0{}", self.model, self.prompt, self.tools)
    }

    fn is_deterministic(&self) -> bool {
        self.deterministic
    }

    fn wants_stream(&self) -> bool {
        self.stream
    }

    fn static_response(&self, message: &str) -> Resp {
        Resp::whole(message)
    }
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<String, BoxError>> + Send>>;

/// A whole answer or a stream of pieces of one.
pub struct Resp {
    pub body: Body,
    pub degradation: Option<Degradation>,
    /// The request as the inner service saw it (live answers only).
    pub seen: Option<Req>,
}

pub enum Body {
    Whole(String),
    Stream(ChunkStream),
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match &self.body {
            Body::Whole(text) => text.as_str(),
            Body::Stream(_) => "<stream>",
        };
        f.debug_struct("Resp")
            .field("body", &body)
            .field("degradation", &self.degradation)
            .finish_non_exhaustive()
    }
}

impl Resp {
    pub fn whole(text: &str) -> Self {
        Self {
            body: Body::Whole(text.into()),
            degradation: None,
            seen: None,
        }
    }

    pub fn stream(chunks: Vec<Result<String, BoxError>>) -> Self {
        Self {
            body: Body::Stream(Box::pin(futures::stream::iter(chunks))),
            degradation: None,
            seen: None,
        }
    }

    pub fn level(&self) -> &str {
        self.degradation.as_ref().map_or("", |d| &*d.level)
    }

    pub fn origin(&self) -> brace_core::degrade::Origin {
        self.degradation.as_ref().expect("annotated").origin
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.body, Body::Stream(_))
    }

    /// The whole text; a stream is read to its end.
    pub async fn text(self) -> Result<String, BoxError> {
        match self.body {
            Body::Whole(text) => Ok(text),
            Body::Stream(mut stream) => {
                let mut text = String::new();
                while let Some(chunk) = stream.next().await {
                    text.push_str(&chunk?);
                }
                Ok(text)
            }
        }
    }
}

/// Collects a stream's chunks on their way to the caller; fills the cache at the end.
struct Tee {
    inner: ChunkStream,
    collected: String,
    fill: Option<Box<dyn FnOnce(String) + Send>>,
}

impl Stream for Tee {
    type Item = Result<String, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.collected.push_str(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.fill = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                if let Some(fill) = this.fill.take() {
                    fill(std::mem::take(&mut this.collected));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl DegradeResponse<Reshaped> for Resp {
    type Cached = String;

    fn annotate(&mut self, degradation: &Degradation) {
        self.degradation = Some(degradation.clone());
    }

    fn tee<F>(self, fill: F) -> Self
    where
        F: FnOnce(String) + Send + 'static,
    {
        match self.body {
            Body::Whole(text) => {
                fill(text.clone());
                Self {
                    body: Body::Whole(text),
                    ..self
                }
            }
            Body::Stream(inner) => {
                let tee = Tee {
                    inner,
                    collected: String::new(),
                    fill: Some(Box::new(fill)),
                };
                Self {
                    body: Body::Stream(Box::pin(tee)),
                    ..self
                }
            }
        }
    }

    fn from_cached(cached: &String, stream: bool) -> Self {
        if stream {
            let chunks: Vec<Result<String, BoxError>> = cached
                .split_inclusive(' ')
                .map(|piece| Ok(piece.to_string()))
                .collect();
            Resp::stream(chunks)
        } else {
            Resp::whole(cached)
        }
    }

    fn cached_size(cached: &String) -> usize {
        cached.len()
    }
}

/// What the inner service does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers `answer to <prompt> by <model>`.
    Healthy,
    /// Fails every call with a transient error.
    Failing,
    /// Fails calls whose model is this, answers the others.
    FailingModel(&'static str),
    /// Answers with a stream of three chunks.
    Streaming,
}

/// An inner service whose behaviour the test switches, counting calls.
#[derive(Debug, Clone)]
pub struct Backend {
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Req>>>,
    bad_request: Arc<AtomicBool>,
}

/// The error the backend fails with.
#[derive(Debug)]
pub struct BackendDown;

impl std::fmt::Display for BackendDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend down")
    }
}

impl std::error::Error for BackendDown {}

impl Backend {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode: Arc::new(Mutex::new(mode)),
            calls: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            bad_request: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Req> {
        self.seen.lock().clone()
    }

    pub fn service(
        &self,
    ) -> impl tower::Service<
        Req,
        Response = Resp,
        Error = BoxError,
        Future = futures::future::Ready<Result<Resp, BoxError>>,
    > + Clone
    + Send
    + 'static {
        let backend = self.clone();
        tower::service_fn(move |req: Req| {
            backend.calls.fetch_add(1, Ordering::SeqCst);
            backend.seen.lock().push(req.clone());
            let mode = *backend.mode.lock();
            let answer = format!("answer to {} by {}", req.prompt, req.model);
            let result = match mode {
                Mode::Healthy => Ok(Resp::whole(&answer)),
                Mode::Failing => Err(Box::new(BackendDown) as BoxError),
                Mode::FailingModel(model) if req.model == model => {
                    Err(Box::new(BackendDown) as BoxError)
                }
                Mode::FailingModel(_) => Ok(Resp::whole(&answer)),
                Mode::Streaming => Ok(Resp::stream(vec![
                    Ok("answer ".into()),
                    Ok("in ".into()),
                    Ok("pieces".into()),
                ])),
            };
            futures::future::ready(result.map(|mut resp| {
                resp.seen = Some(req);
                resp
            }))
        })
    }
}

/// The test ladder: the standard one with model overrides.
pub fn ladder() -> brace_degrade::Ladder<Shape> {
    use brace_degrade::{Ladder, Level};
    Ladder::new(vec![
        Level::live("full", Shape::unchanged()),
        Level::live(
            "reduced",
            Shape {
                model: Some("mid".into()),
                max_tokens: Some(1024),
                allow: Features {
                    images: false,
                    ..Features::ALL
                },
            },
        ),
        Level::live(
            "minimal",
            Shape {
                model: Some("small".into()),
                max_tokens: Some(256),
                allow: Features {
                    tools: false,
                    images: false,
                    response_format: false,
                    stream: true,
                },
            },
        ),
        Level::cached("cached"),
        Level::fixed("offline", brace_degrade::DEFAULT_STATIC_MESSAGE),
    ])
    .unwrap()
}

/// A config over [`ladder`] with quick, exact movement rules for tests.
pub fn config() -> brace_degrade::DegradeConfig<Shape> {
    brace_degrade::DegradeConfig {
        levels: Some(ladder().levels().to_vec()),
        auto: brace_degrade::AutoConfig {
            enabled: true,
            failure_threshold: 3,
            window: std::time::Duration::from_secs(10),
            recovery_successes: 5,
            probe_interval: std::time::Duration::from_secs(30),
        },
        ..brace_degrade::DegradeConfig::default()
    }
}
