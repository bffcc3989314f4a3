//! Per-provider accounting of streamed answers: each provider is credited with the tokens
//! (and cost) of its own streams and with how each of them ended.
//!
//! The tap sits in every provider's stack, just outside its stream guard, so it sees each
//! provider's stream exactly as the layers above read it — including a stream that a
//! hold-back abandons when it breaks, a broken stream that a continuation takes over from, a
//! verified restart that diverged and was dropped, and the continuation that finished the
//! answer. When the stream ends it records, for its provider only:
//!
//! - `brace_streams_total{provider, outcome}`: `complete`, the error kind that ended it
//!   (`stream_interrupted`, `timeout`, …), or `cancelled` when it was dropped before its end
//!   (the client went away, a restart was abandoned, a hedge lost);
//! - `brace_tokens_total` and `brace_cost_microdollars_total`: the usage the provider
//!   reported, or where it reported none (a broken stream, a caller that asked for no usage)
//!   an estimate: the prompt by [`Usage::estimate_prompt_tokens`], the completion as the
//!   content deltas the provider sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tower::{Layer, Service};

use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, LlmError, ResponseBody, StreamChunk, Usage,
};

use crate::metrics::ProviderMetrics;

/// Adds the stream tap to a provider's stack.
#[derive(Clone)]
pub(crate) struct StreamAccountingLayer {
    metrics: ProviderMetrics,
}

impl StreamAccountingLayer {
    pub(crate) fn new(metrics: ProviderMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for StreamAccountingLayer {
    type Service = StreamAccounting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamAccounting {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`StreamAccountingLayer`].
#[derive(Clone)]
pub(crate) struct StreamAccounting<S> {
    inner: S,
    // Shared: the provider's stack is cloned for every attempt.
    metrics: ProviderMetrics,
}

impl<S> Service<ChatRequest> for StreamAccounting<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>,
{
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = AccountingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let prompt_estimate = request
            .is_stream()
            .then(|| Usage::estimate_prompt_tokens(&request));
        let call = self.inner.call(request);
        // Only a stream is tapped: a whole answer is accounted by the gateway's own metrics,
        // and the provider's handles are not copied for it.
        let tap = prompt_estimate.map(|estimate| (self.metrics.clone(), estimate));
        AccountingFuture { call, tap }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`StreamAccounting`]: the provider's answer, its stream tapped.
    pub(crate) struct AccountingFuture<F> {
        #[pin]
        call: F,
        tap: Option<(ProviderMetrics, u64)>,
    }
}

impl<F> Future for AccountingFuture<F>
where
    F: Future<Output = Result<ChatResponse, LlmError>>,
{
    type Output = Result<ChatResponse, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let ChatResponse { meta, body } = std::task::ready!(this.call.poll(cx))?;
        let body = match (body, this.tap.take()) {
            (ResponseBody::Stream(stream), Some((metrics, prompt_estimate))) => {
                ResponseBody::Stream(ChatStream::new(Tap {
                    stream,
                    metrics,
                    prompt_estimate,
                    tokens: 0,
                    usage: None,
                    done: false,
                }))
            }
            (body, _) => body,
        };
        Poll::Ready(Ok(ChatResponse { meta, body }))
    }
}

/// A provider's stream, recording how it ended.
struct Tap {
    stream: ChatStream,
    metrics: ProviderMetrics,
    prompt_estimate: u64,
    /// Content deltas seen.
    tokens: u64,
    usage: Option<Usage>,
    done: bool,
}

impl Tap {
    fn record(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let usage = self
            .usage
            .take()
            .unwrap_or_else(|| Usage::new(self.prompt_estimate, self.tokens));
        self.metrics.tokens(&usage);
        self.metrics
            .metrics()
            .stream_outcome(self.metrics.provider(), outcome);
    }

    fn seen(&mut self, chunk: &ChatChunk) {
        self.tokens += u64::from(chunk.has_content());
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
    }
}

impl Stream for Tap {
    type Item = Result<StreamChunk, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.stream).poll_next(cx));
        match &item {
            Some(Ok(chunk)) => self.seen(chunk),
            Some(Err(err)) => self.record(err.kind().as_str()),
            None => self.record("complete"),
        }
        Poll::Ready(item)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.record("cancelled");
    }
}
