//! `LogFilter` lets through exactly what `EnvFilter` lets through for the same directives,
//! as a layer and as a layer's filter, and keeps `EnvFilter` (span tracking) only for
//! directives that filter by span.

use std::sync::{Arc, Mutex};

use brace_gateway::metrics::LogFilter;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The events that reached the layer: (target, level).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Level)>>>);

impl<S: tracing::Subscriber> Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((metadata.target().to_owned(), *metadata.level()));
    }
}

/// One event per level for one target, inside a `request` span and outside it.
macro_rules! every_level {
    ($target:literal) => {
        tracing::event!(target: $target, Level::TRACE, "t");
        tracing::event!(target: $target, Level::DEBUG, "d");
        tracing::event!(target: $target, Level::INFO, "i");
        tracing::event!(target: $target, Level::WARN, "w");
        tracing::event!(target: $target, Level::ERROR, "e");
        {
            let span = tracing::info_span!(target: "brace_gateway", "request");
            let _entered = span.enter();
            tracing::event!(target: $target, Level::DEBUG, "in a span");
        }
    };
}

fn emit() {
    every_level!("brace_retry");
    every_level!("brace_retry::budget");
    every_level!("hyper");
    every_level!("hyper::proto::h1");
    every_level!("tower_http");
    every_level!("other");
}

/// What `filter` lets through, used as a layer (as `metrics::subscriber` does).
fn as_layer<F>(filter: F) -> Vec<(String, Level)>
where
    F: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(seen.clone());
    tracing::subscriber::with_default(subscriber, emit);
    seen.0.lock().unwrap().clone()
}

/// What `filter` lets through, used as a layer's own filter (as with trace export).
fn as_filter<F>(filter: F) -> Vec<(String, Level)>
where
    F: tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone().with_filter(filter));
    tracing::subscriber::with_default(subscriber, emit);
    seen.0.lock().unwrap().clone()
}

const PLAIN: &[&str] = &[
    "info",
    "debug",
    "off",
    "INFO,brace_retry=TRACE",
    "warn,brace_retry=debug",
    "info,brace_retry=debug,hyper=warn",
    "info,,brace_retry=debug,",
    "info,hyper=warn,hyper::proto=trace",
    "brace_retry",
    "brace_retry=debug,brace_retry::budget=error",
    "trace,hyper=off",
    "error,tower_http=info",
    "info,brace_retry=verbose",
    "info, brace_retry=debug",
];

// One test: tracing registers call sites with every dispatcher alive in the process, and two
// tests making dispatchers on two threads at once race in that registration.
#[test]
fn log_filters_let_through_what_the_environment_filter_does() {
    plain_directives_let_through_what_the_environment_filter_does();
    span_directives_keep_the_environment_filter_and_apply_inside_the_span();
}

fn plain_directives_let_through_what_the_environment_filter_does() {
    for directives in PLAIN {
        let filter = LogFilter::new(directives);
        let expected = as_layer(EnvFilter::new(directives));
        assert_eq!(
            as_layer(LogFilter::new(directives)),
            expected,
            "{directives}"
        );
        assert_eq!(
            as_filter(LogFilter::new(directives)),
            as_filter(EnvFilter::new(directives)),
            "{directives}"
        );
        if *directives != "off" {
            assert!(!expected.is_empty(), "{directives} let nothing through");
        }
        // A directive `Targets` cannot read (an unknown level), and spaces (part of a
        // target to `EnvFilter`), are the environment filter's.
        assert_eq!(
            filter.tracks_spans(),
            directives.contains("verbose") || directives.contains(' '),
            "{directives}"
        );
    }
}

fn span_directives_keep_the_environment_filter_and_apply_inside_the_span() {
    let directives = "warn,brace_gateway[request]=debug";
    let filter = LogFilter::new(directives);
    assert!(filter.tracks_spans());
    let events = as_layer(filter);
    assert_eq!(events, as_layer(EnvFilter::new(directives)));
    // Each target's debug event inside the `request` span gets through; none outside it.
    let debug = events
        .iter()
        .filter(|(_, level)| *level == Level::DEBUG)
        .count();
    assert_eq!(debug, 6, "{events:?}");
}
