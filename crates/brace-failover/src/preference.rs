//! A preferred provider per request.

use std::fmt;
use std::sync::Arc;

/// Reads which provider a request would like to be served by.
///
/// A failover service tries the preferred provider first when it is healthy, then the
/// others in the usual order. Implemented for:
///
/// - [`NoPreference`], the default;
/// - `fn(&Req) -> Option<&str>`, for any request type: read a field or an extension;
/// - [`FromExtensions`], for `http::Request<B>`: reads a [`PreferredProvider`] extension.
///
/// # Example
///
/// ```
/// use brace_failover::{Preference, PreferredProvider};
///
/// struct Request {
///     extensions: http::Extensions,
/// }
///
/// let preference: fn(&Request) -> Option<&str> =
///     |req| req.extensions.get::<PreferredProvider>().map(PreferredProvider::name);
///
/// let mut req = Request { extensions: http::Extensions::new() };
/// req.extensions.insert(PreferredProvider::new("anthropic"));
/// assert_eq!(preference.preferred(&req), Some("anthropic"));
/// ```
pub trait Preference<Req> {
    /// The name of the provider `request` prefers, if any.
    fn preferred<'a>(&self, request: &'a Req) -> Option<&'a str>;
}

/// No request prefers any provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPreference;

impl<Req> Preference<Req> for NoPreference {
    fn preferred<'a>(&self, _: &'a Req) -> Option<&'a str> {
        None
    }
}

impl<Req> Preference<Req> for fn(&Req) -> Option<&str> {
    fn preferred<'a>(&self, request: &'a Req) -> Option<&'a str> {
        self(request)
    }
}

/// Reads a [`PreferredProvider`] from the extensions of an `http::Request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromExtensions;

impl<B> Preference<http::Request<B>> for FromExtensions {
    fn preferred<'a>(&self, request: &'a http::Request<B>) -> Option<&'a str> {
        request
            .extensions()
            .get::<PreferredProvider>()
            .map(PreferredProvider::name)
    }
}

/// A request extension naming the provider the request prefers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PreferredProvider(Arc<str>);

impl PreferredProvider {
    /// Prefers the provider named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The preferred provider's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PreferredProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PreferredProvider").field(&self.0).finish()
    }
}
