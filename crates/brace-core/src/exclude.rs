//! Services a call need not ask again: what a degradation layer's later pass tells the
//! failover service below it.
//!
//! When every provider failed at one level of a degradation ladder, the next level sends a
//! reshaped (smaller, simpler) request. That can help a provider that timed out or was
//! overloaded, but not one that rate-limited the caller, refused its key or whose circuit is
//! open: asking those again only costs calls. The degradation layer runs its later pass
//! [`within`] a set of [`Exclusions`]; a failover service reads [`excluded`] for each
//! provider, skips the excluded ones and names them in its trail with the reason.
//!
//! Like [`deadline`](crate::deadline), the set travels with the call (a task-local set
//! around each poll), so it works whatever the request type.
//!
//! ```
//! use brace_core::exclude::{self, Exclusions, Excluded};
//! use brace_core::FailureClass;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let exclusions = Exclusions::new([("openai", Excluded::new("reduced", FailureClass::RateLimited))]);
//! let seen = exclude::within(exclusions, async {
//!     (exclude::excluded("openai").is_some(), exclude::excluded("anthropic").is_some())
//! })
//! .await;
//! assert_eq!(seen, (true, false));
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::classify::FailureClass;

tokio::task_local! {
    static EXCLUDED: Exclusions;
}

/// Why a provider was left out of a pass: the earlier pass's failure, of a class a reshaped
/// request does not change.
#[derive(Debug, Clone)]
pub struct Excluded {
    pass: Arc<str>,
    class: FailureClass,
}

impl Excluded {
    /// Left out of the pass named `pass` because it failed with a `class` failure before.
    pub fn new(pass: impl Into<Arc<str>>, class: FailureClass) -> Self {
        Self {
            pass: pass.into(),
            class,
        }
    }

    /// The pass (a degradation level) the provider was left out of.
    pub fn pass(&self) -> &str {
        &self.pass
    }

    /// The class of its earlier failure.
    pub fn class(&self) -> FailureClass {
        self.class
    }
}

impl fmt::Display for Excluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not asked again at level `{}`: a reshaped request does not change its earlier \
             failure ({})",
            self.pass, self.class
        )
    }
}

impl Error for Excluded {}

/// The providers a call leaves out, by name, each with why.
///
/// # Clone
///
/// Cheap: clones share the set.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    // `None` when nothing is left out: the empty set (every call's, on the success path)
    // neither allocates nor counts references when cloned.
    entries: Option<Entries>,
}

/// Who is left out, each with why.
type Entries = Arc<[(Arc<str>, Excluded)]>;

impl Exclusions {
    /// Leaves out each named provider for its reason.
    pub fn new<N: Into<Arc<str>>>(entries: impl IntoIterator<Item = (N, Excluded)>) -> Self {
        let entries: Entries = entries
            .into_iter()
            .map(|(name, why)| (name.into(), why))
            .collect();
        Self {
            entries: (!entries.is_empty()).then_some(entries),
        }
    }

    fn entries(&self) -> &[(Arc<str>, Excluded)] {
        self.entries.as_deref().unwrap_or_default()
    }

    /// Why `name` is left out, if it is.
    pub fn get(&self, name: &str) -> Option<&Excluded> {
        self.entries()
            .iter()
            .find(|(excluded, _)| &**excluded == name)
            .map(|(_, why)| why)
    }

    /// `true` if nothing is left out.
    pub fn is_empty(&self) -> bool {
        self.entries.is_none()
    }

    /// How many providers are left out.
    pub fn len(&self) -> usize {
        self.entries().len()
    }
}

/// The exclusions of the call being polled, if a layer above set any.
pub fn current() -> Option<Exclusions> {
    EXCLUDED.try_with(Clone::clone).ok()
}

/// Why the call being polled leaves out the provider named `name`, if a layer above said so.
pub fn excluded(name: &str) -> Option<Excluded> {
    EXCLUDED
        .try_with(|exclusions| exclusions.get(name).cloned())
        .ok()
        .flatten()
}

/// Runs `future` leaving out `exclusions` (replacing any set above).
pub fn within<F: Future>(exclusions: Exclusions, future: F) -> Within<F> {
    Within {
        inner: future,
        exclusions,
    }
}

pin_project! {
    /// A future run with a set of exclusions: see [`within`].
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the future it wraps.
    #[derive(Debug)]
    pub struct Within<F> {
        #[pin]
        inner: F,
        exclusions: Exclusions,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        // Leaving nobody out under nobody who does is the same as no scope at all, and
        // cheaper than setting one (the success path of every degradation pass).
        if this.exclusions.is_empty() && EXCLUDED.try_with(|_| ()).is_err() {
            return inner.poll(cx);
        }
        EXCLUDED.sync_scope(this.exclusions.clone(), || inner.poll(cx))
    }
}
