//! [`DegradeLayer`]: configuration shared by every service it makes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use brace_core::DefaultClassifier;
use brace_core::degrade::{Degradable, DegradeResponse};
use tower_layer::Layer;

use crate::cache::{CacheTier, ResponseCache};
use crate::config::{Admit, DegradeConfig};
use crate::error::DegradeConfigError;
use crate::handle::DegradeHandle;
use crate::level::Ladder;
use crate::service::Degrade;
use crate::state::Shared;

/// What the cache of a layer for requests `R` stores.
pub type CachedOf<R> =
    <<R as Degradable>::Response as DegradeResponse<<R as Degradable>::Reshaped>>::Cached;

/// What every service of a layer for requests `R` shares.
pub(crate) type CoreOf<R, C> = Core<CachedOf<R>, <R as Degradable>::Shape, C>;

/// What every service of one layer shares: the level state, the cache, the classifier.
pub(crate) struct Core<V, Sh, C> {
    /// The ladder with its shapes (the level state keeps it without them).
    pub(crate) ladder: Ladder<Sh>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) cache: Option<ResponseCache<V>>,
    /// The cache's second tier, if any.
    pub(crate) tier: Option<Arc<dyn CacheTier<V>>>,
    pub(crate) classifier: C,
    pub(crate) fallback_attempts: u32,
    pub(crate) fallback_to_static: bool,
    pub(crate) admit: Admit,
}

impl<V, Sh: fmt::Debug, C: fmt::Debug> fmt::Debug for Core<V, Sh, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("ladder", &self.ladder)
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
/// ([`Classify`](brace_core::Classify)), [`DefaultClassifier`] unless the builder's
/// [`classifier`](DegradeLayerBuilder::classifier) says otherwise.
pub struct DegradeLayer<R: Degradable, C = DefaultClassifier> {
    core: Arc<CoreOf<R, C>>,
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
    /// A layer over `ladder` with the default configuration otherwise and the
    /// [`DefaultClassifier`]; [`builder`](Self::builder) sets the rest.
    pub fn new(ladder: Ladder<R::Shape>) -> Self {
        let config = DegradeConfig {
            levels: Some(ladder.levels().to_vec()),
            ..DegradeConfig::default()
        };
        Self::assemble(ladder, &config, 0, DefaultClassifier, None)
    }

    /// Starts a builder: the configuration ([`DegradeConfig`]: ladder, start level, cache,
    /// automatic movement) and the classifier.
    pub fn builder() -> DegradeLayerBuilder<R> {
        DegradeLayerBuilder {
            config: DegradeConfig::default(),
            classifier: DefaultClassifier,
            tier: None,
            _request: PhantomData,
        }
    }
}

impl<R: Degradable, C> DegradeLayer<R, C> {
    fn assemble(
        ladder: Ladder<R::Shape>,
        config: &DegradeConfig<R::Shape>,
        start: usize,
        classifier: C,
        tier: Option<Arc<dyn CacheTier<CachedOf<R>>>>,
    ) -> Self {
        let cache = config
            .cache
            .enabled
            .then(|| ResponseCache::new(&config.cache));
        Self {
            core: Arc::new(Core {
                shared: Arc::new(Shared::new(
                    ladder.without_shapes(),
                    config.auto.clone(),
                    start,
                )),
                ladder,
                // Without an enabled cache there is nothing for a tier to back.
                tier: tier.filter(|_| cache.is_some()),
                cache,
                classifier,
                fallback_attempts: config.fallback_attempts,
                fallback_to_static: config.fallback_to_static,
                admit: config.cache.admit,
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

// ===== DegradeLayerBuilder =====

/// Builds a [`DegradeLayer`]; start with [`DegradeLayer::builder`].
pub struct DegradeLayerBuilder<R: Degradable, C = DefaultClassifier> {
    config: DegradeConfig<R::Shape>,
    classifier: C,
    tier: Option<Arc<dyn CacheTier<CachedOf<R>>>>,
    _request: PhantomData<fn(R)>,
}

impl<R: Degradable, C> DegradeLayerBuilder<R, C> {
    /// Every setting from `config` (a file's `degradation` section, say).
    #[must_use]
    pub fn config(mut self, config: DegradeConfig<R::Shape>) -> Self {
        self.config = config;
        self
    }

    /// The ladder (by default [`Ladder::standard`]).
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // by value, as every other setter
    pub fn ladder(mut self, ladder: Ladder<R::Shape>) -> Self {
        self.config.levels = Some(ladder.levels().to_vec());
        self
    }

    /// How outcomes are judged ([`DefaultClassifier`] unless set), from
    /// `Result<&Response, &BoxError>` as every brace layer asks: a failure, or an error that
    /// should fail over, sends the request down the ladder and counts against the level.
    pub fn classifier<C2>(self, classifier: C2) -> DegradeLayerBuilder<R, C2> {
        DegradeLayerBuilder {
            config: self.config,
            classifier,
            tier: self.tier,
            _request: PhantomData,
        }
    }

    /// A second tier behind the response cache (see [`CacheTier`]): a cache shared by
    /// replicas, say. Without an enabled cache there is nothing for a tier to back, and it is
    /// not used.
    #[must_use]
    pub fn cache_tier(mut self, tier: Arc<dyn CacheTier<CachedOf<R>>>) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// [`DegradeConfigError`] if [`DegradeConfig::validate`] finds a problem.
    pub fn build(self) -> Result<DegradeLayer<R, C>, DegradeConfigError> {
        let ladder = self.config.validate()?;
        let start = self
            .config
            .start
            .as_deref()
            .and_then(|name| ladder.index_of(name))
            .unwrap_or(0);
        Ok(DegradeLayer::assemble(
            ladder,
            &self.config,
            start,
            self.classifier,
            self.tier,
        ))
    }
}

impl<R: Degradable, C: fmt::Debug> fmt::Debug for DegradeLayerBuilder<R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeLayerBuilder")
            .field("config", &self.config)
            .field("classifier", &self.classifier)
            .field("tier", &self.tier.is_some())
            .finish()
    }
}
