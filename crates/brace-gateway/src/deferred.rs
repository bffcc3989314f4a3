//! [`Deferred`]: a log layer's span fields formatted when a line needs them, not when they
//! are recorded.
//!
//! `tracing_subscriber`'s `fmt` layer formats a span's fields into text (or JSON) as each is
//! recorded — at `on_new_span` and at every `on_record` — so that a line written inside the
//! span can print them. Each request's span records about twenty fields and most requests
//! write no line at all, so that formatting was work for nothing: about a tenth of the
//! gateway's instructions per request (BENCHMARKS.md, issue 22's fifth pass). [`Deferred`]
//! wraps such a layer: it keeps the recorded values as they came (numbers as numbers,
//! strings copied, `Debug`/`Display` values as their text), and hands them to the inner layer
//! — as the same `on_new_span` and `on_record` calls, in the same order — only when an event
//! is about to be written inside the span. The inner layer then formats exactly what it
//! would have formatted eagerly, so every line is byte for byte the same.
//!
//! Limits: the inner layer's span events (`with_span_events`) would see a span before its
//! fields are handed over, so it is for layers without them (the gateway's); an error value
//! is kept as its `Display` text and handed over as a `Debug` value of that text, which is
//! what a field formatter without its own `record_error` (the gateway's text and JSON ones)
//! writes for it anyway.

use std::fmt::{self, Write as _};
use std::ops::Range;

use tracing::field::{Field, Value, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// A layer whose span fields reach `L` only when an event is written inside the span (see
/// the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Deferred<L> {
    inner: L,
}

impl<L> Deferred<L> {
    pub(crate) fn new(inner: L) -> Self {
        Self { inner }
    }
}

/// The values recorded on a span and not yet handed to the inner layer: the span's
/// attributes, then each `record` call's values after a [`Kind::Record`] mark.
struct Kept {
    /// Each value with its field's index in the span's field set.
    values: Vec<(usize, Kind)>,
    /// The text of every string, `Debug` and `Display` value, one after another.
    text: String,
}

/// A kept value (24 bytes: the 128-bit integers are kept in halves, so that they do not
/// align every value to 16 bytes).
enum Kind {
    I64(i64),
    U64(u64),
    I128(i64, u64),
    U128(u64, u64),
    F64(f64),
    Bool(bool),
    /// A string, recorded as one (`record_str`).
    Str(Range<usize>),
    /// The text a `Debug` (or `Display`, or error) value wrote.
    Debug(Range<usize>),
    /// Not a value: a `record` call's values follow.
    Record,
}

// The size the docs of `Kind` state.
const _: () = assert!(std::mem::size_of::<Kind>() == 24);

impl Kept {
    /// Keeps a `record` call's values.
    fn record(&mut self, values: &Record<'_>) {
        self.values.push((0, Kind::Record));
        values.record(self);
    }

    fn keep_text(&mut self, field: &Field, debug: bool, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let range = start..self.text.len();
        let kind = if debug {
            Kind::Debug(range)
        } else {
            Kind::Str(range)
        };
        self.values.push((field.index(), kind));
    }

    /// The attributes' values, then each `record` call's.
    fn batches(&self) -> impl Iterator<Item = &[(usize, Kind)]> {
        self.values.split(|(_, kind)| matches!(kind, Kind::Record))
    }
}

impl Visit for Kept {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values.push((field.index(), Kind::I64(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values.push((field.index(), Kind::U64(value)));
    }

    #[allow(clippy::cast_possible_truncation)] // the halves, taken apart on purpose
    fn record_i128(&mut self, field: &Field, value: i128) {
        let kind = Kind::I128((value >> 64) as i64, value as u64);
        self.values.push((field.index(), kind));
    }

    #[allow(clippy::cast_possible_truncation)] // the halves, taken apart on purpose
    fn record_u128(&mut self, field: &Field, value: u128) {
        let kind = Kind::U128((value >> 64) as u64, value as u64);
        self.values.push((field.index(), kind));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values.push((field.index(), Kind::F64(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values.push((field.index(), Kind::Bool(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep_text(field, false, |text| text.push_str(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.keep_text(field, true, |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.keep_text(field, true, |text| {
            let _ = write!(text, "{value:?}");
        });
    }
}

/// Text that a `Debug` value wrote, written again as it was.
struct Written<'a>(&'a str);

impl fmt::Debug for Written<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A kept value as a value to record again.
enum Again<'a> {
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Debug(tracing::field::DebugValue<Written<'a>>),
}

impl<'a> Again<'a> {
    /// `kind`'s value again; `None` for a mark between batches (never handed over: the
    /// batches are split on them).
    fn new(kind: &Kind, text: &'a str) -> Option<Self> {
        Some(match kind {
            Kind::I64(value) => Self::I64(*value),
            Kind::U64(value) => Self::U64(*value),
            Kind::I128(high, low) => Self::I128(i128::from(*high) << 64 | i128::from(*low)),
            Kind::U128(high, low) => Self::U128(u128::from(*high) << 64 | u128::from(*low)),
            Kind::F64(value) => Self::F64(*value),
            Kind::Bool(value) => Self::Bool(*value),
            Kind::Str(range) => Self::Str(&text[range.clone()]),
            Kind::Debug(range) => Self::Debug(tracing::field::debug(Written(&text[range.clone()]))),
            Kind::Record => return None,
        })
    }

    fn as_value(&self) -> &dyn Value {
        match self {
            Self::I64(value) => value,
            Self::U64(value) => value,
            Self::I128(value) => value,
            Self::U128(value) => value,
            Self::F64(value) => value,
            Self::Bool(value) => value,
            Self::Str(value) => value,
            Self::Debug(value) => value,
        }
    }
}

/// The most values `tracing` puts in one value set (its arrays of field/value pairs go up to
/// 32); a larger batch is handed over in parts.
const MOST: usize = 32;

/// Hands `values` over as value sets of `metadata`'s fields, at most [`MOST`] at a time.
fn as_value_sets(
    metadata: &'static Metadata<'static>,
    all: &[Field],
    values: &[(usize, Kind)],
    text: &str,
    mut each: impl FnMut(&tracing::field::ValueSet<'_>),
) {
    let fields = metadata.fields();
    // A span without fields records nothing; its (empty) attributes still go over once.
    let Some(pad) = fields.iter().next() else {
        let none: [(&Field, Option<&dyn Value>); 0] = [];
        each(&fields.value_set(&none));
        return;
    };
    let mut parts = values.chunks(MOST).peekable();
    if parts.peek().is_none() {
        let pairs: [(&Field, Option<&dyn Value>); 1] = [(&pad, None)];
        each(&fields.value_set(&pairs));
        return;
    }
    for part in parts {
        let again: Vec<Option<Again<'_>>> = part
            .iter()
            .map(|(_, kind)| Again::new(kind, text))
            .collect();
        let mut pairs: [(&Field, Option<&dyn Value>); MOST] = [(&pad, None); MOST];
        for (pair, ((index, _), value)) in pairs.iter_mut().zip(part.iter().zip(&again)) {
            *pair = (&all[*index], value.as_ref().map(Again::as_value));
        }
        each(&fields.value_set(&pairs));
    }
}

impl<L> Deferred<L> {
    /// Hands the values kept on `span` to the inner layer (once; later records go straight
    /// to it).
    fn hand_over<S>(&self, span: &SpanRef<'_, S>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        L: Layer<S>,
    {
        // Taken out first: the inner layer takes the span's extensions itself.
        let Some(kept) = span.extensions_mut().remove::<Kept>() else {
            return;
        };
        let metadata = span.metadata();
        let all: Vec<Field> = metadata.fields().iter().collect();
        let id = span.id();
        let mut first = true;
        for values in kept.batches() {
            as_value_sets(metadata, &all, values, &kept.text, |set| {
                if std::mem::take(&mut first) {
                    self.inner
                        .on_new_span(&Attributes::new(metadata, set), &id, ctx.clone());
                } else {
                    self.inner.on_record(&id, &Record::new(set), ctx.clone());
                }
            });
        }
    }
}

impl<S, L> Layer<S> for Deferred<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Sized for one value per field and a few record marks: grown (reallocated) rarely.
        let mut kept = Kept {
            values: Vec::with_capacity(attrs.metadata().fields().len() + 4),
            text: String::with_capacity(128),
        };
        attrs.record(&mut kept);
        span.extensions_mut().insert(kept);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if let Some(kept) = span.extensions_mut().get_mut::<Kept>() {
            kept.record(values);
            return;
        }
        drop(span);
        // Handed over already: the inner layer takes it from here.
        self.inner.on_record(id, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                self.hand_over(&span, &ctx);
            }
        }
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.inner.max_level_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::field::Empty;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::bounded::EscapedFields;

    /// Lines written into a shared buffer.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Lines {
        type Writer = Self;

        fn make_writer(&self) -> Self {
            self.clone()
        }
    }

    /// Spans with every kind of value, recorded before and after lines are written inside
    /// them, nested, with an explicit parent, a span that writes nothing, a span without
    /// fields, a control character to escape and an error value.
    fn scenario() {
        let request = tracing::info_span!(
            "request",
            method = %"POST",
            path = "/v1/chat/completions",
            id = 7u64,
            key = Empty,
            flag = true,
            ratio = 0.5f64,
            big = 1u128 << 100,
            small = -(1i128 << 100),
            neg = -3i64,
            list = ?vec![1, 2],
            late = Empty,
        );
        let entered = request.enter();
        request.record("key", "k-1");
        request.record("late", 9u64);
        tracing::info!("before the attempt");
        // Recorded after the span's fields were handed over: straight to the inner layer.
        request.record("flag", false);
        let attempt = tracing::info_span!("attempt", n = 1u64, provider = Empty);
        attempt.record("provider", "pri\nmary \u{1b}[31m");
        attempt.in_scope(|| {
            tracing::warn!(error = %io::Error::other("boom"), "failed");
        });
        let quiet = tracing::info_span!("quiet", n = 2u64, model = Empty);
        quiet.record("n", 3u64);
        quiet.record("model", "never shown");
        drop(quiet);
        tracing::error!(parent: &attempt, detail = "explicit parent", "explicit");
        tracing::info_span!("no_fields").in_scope(|| tracing::info!("in a span without fields"));
        let failing = tracing::info_span!("failing", cause = Empty);
        let err = io::Error::other("the cause");
        failing.record("cause", &err as &(dyn std::error::Error + 'static));
        failing.in_scope(|| tracing::info!(answer = 42, "with an error recorded"));
        drop(entered);
        tracing::info!("outside every span");
    }

    fn text_layer(lines: Lines) -> impl Layer<tracing_subscriber::Registry> {
        tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .with_writer(lines)
    }

    fn json_layer(lines: Lines) -> impl Layer<tracing_subscriber::Registry> {
        tracing_subscriber::fmt::layer()
            .without_time()
            .json()
            .with_span_list(true)
            .fmt_fields(JsonFields::new())
            .with_writer(lines)
    }

    fn run(layer: impl Layer<tracing_subscriber::Registry> + Send + Sync + 'static) {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, scenario);
    }

    #[test]
    fn text_lines_are_the_same_as_the_eager_layers() {
        let (eager, deferred) = (Lines::default(), Lines::default());
        run(text_layer(eager.clone()));
        run(Deferred::new(text_layer(deferred.clone())));
        let written = deferred.text();
        assert_eq!(written, eager.text());
        // The scenario's lines, with the fields they carry (not empty by accident).
        assert_eq!(written.lines().count(), 6, "{written}");
        assert!(
            written.contains(r#"request{method=POST path="/v1/chat/completions" id=7 flag=true ratio=0.5 big=1267650600228229401496703205376 small=-1267650600228229401496703205376 neg=-3 list=[1, 2] key="k-1" late=9 flag=false}:attempt{n=1 provider="pri\nmary \u{1b}[31m"}"#),
            "{written}"
        );
        assert!(written.contains("failing{cause=the cause}"), "{written}");
        assert!(!written.contains("never shown"), "{written}");
    }

    #[test]
    fn json_lines_are_the_same_as_the_eager_layers() {
        let (eager, deferred) = (Lines::default(), Lines::default());
        run(json_layer(eager.clone()));
        run(Deferred::new(json_layer(deferred.clone())));
        let written = deferred.text();
        assert_eq!(written, eager.text());
        assert_eq!(written.lines().count(), 6, "{written}");
        assert!(
            written.contains(r#""provider":"pri\nmary \u001b[31m""#),
            "{written}"
        );
        assert!(written.contains(r#""key":"k-1""#), "{written}");
    }

    /// Notes, as each span closes, whether the inner layer formatted its fields.
    #[derive(Clone, Default)]
    struct Probe(Arc<Mutex<Vec<(&'static str, bool)>>>);

    impl<S> Layer<S> for Probe
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let span = ctx.span(&id).unwrap();
            let formatted = span
                .extensions()
                .get::<tracing_subscriber::fmt::FormattedFields<EscapedFields>>()
                .is_some();
            self.0.lock().unwrap().push((span.name(), formatted));
        }
    }

    #[test]
    fn fields_are_formatted_only_for_spans_a_line_is_written_in() {
        let probe = Probe::default();
        let subscriber = tracing_subscriber::registry()
            .with(Deferred::new(text_layer(Lines::default())))
            .with(probe.clone());
        tracing::subscriber::with_default(subscriber, || {
            let silent = tracing::info_span!("silent", model = Empty, tokens = Empty);
            silent.record("model", "m");
            silent.record("tokens", 12u64);
            drop(silent);
            tracing::info_span!("logged", n = 1u64).in_scope(|| tracing::info!("a line"));
        });
        assert_eq!(
            *probe.0.lock().unwrap(),
            [("silent", false), ("logged", true)]
        );
    }
}
