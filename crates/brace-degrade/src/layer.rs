//! [`DegradeLayer`]: configuration shared by every service it makes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use brace_core::DefaultClassifier;
use brace_core::degrade::{Degradable, DegradeResponse};
use tower_layer::Layer;

use crate::cache::{CacheTier, ResponseCache};
use crate::config::{Admit, DegradeConfig};
use crate::error::InvalidConfig;
use crate::handle::DegradeHandle;
use crate::level::Ladder;
use crate::service::Degrade;
use crate::state::Shared;

/// What the cache of a layer for requests `R` stores.
pub type CachedOf<R> = <<R as Degradable>::Response as DegradeResponse>::Cached;

/// What every service of one layer shares: the level state, the cache, the classifier.
pub(crate) struct Core<V, C> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cache: Option<ResponseCache<V>>,
    /// The cache's second tier, if any.
    pub(crate) tier: Option<Arc<dyn CacheTier<V>>>,
    pub(crate) classifier: C,
    pub(crate) fallback_attempts: u32,
    pub(crate) fallback_to_static: bool,
    pub(crate) admit: Admit,
}

impl<V, C: fmt::Debug> fmt::Debug for Core<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("shared", &self.shared)
            .field("cache", &self.cache)
            .field("tier", &self.tier.is_some())
            .field("classifier", &self.classifier)
            .field("fallback_attempts", &self.fallback_attempts)
            .field("fallback_to_static", &self.fallback_to_static)
            .field("admit", &self.admit)
            .finish()
    }
}

/// Wraps services in [`Degrade`]: a ladder of degradation levels, a response cache and
/// automatic movement between levels.
///
/// Every service the layer makes shares one current level, one cache and one
/// [`DegradeHandle`], as tower's `GlobalConcurrencyLimitLayer` shares its semaphore.
///
/// `R` is the request type ([`Degradable`]); `C` judges outcomes
/// ([`Classify`](brace_core::Classify)), [`DefaultClassifier`] unless
/// [`with_classifier`](Self::with_classifier) says otherwise.
pub struct DegradeLayer<R: Degradable, C = DefaultClassifier> {
    core: Arc<Core<CachedOf<R>, C>>,
    _request: PhantomData<fn(R)>,
}

impl<R: Degradable, C> Clone for DegradeLayer<R, C> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            _request: PhantomData,
        }
    }
}

impl<R: Degradable, C: fmt::Debug> fmt::Debug for DegradeLayer<R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeLayer")
            .field("core", &self.core)
            .finish()
    }
}

impl<R: Degradable> DegradeLayer<R> {
    /// A layer over `ladder` with the default configuration otherwise.
    pub fn new(ladder: Ladder) -> Self {
        let config = DegradeConfig {
            levels: Some(ladder.levels().to_vec()),
            ..DegradeConfig::default()
        };
        Self::build(ladder, &config, 0)
    }

    /// A layer built from `config`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if [`DegradeConfig::validate`] finds a problem.
    pub fn from_config(config: &DegradeConfig) -> Result<Self, InvalidConfig> {
        let ladder = config.validate()?;
        let start = config
            .start
            .as_deref()
            .and_then(|name| ladder.index_of(name))
            .unwrap_or(0);
        Ok(Self::build(ladder, config, start))
    }

    fn build(ladder: Ladder, config: &DegradeConfig, start: usize) -> Self {
        let cache = config
            .cache
            .enabled
            .then(|| ResponseCache::new(&config.cache));
        Self {
            core: Arc::new(Core {
                shared: Arc::new(Shared::new(ladder, config.auto.clone(), start)),
                cache,
                tier: None,
                classifier: DefaultClassifier,
                fallback_attempts: config.fallback_attempts,
                fallback_to_static: config.fallback_to_static,
                admit: config.cache.admit,
            }),
            _request: PhantomData,
        }
    }
}

impl<R: Degradable, C> DegradeLayer<R, C> {
    /// The same layer (same level state and cache) judging outcomes with `classifier`.
    pub fn with_classifier<C2>(&self, classifier: C2) -> DegradeLayer<R, C2> {
        DegradeLayer {
            core: Arc::new(Core {
                shared: self.core.shared.clone(),
                cache: self.core.cache.clone(),
                tier: self.core.tier.clone(),
                classifier,
                fallback_attempts: self.core.fallback_attempts,
                fallback_to_static: self.core.fallback_to_static,
                admit: self.core.admit,
            }),
            _request: PhantomData,
        }
    }

    /// The same layer (same level state, cache and classifier) with `tier` as the
    /// response cache's second tier (see [`CacheTier`]). Without an enabled cache there is
    /// nothing for a tier to back, and it is not used.
    pub fn with_cache_tier(&self, tier: Arc<dyn CacheTier<CachedOf<R>>>) -> Self
    where
        C: Clone,
    {
        DegradeLayer {
            core: Arc::new(Core {
                shared: self.core.shared.clone(),
                cache: self.core.cache.clone(),
                tier: self.core.cache.is_some().then_some(tier),
                classifier: self.core.classifier.clone(),
                fallback_attempts: self.core.fallback_attempts,
                fallback_to_static: self.core.fallback_to_static,
                admit: self.core.admit,
            }),
            _request: PhantomData,
        }
    }

    /// A handle to read and set the current level.
    pub fn handle(&self) -> DegradeHandle {
        DegradeHandle::new(self.core.shared.clone())
    }

    /// The response cache, if enabled.
    pub fn cache(&self) -> Option<&ResponseCache<CachedOf<R>>> {
        self.core.cache.as_ref()
    }
}

impl<S, R: Degradable, C> Layer<S> for DegradeLayer<R, C> {
    type Service = Degrade<S, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Degrade::from_core(inner, self.core.clone())
    }
}
