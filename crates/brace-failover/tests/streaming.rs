//! Streamed responses commit to a provider at their first chunk: failover before, not after.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brace_core::commit::Commit;
use brace_core::{AllProvidersFailed, BoxError};
use brace_failover::{FailoverService, Provider};
use futures::stream::{self, BoxStream, StreamExt};
use tower::{Service, ServiceExt};

type Item = Result<&'static str, BoxError>;

/// A streamed reply and who sent it.
struct Reply {
    provider: &'static str,
    chunks: BoxStream<'static, Item>,
}

/// Commits a reply at its first chunk; an error (or the end) before it is the call's error.
#[derive(Clone, Copy)]
struct FirstChunk;

impl Commit<Reply> for FirstChunk {
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn commit(&self, reply: Reply) -> Self::Future {
        Box::pin(async move {
            let Reply {
                provider,
                mut chunks,
            } = reply;
            match chunks.next().await {
                Some(Ok(first)) => Ok(Reply {
                    provider,
                    chunks: stream::once(async move { Ok(first) }).chain(chunks).boxed(),
                }),
                Some(Err(err)) => Err(err),
                None => Err("stream ended before its first chunk".into()),
            }
        })
    }
}

/// A provider whose stream yields `script`'s items, each after `gap`.
#[derive(Clone)]
struct Streamer {
    name: &'static str,
    script: fn() -> Vec<Item>,
    gap: Duration,
    calls: Arc<AtomicUsize>,
}

impl Streamer {
    fn new(name: &'static str, script: fn() -> Vec<Item>) -> Self {
        Self {
            name,
            script,
            gap: Duration::from_millis(10),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<String> for Streamer {
    type Response = Reply;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Reply, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: String) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let gap = self.gap;
        let chunks = stream::iter((self.script)())
            .then(move |item| async move {
                tokio::time::sleep(gap).await;
                item
            })
            .boxed();
        std::future::ready(Ok(Reply {
            provider: self.name,
            chunks,
        }))
    }
}

async fn collect(reply: Reply) -> Vec<Result<&'static str, String>> {
    reply
        .chunks
        .map(|item| item.map_err(|err| err.to_string()))
        .collect()
        .await
}

#[tokio::test(start_paused = true)]
async fn stream_broken_before_first_chunk_fails_over() {
    let broken = Streamer::new("broken", || vec![Err("connection reset".into())]);
    let healthy = Streamer::new("healthy", || vec![Ok("hello"), Ok(" world")]);
    let mut svc = FailoverService::builder()
        .provider(Provider::new("broken", broken.clone()))
        .provider(Provider::new("healthy", healthy.clone()).priority(1))
        .commit(FirstChunk)
        .build()
        .unwrap();

    let reply = svc.ready().await.unwrap().call("hi".into()).await.unwrap();
    assert_eq!(reply.provider, "healthy");
    assert_eq!(collect(reply).await, [Ok("hello"), Ok(" world")]);
    let health = svc.health();
    assert_eq!((health[0].failures, health[1].successes), (1, 1));
    // The latency a streamed call reports is its time to first chunk.
    assert_eq!(health[1].latency_ewma, Some(Duration::from_millis(10)));
}

#[tokio::test(start_paused = true)]
async fn stream_broken_after_first_chunk_reaches_the_caller() {
    let flaky = Streamer::new("flaky", || vec![Ok("hel"), Err("connection reset".into())]);
    let backup = Streamer::new("backup", || vec![Ok("hello")]);
    let mut svc = FailoverService::builder()
        .provider(Provider::new("flaky", flaky.clone()))
        .provider(Provider::new("backup", backup.clone()).priority(1))
        .commit(FirstChunk)
        .build()
        .unwrap();

    let reply = svc.ready().await.unwrap().call("hi".into()).await.unwrap();
    assert_eq!(reply.provider, "flaky");
    assert_eq!(
        collect(reply).await,
        [Ok("hel"), Err("connection reset".to_owned())]
    );
    assert_eq!(backup.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn every_stream_broken_before_first_chunk_lists_each_provider() {
    let a = Streamer::new("a", Vec::new);
    let b = Streamer::new("b", || vec![Err("overloaded".into())]);
    let mut svc = FailoverService::builder()
        .provider(Provider::new("a", a))
        .provider(Provider::new("b", b))
        .commit(FirstChunk)
        .build()
        .unwrap();
    let Err(err) = svc.ready().await.unwrap().call("hi".into()).await else {
        panic!("every stream broke")
    };
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(
        all.to_string(),
        "all providers failed: [a: stream ended before its first chunk, b: overloaded]"
    );
}
