//! Values that come from upstream (a provider's body, its error text) made safe to put in
//! a response header or a log line.

use std::fmt;

use http::HeaderValue;

/// The longest header value taken from an upstream answer, in bytes.
pub(crate) const MAX_HEADER_VALUE: usize = 256;

/// A header value from text an upstream chose: control characters removed and cut to
/// [`MAX_HEADER_VALUE`] bytes (at a character boundary). `None` if nothing is left.
pub(crate) fn header_value(text: &str) -> Option<HeaderValue> {
    // The usual case, without a copy to clean: short, visible ASCII, no surrounding space.
    let bytes = text.as_bytes();
    if !bytes.is_empty()
        && bytes.len() <= MAX_HEADER_VALUE
        && bytes.iter().all(|&b| b.is_ascii_graphic() || b == b' ')
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' '
    {
        return HeaderValue::from_str(text).ok();
    }
    let mut clean = String::with_capacity(text.len().min(MAX_HEADER_VALUE));
    for ch in text.chars().filter(|ch| !ch.is_control()) {
        if clean.len() + ch.len_utf8() > MAX_HEADER_VALUE {
            break;
        }
        clean.push(ch);
    }
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    HeaderValue::from_str(clean).ok()
}

/// Writes text through to `inner` with control characters escaped (`\r`, `\n`, `\t`,
/// `\u{1b}`, …), so that a value from upstream can neither forge a log line nor reach a
/// terminal as an escape sequence.
pub(crate) struct EscapingWriter<W>(pub(crate) W);

impl<W: fmt::Write> fmt::Write for EscapingWriter<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        // A byte scan, not a character one (this runs over every field of every log line):
        // a control character (U+0000–U+001F, U+007F–U+009F) starts with a byte below 0x20,
        // 0x7F, or 0xC2 (U+0080–U+00BF); the candidate is then decoded and checked.
        let mut from = 0;
        while let Some(found) = rest.as_bytes()[from..]
            .iter()
            .position(|&b| b < 0x20 || b == 0x7f || b == 0xc2)
        {
            let at = from + found;
            let ch = rest[at..]
                .chars()
                .next()
                .expect("a candidate byte starts a character");
            if !ch.is_control() {
                from = at + ch.len_utf8();
                continue;
            }
            self.0.write_str(&rest[..at])?;
            match ch {
                '\r' => self.0.write_str("\\r")?,
                '\n' => self.0.write_str("\\n")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = &rest[at + ch.len_utf8()..];
            from = 0;
        }
        self.0.write_str(rest)
    }
}

/// Text logs' field formatter: every field — the message included, and fields of other
/// crates' events — written as `tracing_subscriber`'s default formatter writes it, through
/// an [`EscapingWriter`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer: EscapingWriter(writer),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldVisitor<'writer> {
    writer: EscapingWriter<tracing_subscriber::fmt::format::Writer<'writer>>,
    first: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    /// Writes `name=` and then `value` as they are, past the escaping writer: for values
    /// whose `Debug` form is known to hold no control character.
    fn write_plain(&mut self, field: &tracing::field::Field, value: &[&str]) {
        if self.result.is_err() {
            return;
        }
        let out = &mut self.writer.0;
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            out.write_str(separator)?;
            out.write_str(name)?;
            out.write_char('=')?;
            value.iter().try_for_each(|part| out.write_str(part))
        })();
    }
}

/// `text`'s `Debug` form is `"text"` with nothing escaped: printable ASCII without quotes
/// or backslashes.
fn debug_is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

// The common values (plain strings, integers, booleans) are written without going through
// `fmt`: the same text `record_debug` writes, at a fraction of the cost (the request span's
// fields are formatted on every request, whether or not a line is written).
impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() != "message" && debug_is_plain(value) {
            self.write_plain(field, &["\"", value, "\""]);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        self.write_plain(field, &[itoa::Buffer::new().format(value)]);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        self.write_plain(field, &[itoa::Buffer::new().format(value)]);
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        self.write_plain(field, &[if value { "true" } else { "false" }]);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use std::fmt::Write;

        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value:?}")
        } else {
            // A raw identifier (`r#type`) is named without its prefix, as the default
            // formatter does.
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={value:?}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_cut_and_lose_control_characters() {
        let huge = "m".repeat(100 * 1024);
        let value = header_value(&huge).unwrap();
        assert_eq!(value.len(), MAX_HEADER_VALUE);
        assert_eq!(header_value("gpt\r\nx-evil: 1").unwrap(), "gptx-evil: 1");
        assert_eq!(header_value("\u{1b}[31mred").unwrap(), "[31mred");
        // A multi-byte character is never split.
        let accents = "é".repeat(200);
        let value = header_value(&accents).unwrap();
        assert_eq!(value.len(), 256);
        assert!(std::str::from_utf8(value.as_bytes()).is_ok());
        assert_eq!(header_value("\n\r"), None);
        // The common case takes a shortcut with the same result.
        assert_eq!(
            header_value("gpt-4o-mini 2024").unwrap(),
            "gpt-4o-mini 2024"
        );
        assert_eq!(header_value(" padded ").unwrap(), "padded");
        assert_eq!(header_value(" "), None);
    }

    #[test]
    fn escaped_text_has_no_line_breaks_or_escapes() {
        use std::fmt::Write;

        let mut out = String::new();
        EscapingWriter(&mut out)
            .write_str("boom\r\n2025-01-01 INFO forged\u{1b}[0m\ttab")
            .unwrap();
        assert_eq!(out, "boom\\r\\n2025-01-01 INFO forged\\u{1b}[0m\\ttab");

        // C1 controls (U+0080–U+009F, two bytes from 0xC2) are escaped; the other
        // characters from 0xC2 and every other non-ASCII character pass as they are.
        let mut out = String::new();
        EscapingWriter(&mut out)
            .write_str("a\u{85}b\u{9b}31m c\u{a0}d \u{a2} é ü\u{7f}z\u{0}")
            .unwrap();
        assert_eq!(out, "a\\u{85}b\\u{9b}31m c\u{a0}d \u{a2} é ü\\u{7f}z\\u{0}");
        let plain = "no controls at all: ünïcödé ¢ and ASCII";
        let mut out = String::new();
        EscapingWriter(&mut out).write_str(plain).unwrap();
        assert_eq!(out, plain);
    }

    /// Formats `record` with [`EscapedFields`] and, for comparison, with every value sent
    /// through `record_debug` (the formatter's general path).
    fn both_ways(record: impl Fn(&mut dyn tracing::field::Visit)) -> (String, String) {
        struct DebugOnly<'a, 'w>(&'a mut FieldVisitor<'w>);
        impl tracing::field::Visit for DebugOnly<'_, '_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                self.0.record_debug(field, value);
            }
        }
        let mut fast = String::new();
        let mut slow = String::new();
        for (out, general) in [(&mut fast, false), (&mut slow, true)] {
            let mut visitor = FieldVisitor {
                writer: EscapingWriter(tracing_subscriber::fmt::format::Writer::new(out)),
                first: true,
                result: Ok(()),
            };
            if general {
                record(&mut DebugOnly(&mut visitor));
            } else {
                record(&mut visitor);
            }
            visitor.result.unwrap();
        }
        (fast, slow)
    }

    /// A callsite of its own for the fields the test records (an event's, at info level).
    struct Fields;
    impl tracing::callsite::Callsite for Fields {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            &METADATA
        }
    }
    static CALLSITE: Fields = Fields;
    static METADATA: tracing::Metadata<'static> = tracing::Metadata::new(
        "bounded test",
        module_path!(),
        tracing::Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        tracing::field::FieldSet::new(
            &["message", "model", "r#type", "count", "delta", "hit"],
            tracing::callsite::Identifier(&CALLSITE),
        ),
        tracing::metadata::Kind::EVENT,
    );

    fn field(name: &str) -> tracing::field::Field {
        use tracing::callsite::Callsite as _;

        CALLSITE.metadata().fields().field(name).unwrap()
    }

    #[test]
    fn plain_values_are_written_as_the_general_path_writes_them() {
        for text in [
            "gpt-4o",
            "",
            "with space",
            "q\"uote",
            "back\\slash",
            "line\nbreak",
            "é",
        ] {
            let (fast, slow) = both_ways(|v| {
                v.record_str(&field("model"), text);
                v.record_str(&field("r#type"), text);
                v.record_str(&field("message"), text);
            });
            assert_eq!(fast, slow, "{text:?}");
        }
        for number in [0_i64, 7, -12, i64::MIN, i64::MAX] {
            let (fast, slow) = both_ways(|v| {
                v.record_i64(&field("count"), number);
                v.record_u64(&field("delta"), number.unsigned_abs());
                v.record_i64(&field("message"), number);
            });
            assert_eq!(fast, slow, "{number}");
        }
        let (fast, slow) = both_ways(|v| {
            v.record_bool(&field("hit"), true);
            v.record_bool(&field("hit"), false);
        });
        assert_eq!(fast, slow);
        assert_eq!(fast, "hit=true hit=false");
    }

    proptest::proptest! {
        /// The byte scan escapes exactly what a character-by-character pass escapes.
        #[test]
        fn escaping_matches_a_character_by_character_pass(text in "\\PC*|.*|[\\x00-\\x{ff}]*") {
            use std::fmt::Write;

            let mut fast = String::new();
            EscapingWriter(&mut fast).write_str(&text).unwrap();
            let mut slow = String::new();
            for ch in text.chars() {
                match ch {
                    '\r' => slow.push_str("\\r"),
                    '\n' => slow.push_str("\\n"),
                    '\t' => slow.push_str("\\t"),
                    ch if ch.is_control() => write!(slow, "\\u{{{:x}}}", u32::from(ch)).unwrap(),
                    ch => slow.push(ch),
                }
            }
            proptest::prop_assert_eq!(fast, slow);
        }
    }
}
