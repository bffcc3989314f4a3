//! Levels and the ladder they form.

use std::fmt;
use std::sync::Arc;

use brace_core::degrade::{Features, Shape};

use crate::error::InvalidConfig;

/// The message the default ladder's static level answers with.
pub const DEFAULT_STATIC_MESSAGE: &str = "Service temporarily limited";

/// What a level does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelKind {
    /// Calls the inner service with the request reshaped to this [`Shape`].
    Live(Shape),
    /// Answers from the response cache; a miss falls to the next level.
    Cached,
    /// Answers with this message as a normal, complete response, without calling the inner
    /// service.
    Static(Arc<str>),
}

/// One rung of the ladder: a name and what it does.
///
/// In configuration a level is a mapping (`{name: haiku, model: claude-haiku}`, see
/// [`DegradeConfig`](crate::DegradeConfig)) or the bare name of a level of the
/// [standard ladder](Ladder::standard) (`full`, `reduced`, `minimal`, `cached`, `offline`):
///
/// ```
/// use brace_degrade::{DegradeConfig, LevelKind};
///
/// let config: DegradeConfig =
///     serde_json::from_str(r#"{"levels": ["full", "reduced", "offline"]}"#).unwrap();
/// let ladder = config.ladder().unwrap();
/// assert_eq!(ladder.levels()[2].name(), "offline");
/// assert!(matches!(ladder.levels()[2].kind(), LevelKind::Static(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "LevelSpec", into = "LevelConfig")]
pub struct Level {
    name: Arc<str>,
    kind: LevelKind,
}

impl Level {
    /// A level that calls the inner service with requests reshaped to `shape`.
    pub fn live(name: impl Into<Arc<str>>, shape: Shape) -> Self {
        Self {
            name: name.into(),
            kind: LevelKind::Live(shape),
        }
    }

    /// A level that answers from the response cache.
    pub fn cached(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            kind: LevelKind::Cached,
        }
    }

    /// A level that answers every request with `message`.
    pub fn fixed(name: impl Into<Arc<str>>, message: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            kind: LevelKind::Static(message.into()),
        }
    }

    /// The level's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// What the level does.
    pub fn kind(&self) -> &LevelKind {
        &self.kind
    }

    /// `true` if the level calls the inner service.
    pub fn is_live(&self) -> bool {
        matches!(self.kind, LevelKind::Live(_))
    }
}

/// A level as written in configuration: `kind` is `live` (the default), `cached` or
/// `static`; `model`, `max_tokens` and `allow` apply to live levels, `message` to static ones.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct LevelConfig {
    name: String,
    #[serde(default)]
    kind: KindName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allow: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    #[default]
    Live,
    Cached,
    Static,
}

/// A level as written: the name of a standard level, or a whole [`LevelConfig`].
enum LevelSpec {
    Builtin(String),
    Custom(LevelConfig),
}

impl<'de> serde::Deserialize<'de> for LevelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LevelSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "the name of a standard level (full, reduced, minimal, cached, offline) or a \
                     mapping with `name` and `kind`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<LevelSpec, E> {
                Ok(LevelSpec::Builtin(name.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LevelSpec, A::Error> {
                serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(LevelSpec::Custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl TryFrom<LevelSpec> for Level {
    type Error = InvalidConfig;

    fn try_from(spec: LevelSpec) -> Result<Self, InvalidConfig> {
        match spec {
            LevelSpec::Custom(config) => config.try_into(),
            LevelSpec::Builtin(name) => {
                let standard = Ladder::standard();
                let found = standard.levels().iter().find(|level| *level.name == *name);
                found.cloned().ok_or_else(|| {
                    let names: Vec<_> = standard.levels().iter().map(Level::name).collect();
                    InvalidConfig::new(format!(
                        "`{name}` is not a standard level (standard levels: {}); describe it as a \
                         mapping with `name` and `kind`",
                        names.join(", ")
                    ))
                })
            }
        }
    }
}

impl TryFrom<LevelConfig> for Level {
    type Error = InvalidConfig;

    fn try_from(config: LevelConfig) -> Result<Self, InvalidConfig> {
        if config.name.trim().is_empty() {
            return Err(InvalidConfig::new("a level needs a name"));
        }
        let name = config.name.as_str();
        let live_fields =
            config.model.is_some() || config.max_tokens.is_some() || config.allow.is_some();
        match config.kind {
            KindName::Live => {
                if config.message.is_some() {
                    return Err(InvalidConfig::new(format!(
                        "level `{name}`: `message` is for static levels"
                    )));
                }
                Ok(Level::live(
                    name,
                    Shape {
                        model: config.model,
                        max_tokens: config.max_tokens,
                        allow: config.allow.unwrap_or(Features::ALL),
                    },
                ))
            }
            KindName::Cached | KindName::Static if live_fields => Err(InvalidConfig::new(format!(
                "level `{name}`: `model`, `max_tokens` and `allow` are for live levels"
            ))),
            KindName::Cached if config.message.is_some() => Err(InvalidConfig::new(format!(
                "level `{name}`: `message` is for static levels"
            ))),
            KindName::Cached => Ok(Level::cached(name)),
            KindName::Static => Ok(Level::fixed(
                name,
                config
                    .message
                    .unwrap_or_else(|| Arc::from(DEFAULT_STATIC_MESSAGE)),
            )),
        }
    }
}

impl From<Level> for LevelConfig {
    fn from(level: Level) -> Self {
        let mut config = LevelConfig {
            name: level.name.to_string(),
            kind: KindName::Live,
            model: None,
            max_tokens: None,
            allow: None,
            message: None,
        };
        match level.kind {
            LevelKind::Live(shape) => {
                config.model = shape.model;
                config.max_tokens = shape.max_tokens;
                config.allow = (shape.allow != Features::ALL).then_some(shape.allow);
            }
            LevelKind::Cached => config.kind = KindName::Cached,
            LevelKind::Static(message) => {
                config.kind = KindName::Static;
                config.message = Some(message);
            }
        }
        config
    }
}

/// A level's position and name, as the handle and events report it (serialized as
/// `{"index": 3, "name": "cached"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LevelRef {
    index: usize,
    name: Arc<str>,
}

impl LevelRef {
    pub(crate) fn new(index: usize, name: Arc<str>) -> Self {
        Self { index, name }
    }

    /// The position in the ladder, `0` being the top.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The level's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for LevelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An ordered list of levels, from full capability (index 0) down.
///
/// # Example
///
/// ```
/// use brace_degrade::{Ladder, Level};
/// use brace_core::degrade::Shape;
///
/// let ladder = Ladder::new(vec![
///     Level::live("opus", Shape::unchanged()),
///     Level::live("haiku", Shape { model: Some("claude-haiku".into()), ..Shape::unchanged() }),
///     Level::fixed("offline", "try again later"),
/// ])
/// .unwrap();
/// assert_eq!(ladder.index_of("haiku"), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    levels: Arc<[Level]>,
}

impl Default for Ladder {
    fn default() -> Self {
        Self::standard()
    }
}

impl Ladder {
    /// A ladder of these levels, top first.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if there are no levels or two share a name.
    pub fn new(levels: Vec<Level>) -> Result<Self, InvalidConfig> {
        if levels.is_empty() {
            return Err(InvalidConfig::new("the ladder needs at least one level"));
        }
        for (i, level) in levels.iter().enumerate() {
            if levels[..i].iter().any(|other| other.name == level.name) {
                return Err(InvalidConfig::new(format!(
                    "two levels are named `{}`",
                    level.name
                )));
            }
        }
        Ok(Self {
            levels: levels.into(),
        })
    }

    /// The default ladder, five levels:
    ///
    /// | level | does |
    /// |---|---|
    /// | `full` | the request as sent |
    /// | `reduced` | `max_tokens` capped at 1024, no images |
    /// | `minimal` | `max_tokens` capped at 256; no tools, images or response format |
    /// | `cached` | answers from the response cache; a miss falls to `offline` |
    /// | `offline` | "Service temporarily limited", never calling the inner service |
    ///
    /// The default ladder overrides no model, since model names depend on the provider:
    /// give `reduced` and `minimal` a `model` (e.g. a Sonnet and a Haiku) in your own ladder.
    pub fn standard() -> Self {
        let levels = vec![
            Level::live("full", Shape::unchanged()),
            Level::live(
                "reduced",
                Shape {
                    model: None,
                    max_tokens: Some(1024),
                    allow: Features {
                        images: false,
                        ..Features::ALL
                    },
                },
            ),
            Level::live(
                "minimal",
                Shape {
                    model: None,
                    max_tokens: Some(256),
                    allow: Features {
                        tools: false,
                        stream: true,
                        images: false,
                        response_format: false,
                    },
                },
            ),
            Level::cached("cached"),
            Level::fixed("offline", DEFAULT_STATIC_MESSAGE),
        ];
        Self {
            levels: levels.into(),
        }
    }

    /// The levels, top first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// The number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Always `false`: a ladder has at least one level.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The level at `index`.
    pub fn get(&self, index: usize) -> Option<&Level> {
        self.levels.get(index)
    }

    /// The position of the level named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.levels.iter().position(|level| &*level.name == name)
    }

    pub(crate) fn level_ref(&self, index: usize) -> LevelRef {
        LevelRef::new(index, self.levels[index].name.clone())
    }

    /// The nearest live level above `index`.
    pub(crate) fn live_above(&self, index: usize) -> Option<usize> {
        (0..index.min(self.levels.len()))
            .rev()
            .find(|&i| self.levels[i].is_live())
    }
}
