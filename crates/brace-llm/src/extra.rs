//! Deserialising a wire type that keeps its unknown fields, without `#[serde(flatten)]`.
//!
//! A `#[serde(flatten)]` field makes serde read the whole object into an intermediate tree
//! first (every key and string copied into it), then read the struct out of that tree — and
//! a flattened type nested in another does it again at every level: a completion's choices,
//! their messages and its usage were each read twice. [`with_extra!`] writes the visitor
//! serde would write without the flatten: known fields are read straight from the input,
//! every other field goes into the type's `extra` map as it came.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A map key, borrowed from the input when the input allows it (no escapes).
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key)))
    }
}

/// Implements `Deserialize` for a struct of named fields and an `extra: Extra` that
/// collects every field not named, as `#[derive(Deserialize)]` with `#[serde(flatten)]
/// extra` would: a known field given twice is an error, a required one missing is an error
/// (both worded as serde words them), an unknown one is kept in `extra` (the last of a
/// repeated one wins).
///
/// Each field is `name: Type = how`, where `how` is `required`, `default`
/// (`Default::default()` when absent) or a parenthesised expression (its value when
/// absent). `expecting` is what an error says was expected (`"struct Name"`, as serde's).
macro_rules! with_extra {
    ($ty:ident, $expecting:literal, { $($field:ident : $fty:ty = $how:tt),* $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                struct FieldsVisitor;

                impl<'de> ::serde::de::Visitor<'de> for FieldsVisitor {
                    type Value = $ty;

                    fn expecting(
                        &self,
                        f: &mut ::std::fmt::Formatter<'_>,
                    ) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> ::std::result::Result<$ty, A::Error> {
                        $(let mut $field: ::std::option::Option<$fty> = None;)*
                        let mut extra = $crate::types::Extra::new();
                        while let Some($crate::extra::Key(key)) = map.next_key()? {
                            match &*key {
                                $(stringify!($field) => {
                                    if $field.is_some() {
                                        return Err(<A::Error as ::serde::de::Error>::duplicate_field(
                                            stringify!($field),
                                        ));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value = map.next_value()?;
                                    extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: $crate::extra::with_extra!(@absent $field, $how, A),)*
                            extra,
                        })
                    }
                }

                deserializer.deserialize_map(FieldsVisitor)
            }
        }
    };
    (@absent $field:ident, required, $a:ident) => {
        match $field {
            Some(value) => value,
            None => {
                return Err(<$a::Error as ::serde::de::Error>::missing_field(stringify!($field)))
            }
        }
    };
    (@absent $field:ident, default, $a:ident) => {
        $field.unwrap_or_default()
    };
    (@absent $field:ident, ($default:expr), $a:ident) => {
        $field.unwrap_or_else(|| $default)
    };
}

pub(crate) use with_extra;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::types::{ChatChunk, ChatCompletion, ChatRequest, Message, Usage};

    #[test]
    fn known_fields_are_read_and_unknown_ones_kept_at_every_level() {
        let body = json!({
            "id": "c1",
            "model": "m",
            "created": 7,
            "system_fingerprint": "fp",
            "choices": [{
                "index": 0,
                "logprobs": null,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi", "refusal": null}
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        });
        let completion: ChatCompletion = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(completion.object, "chat.completion");
        assert_eq!(completion.created, 7);
        assert_eq!(completion.extra["system_fingerprint"], "fp");
        let choice = &completion.choices[0];
        assert!(choice.extra.contains_key("logprobs"));
        assert_eq!(choice.message.text(), "hi");
        assert!(choice.message.extra.contains_key("refusal"));
        let usage = completion.usage.as_ref().unwrap();
        assert_eq!(usage.total_tokens, 3);
        assert_eq!(usage.extra["prompt_tokens_details"]["cached_tokens"], 0);
        // And back: what came in goes out (plus the defaulted `object`).
        let mut expected = body;
        expected["object"] = json!("chat.completion");
        assert_eq!(serde_json::to_value(&completion).unwrap(), expected);
    }

    #[test]
    fn a_missing_required_field_and_a_repeated_known_one_are_errors_serde_words() {
        let missing = serde_json::from_str::<ChatRequest>(r#"{"model":"m"}"#).unwrap_err();
        assert!(
            missing.to_string().starts_with("missing field `messages`"),
            "{missing}"
        );
        let missing = serde_json::from_str::<Message>(r#"{"content":"x"}"#).unwrap_err();
        assert!(
            missing.to_string().starts_with("missing field `role`"),
            "{missing}"
        );
        let twice =
            serde_json::from_str::<Usage>(r#"{"prompt_tokens":1,"prompt_tokens":2}"#).unwrap_err();
        assert!(
            twice
                .to_string()
                .starts_with("duplicate field `prompt_tokens`"),
            "{twice}"
        );
        let wrong = serde_json::from_str::<ChatRequest>("[]").unwrap_err();
        assert!(
            wrong.to_string().contains("expected struct ChatRequest"),
            "{wrong}"
        );
        let bad_value =
            serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[],"max_tokens":"x"}"#)
                .unwrap_err();
        assert!(
            bad_value.to_string().contains("expected u32"),
            "{bad_value}"
        );
    }

    #[test]
    fn an_escaped_key_is_still_the_field_it_names_and_an_unknown_repeat_keeps_the_last() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"mod\u0065l":"m","messages":[{"role":"user","content":"hi"}],"x":1,"x":2}"#,
        )
        .unwrap();
        assert_eq!(request.model.as_str(), "m");
        assert_eq!(request.options().extra["x"], 2);
    }

    #[test]
    fn a_chunk_defaults_what_it_leaves_out() {
        let chunk: ChatChunk =
            serde_json::from_str(r#"{"id":"c","choices":[{"delta":{}}]}"#).unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.model, "");
        assert_eq!(chunk.choices[0].index, 0);
        assert!(!chunk.has_content());
    }
}
