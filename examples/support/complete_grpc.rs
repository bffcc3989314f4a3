//! The `brace.example.Complete` gRPC service the tonic examples share, written by hand:
//!
//! ```proto
//! syntax = "proto3";
//! package brace.example;
//!
//! service Complete {
//!   rpc Complete(CompleteRequest) returns (CompleteReply);
//! }
//! message CompleteRequest { string prompt = 1; string model = 2; }
//! message CompleteReply { string text = 1; string provider = 2; string model = 3; }
//! ```
//!
//! Why by hand rather than generated at build time: the messages are two `prost` derives and
//! the service one route, so this file is shorter than a build script, and the examples build
//! with nothing but the Rust toolchain — no `protoc` on the machine and no protobuf compiler
//! compiled into every build of the workspace (`cargo test --workspace` builds examples).
//! A larger API would use `tonic-prost-build` with `protox`, which needs no `protoc` either.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use brace::BoxError;

/// The service's name, as gRPC routes it.
pub(crate) const SERVICE: &str = "brace.example.Complete";

/// The path of its one method.
pub(crate) const COMPLETE: &str = "/brace.example.Complete/Complete";

/// A prompt for a model.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct CompleteRequest {
    /// The prompt.
    #[prost(string, tag = "1")]
    pub(crate) prompt: String,
    /// The model asked for.
    #[prost(string, tag = "2")]
    pub(crate) model: String,
}

/// A model's answer, with who served it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct CompleteReply {
    /// The answer.
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    /// The provider that answered.
    #[prost(string, tag = "2")]
    pub(crate) provider: String,
    /// The model that answered.
    #[prost(string, tag = "3")]
    pub(crate) model: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

// ===== server =====

/// Serves `Complete` with `handler`: any tower service from `tonic::Request<CompleteRequest>`
/// to `tonic::Response<CompleteReply>` failing with a `tonic::Status` (tonic's own
/// `UnaryService` is implemented for those).
#[derive(Debug, Clone)]
pub(crate) struct CompleteServer<H> {
    handler: H,
}

impl<H> CompleteServer<H> {
    /// Serves `handler`.
    pub(crate) fn new(handler: H) -> Self {
        Self { handler }
    }
}

impl<H> NamedService for CompleteServer<H> {
    const NAME: &'static str = SERVICE;
}

impl<H> Service<http::Request<tonic::body::Body>> for CompleteServer<H>
where
    H: Service<Request<CompleteRequest>, Response = Response<CompleteReply>, Error = Status>
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != COMPLETE {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let handler = self.handler.clone();
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<CompleteReply, CompleteRequest>::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

// ===== client =====

/// A gRPC channel as a tower service of HTTP requests: a `tonic` `Channel`, or one wrapped
/// in layers.
pub(crate) type HttpChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    ChannelError,
>;

/// Boxes a channel, or a channel in layers, into an [`HttpChannel`].
pub(crate) fn http_channel<S>(service: S) -> HttpChannel
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    HttpChannel::new(service.map_err(|err| ChannelError(err.into())))
}

/// The error of an [`HttpChannel`]: the channel's or a layer's, as its source (a concrete
/// type rather than a `BoxError`, which tonic's client bounds do not accept inside a `Send`
/// future).
#[derive(Debug)]
pub(crate) struct ChannelError(BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "channel: {}", self.0)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A `Complete` client as a tower service: `CompleteRequest` in, `CompleteReply` out, a
/// failed call's `tonic::Status` boxed (what brace's layers pass on and classify).
#[derive(Debug, Clone)]
pub(crate) struct CompleteClient {
    grpc: tonic::client::Grpc<HttpChannel>,
}

impl CompleteClient {
    /// A client over `channel`.
    pub(crate) fn new(channel: Channel) -> Self {
        Self::over(http_channel(channel))
    }

    /// A client over any HTTP service speaking to a gRPC server (a channel behind layers).
    pub(crate) fn over(channel: HttpChannel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// One call, with the request's metadata (a `grpc-timeout`, say).
    pub(crate) async fn complete(
        &mut self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteReply>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| Status::unavailable(format!("channel not ready: {err}")))?;
        self.grpc
            .unary(
                request,
                PathAndQuery::from_static(COMPLETE),
                ProstCodec::<CompleteRequest, CompleteReply>::default(),
            )
            .await
    }
}

impl Service<CompleteRequest> for CompleteClient {
    type Response = CompleteReply;
    type Error = BoxError;
    type Future = BoxFuture<Result<CompleteReply, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The channel's readiness is awaited inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CompleteRequest) -> Self::Future {
        let mut client = self.clone();
        Box::pin(async move {
            client
                .complete(Request::new(request))
                .await
                .map(Response::into_inner)
                .map_err(|status| -> BoxError { Box::new(status) })
        })
    }
}

/// The classifier for this client's errors: brace's [`GrpcClassifier`] reading
/// `tonic::Status` codes and the server's `grpc-retry-pushback-ms`.
///
/// [`GrpcClassifier`]: brace::GrpcClassifier
pub(crate) fn grpc_classifier() -> brace::GrpcClassifier {
    brace::GrpcClassifier::new().with_status_of(|err| {
        let status = err.downcast_ref::<Status>()?;
        Some(brace::grpc::GrpcStatus::from_metadata(
            status.code() as i32,
            status.metadata().as_ref(),
        ))
    })
}
