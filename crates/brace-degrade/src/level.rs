//! Levels and the ladder they form.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::DegradeConfigError;

/// The message the default ladder's static level answers with.
pub const DEFAULT_STATIC_MESSAGE: &str = "Service temporarily limited";

/// The shape of a request type that levels do not reshape: configured as nothing (a level
/// with no reshaping fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoShape {}

/// What a level does with a request; `Sh` is how a live level reshapes it (the request
/// type's [`Degradable::Shape`](brace_core::degrade::Degradable::Shape)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelKind<Sh = NoShape> {
    /// Calls the inner service with the request reshaped to this shape.
    Live(Sh),
    /// Answers from the response cache; a miss falls to the next level.
    Cached,
    /// Answers with this message as a normal, complete response, without calling the inner
    /// service.
    Static(Arc<str>),
}

/// One rung of the ladder: a name and what it does.
///
/// In configuration a level is `{name, kind, message}` with the shape's own fields beside
/// them (for chat requests `model`, `max_tokens` and `allow`): `kind` is `live` (the
/// default), `cached` or `static`; the shape's fields apply to live levels, `message` to
/// static ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "LevelConfig<Sh>",
    into = "LevelConfig<Sh>",
    bound(
        serialize = "Sh: Clone + Default + PartialEq + Serialize",
        deserialize = "Sh: Default + PartialEq + Deserialize<'de>"
    )
)]
pub struct Level<Sh = NoShape> {
    name: Arc<str>,
    kind: LevelKind<Sh>,
}

impl<Sh> Level<Sh> {
    /// A level that calls the inner service with requests reshaped to `shape`.
    pub fn live(name: impl Into<Arc<str>>, shape: Sh) -> Self {
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
    pub fn kind(&self) -> &LevelKind<Sh> {
        &self.kind
    }

    /// `true` if the level calls the inner service.
    pub fn is_live(&self) -> bool {
        matches!(self.kind, LevelKind::Live(_))
    }

    /// The same level without its shape: what the level state and handle keep.
    pub(crate) fn without_shape(&self) -> Level {
        Level {
            name: self.name.clone(),
            kind: match &self.kind {
                LevelKind::Live(_) => LevelKind::Live(NoShape {}),
                LevelKind::Cached => LevelKind::Cached,
                LevelKind::Static(message) => LevelKind::Static(message.clone()),
            },
        }
    }
}

/// A level as written in configuration (see [`Level`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LevelConfig<Sh> {
    name: String,
    #[serde(default)]
    kind: KindName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<Arc<str>>,
    // The shape's fields, beside the level's own.
    #[serde(flatten)]
    shape: Sh,
    // What neither the level nor its shape knows (a flattened struct ignores unknown keys,
    // so they are collected here and refused).
    #[serde(flatten, skip_serializing)]
    #[allow(clippy::zero_sized_map_values)] // only the keys matter, to name them
    unknown: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    #[default]
    Live,
    Cached,
    Static,
}

impl<Sh: Default + PartialEq> TryFrom<LevelConfig<Sh>> for Level<Sh> {
    type Error = DegradeConfigError;

    fn try_from(config: LevelConfig<Sh>) -> Result<Self, DegradeConfigError> {
        if config.name.trim().is_empty() {
            return Err(DegradeConfigError::new("a level needs a name"));
        }
        let name = config.name.as_str();
        if let Some(field) = config.unknown.keys().next() {
            return Err(DegradeConfigError::new(format!(
                "level `{name}`: unknown field `{field}`"
            )));
        }
        let reshapes = config.shape != Sh::default();
        match config.kind {
            KindName::Live => {
                if config.message.is_some() {
                    return Err(DegradeConfigError::new(format!(
                        "level `{name}`: `message` is for static levels"
                    )));
                }
                Ok(Level::live(name, config.shape))
            }
            KindName::Cached | KindName::Static if reshapes => {
                Err(DegradeConfigError::new(format!(
                    "level `{name}`: how a request is reshaped (`model`, `max_tokens`, \
                     `allow`, …) is for live levels"
                )))
            }
            KindName::Cached if config.message.is_some() => Err(DegradeConfigError::new(format!(
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

impl<Sh: Default> From<Level<Sh>> for LevelConfig<Sh> {
    fn from(level: Level<Sh>) -> Self {
        let mut config = LevelConfig {
            name: level.name.to_string(),
            kind: KindName::Live,
            message: None,
            shape: Sh::default(),
            unknown: BTreeMap::new(),
        };
        match level.kind {
            LevelKind::Live(shape) => config.shape = shape,
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

/// An ordered list of levels, from full capability (index 0) down; `Sh` is how its live
/// levels reshape a request.
///
/// # Example
///
/// ```
/// use brace_degrade::{Ladder, Level, NoShape};
///
/// let ladder = Ladder::new(vec![
///     Level::live("live", NoShape {}),
///     Level::cached("cached"),
///     Level::fixed("offline", "try again later"),
/// ])
/// .unwrap();
/// assert_eq!(ladder.index_of("cached"), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder<Sh = NoShape> {
    levels: Arc<[Level<Sh>]>,
}

impl<Sh: Default> Default for Ladder<Sh> {
    fn default() -> Self {
        Self::standard()
    }
}

impl<Sh> Ladder<Sh> {
    /// A ladder of these levels, top first.
    ///
    /// # Errors
    ///
    /// [`DegradeConfigError`] if there are no levels or two share a name.
    pub fn new(levels: Vec<Level<Sh>>) -> Result<Self, DegradeConfigError> {
        if levels.is_empty() {
            return Err(DegradeConfigError::new(
                "the ladder needs at least one level",
            ));
        }
        for (i, level) in levels.iter().enumerate() {
            if levels[..i].iter().any(|other| other.name == level.name) {
                return Err(DegradeConfigError::new(format!(
                    "two levels are named `{}`",
                    level.name
                )));
            }
        }
        Ok(Self {
            levels: levels.into(),
        })
    }

    /// These live levels (name and shape, top first), then a `cached` level and a static
    /// `offline` one answering [`DEFAULT_STATIC_MESSAGE`].
    ///
    /// # Errors
    ///
    /// [`DegradeConfigError`] if two levels share a name.
    pub fn with_live_levels(
        live: impl IntoIterator<Item = (impl Into<Arc<str>>, Sh)>,
    ) -> Result<Self, DegradeConfigError> {
        let mut levels: Vec<Level<Sh>> = live
            .into_iter()
            .map(|(name, shape)| Level::live(name, shape))
            .collect();
        levels.push(Level::cached("cached"));
        levels.push(Level::fixed("offline", DEFAULT_STATIC_MESSAGE));
        Self::new(levels)
    }

    /// The default ladder, three levels:
    ///
    /// | level | does |
    /// |---|---|
    /// | `full` | the request as sent (the default shape) |
    /// | `cached` | answers from the response cache; a miss falls to `offline` |
    /// | `offline` | "Service temporarily limited", never calling the inner service |
    ///
    /// What lower live levels would change is the request type's business: for chat
    /// requests, `Ladder::with_live_levels(brace_llm::degrade::Shape::standard_levels())`
    /// is the gateway's five-level default (`full`, `reduced`, `minimal`, `cached`,
    /// `offline`).
    pub fn standard() -> Self
    where
        Sh: Default,
    {
        let levels = vec![
            Level::live("full", Sh::default()),
            Level::cached("cached"),
            Level::fixed("offline", DEFAULT_STATIC_MESSAGE),
        ];
        Self {
            levels: levels.into(),
        }
    }

    /// The levels, top first.
    pub fn levels(&self) -> &[Level<Sh>] {
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
    pub fn get(&self, index: usize) -> Option<&Level<Sh>> {
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

    /// The same ladder without its shapes: what the level state and handle keep.
    pub(crate) fn without_shapes(&self) -> Ladder {
        Ladder {
            levels: self.levels.iter().map(Level::without_shape).collect(),
        }
    }
}
