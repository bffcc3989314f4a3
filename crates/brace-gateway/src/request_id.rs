//! [`FastRequestId`]: the `x-request-id` the gateway gives a request that arrives without one,
//! and [`RequestIdLayer`], which gives it and sends it back.

use http::HeaderValue;

/// Makes request ids shaped as UUID version 4 (`8-4-4-4-12` lowercase hex, version and
/// variant bits set) from a per-thread [`fastrand`] generator.
///
/// `tower_http`'s `MakeRequestUuid` asks the operating system for 16 random bytes on every
/// request (a `getrandom` system call each time). A request id needs to be unique, not
/// unpredictable — it is printed in logs and sent back to the client — so 122 bits from a
/// fast generator seeded once per thread are enough, and the system call goes away.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FastRequestId;

impl FastRequestId {
    /// A new id as its 36 ASCII bytes.
    pub(crate) fn generate() -> [u8; 36] {
        let mut bits = fastrand::u128(..);
        // Version 4 (random) in bits 76..80, variant `10` in bits 62..64.
        bits = (bits & !(0xF << 76)) | (0x4 << 76);
        bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xF)];
        }
        let mut out = [b'-'; 36];
        out[..8].copy_from_slice(&hex[..8]);
        out[9..13].copy_from_slice(&hex[8..12]);
        out[14..18].copy_from_slice(&hex[12..16]);
        out[19..23].copy_from_slice(&hex[16..20]);
        out[24..].copy_from_slice(&hex[20..]);
        out
    }
}

/// The header a request's id travels in, both ways.
pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Gives every request an `x-request-id` — the client's own, or a new one from
/// [`FastRequestId`] — and sends it back on the answer unless the answer has one already.
///
/// tower-http's `SetRequestId` and `PropagateRequestId` do this in two layers, and each also
/// puts a `RequestId` into the request's or the answer's extensions for other services to
/// read; nothing in the gateway reads it (the request span and the logs take the header),
/// and each of those extensions is an allocation per request. Here it is one layer, with
/// the same headers in and out.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub(crate) struct WithRequestId<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for WithRequestId<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => Some(id.clone()),
            None => {
                let id = HeaderValue::from_bytes(&FastRequestId::generate()).ok();
                if let Some(id) = &id {
                    request.headers_mut().insert(X_REQUEST_ID, id.clone());
                }
                id
            }
        };
        RequestIdFuture {
            inner: self.inner.call(request),
            id,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`WithRequestId`].
    #[derive(Debug)]
    pub(crate) struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> std::future::Future for RequestIdFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take()
            && !response.headers().contains_key(&X_REQUEST_ID)
        {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        std::task::Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_uuid_v4(id: &str) -> bool {
        let groups: Vec<&str> = id.split('-').collect();
        groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
            && groups.iter().all(|group| {
                group
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            && groups[2].starts_with('4')
            && groups[3].starts_with(['8', '9', 'a', 'b'])
    }

    #[test]
    fn ids_are_shaped_as_uuid_v4() {
        for _ in 0..1_000 {
            let id = FastRequestId::generate();
            let id = std::str::from_utf8(&id).unwrap();
            assert!(is_uuid_v4(id), "{id}");
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<[u8; 36]> = (0..100_000).map(|_| FastRequestId::generate()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[tokio::test]
    async fn every_request_gets_an_id_and_its_answer_carries_it_back() {
        use tower::{Layer, ServiceExt};

        // The inner service answers with the id it was given as its body.
        let echo = tower::service_fn(|request: http::Request<()>| async move {
            let seen = request.headers().get("x-request-id").cloned();
            Ok::<_, std::convert::Infallible>(http::Response::new(seen))
        });
        let service = RequestIdLayer.layer(echo);

        // Without one: a fresh UUID, the same on the way in and out.
        let response = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        let given = response
            .body()
            .clone()
            .expect("the inner service saw an id");
        assert!(is_uuid_v4(given.to_str().unwrap()));
        assert_eq!(response.headers()["x-request-id"], given);

        // The client's own is kept, and sent back.
        let request = http::Request::builder()
            .header("x-request-id", "client-chose-this")
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.body().as_ref().unwrap(), "client-chose-this");
        assert_eq!(response.headers()["x-request-id"], "client-chose-this");

        // An answer that names an id itself keeps it.
        let own = RequestIdLayer.layer(tower::service_fn(|_: http::Request<()>| async {
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("x-request-id", HeaderValue::from_static("the-answer-s"));
            Ok::<_, std::convert::Infallible>(response)
        }));
        let response = own.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "the-answer-s");
    }
}
