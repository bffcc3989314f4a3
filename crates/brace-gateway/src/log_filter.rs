//! [`LogFilter`]: `RUST_LOG`'s directives, read by the cheapest filter that can.

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// `RUST_LOG`-style directives as a log filter, usable as a layer or as a layer's filter.
///
/// Directives that name only targets and levels (`info`, `info,brace_retry=debug,hyper=warn`:
/// the usual ones) become a [`Targets`](tracing_subscriber::filter::Targets) filter, decided
/// once per call site. Directives that filter by span or field (`brace[request]=debug`) need
/// an [`EnvFilter`](tracing_subscriber::EnvFilter), which looks every span up under a lock
/// when it is entered and left — several times per request, with every thread taking the
/// same lock. Both read the directives the same way; invalid ones are ignored, as
/// `EnvFilter` does.
///
/// ```
/// use brace_gateway::metrics::LogFilter;
///
/// assert!(!LogFilter::new("info,brace_retry=debug").tracks_spans());
/// assert!(LogFilter::new("info,brace_gateway[request]=debug").tracks_spans());
/// ```
#[derive(Debug)]
pub struct LogFilter(FilterKind);

#[derive(Debug)]
enum FilterKind {
    Targets(Targets),
    // Boxed: it is large, and only span and field directives need it.
    Env(Box<EnvFilter>),
}

impl LogFilter {
    /// The filter for `directives` (comma-separated, as in `RUST_LOG`).
    pub fn new(directives: &str) -> Self {
        // Only plain `target=level`, `target` and `level` parts: anything else (spans,
        // fields, quoting, spaces — which `EnvFilter` takes as part of a target) is the
        // environment filter's to read.
        let plain = |part: &str| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'='))
        };
        let parts: Vec<&str> = directives
            .split(',')
            .filter(|part| !part.is_empty())
            .collect();
        if parts.iter().all(|part| plain(part))
            && let Ok(targets) = parts.join(",").parse()
        {
            return Self(FilterKind::Targets(targets));
        }
        Self(FilterKind::Env(Box::new(EnvFilter::new(directives))))
    }

    /// The environment filter, if the directives need one.
    fn env(&self) -> Option<&EnvFilter> {
        match &self.0 {
            FilterKind::Env(env) => Some(env),
            FilterKind::Targets(_) => None,
        }
    }

    /// Whether the filter does work whenever a span is entered or left (only directives
    /// that filter by span or field need it).
    pub fn tracks_spans(&self) -> bool {
        self.env().is_some()
    }
}

// As a layer (`metrics::subscriber`) and as a layer's own filter (with trace export): the
// same decisions through either trait; span callbacks reach the environment filter alone.

impl<S> Layer<S> for LogFilter
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        match &self.0 {
            FilterKind::Targets(targets) => Layer::<S>::register_callsite(targets, metadata),
            FilterKind::Env(env) => Layer::<S>::register_callsite(&**env, metadata),
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        match &self.0 {
            FilterKind::Targets(targets) => Layer::<S>::enabled(targets, metadata, ctx),
            FilterKind::Env(env) => Layer::<S>::enabled(&**env, metadata, ctx),
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        match &self.0 {
            FilterKind::Targets(targets) => Layer::<S>::max_level_hint(targets),
            FilterKind::Env(env) => Layer::<S>::max_level_hint(&**env),
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Layer::on_new_span(env, attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Layer::on_record(env, id, values, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Layer::on_enter(env, id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Layer::on_exit(env, id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Layer::on_close(env, id, ctx);
        }
    }
}

impl<S> Filter<S> for LogFilter
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn enabled(&self, metadata: &Metadata<'_>, ctx: &Context<'_, S>) -> bool {
        match &self.0 {
            FilterKind::Targets(targets) => Filter::<S>::enabled(targets, metadata, ctx),
            FilterKind::Env(env) => Filter::<S>::enabled(&**env, metadata, ctx),
        }
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        match &self.0 {
            FilterKind::Targets(targets) => Filter::<S>::callsite_enabled(targets, metadata),
            FilterKind::Env(env) => Filter::<S>::callsite_enabled(&**env, metadata),
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        match &self.0 {
            FilterKind::Targets(targets) => Filter::<S>::max_level_hint(targets),
            FilterKind::Env(env) => Filter::<S>::max_level_hint(&**env),
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Filter::on_new_span(env, attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Filter::on_record(env, id, values, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Filter::on_enter(env, id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Filter::on_exit(env, id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(env) = self.env() {
            Filter::on_close(env, id, ctx);
        }
    }
}
