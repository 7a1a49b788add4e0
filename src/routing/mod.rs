//! Dialplan: which number goes where.
//!
//! # What this module owns
//!
//! - the dialplan file format (`dialplans/*.toml`) and its validation, with
//!   the line at fault in every error;
//! - matching a dialled number against the ordered routes, captures and
//!   rewriting;
//! - number normalisation (separators, E.164, national form) for the site's
//!   numbering plan;
//! - a cheap, swappable snapshot ([`DialplanHandle`]) so a reload never
//!   disturbs calls in progress.
//!
//! # What it must not touch
//!
//! It is pure (no I/O, no clock, no globals). It does not look users up (a
//! [`Target::User`] is only an extension string; whether a user has it, and
//! where they are registered, is the store's and registrar's business), does
//! not speak SIP (the caller turns a [`Target::Reject`] into a response), and
//! knows nothing of trunks beyond their names (registration, credentials and
//! number formats of a trunk live in the trunk code; config validation
//! checks the names with [`Dialplan::check_trunks`]). Reading the file and
//! reacting to SIGHUP or the admin API are the caller's job.
//!
//! # File format
//!
//! ```toml
//! [numbering]                    # optional; needed to normalise trunk numbers
//! country_code = "49"            # required in [numbering]
//! international_prefix = "00"    # default "00"
//! national_prefix = "0"          # default "0"; "" for plans without one
//! area_code = "30"               # optional: local numbers get it prepended
//!
//! [[route]]                      # tried in file order, first match wins
//! name = "national"              # required, unique
//! match = "0{rest}"              # pattern; leave out to match everything
//! from = "internal"              # "internal" | "trunk" | "any" (default)
//! rewrite = "+49{rest}"          # optional; default: the dialled number
//! action = "trunk"               # user | trunk | fax | conference | echo | reject
//! trunk = "default"              # action = "trunk" only, required
//! # normalise = false            # action = "trunk" only: send the number as is
//! # room = "r{rest}"             # action = "conference" only; default: the number
//! # status = 403                 # action = "reject" only, 400..=699, default 404
//! ```
//!
//! Actions: `user` rings the user whose extension is the (rewritten) number;
//! `trunk` dials out through the named trunk, with the number normalised to
//! E.164 when `[numbering]` allows it (kept as is otherwise, and always with
//! `normalise = false`, which short codes such as 112 need when an
//! `area_code` is set); `fax` hands the call to fax reception; `conference` joins
//! a room; `echo` is the echo test; `reject` answers with `status`.
//!
//! Routes to trunks should say `from = "internal"`: a route that lets calls
//! from a trunk out through a trunk is an open relay for toll fraud.
//!
//! # Pattern language
//!
//! A pattern must match the whole dialled number (after the separators
//! space, tab, `-`, `.`, `/`, `(`, `)` are removed):
//!
//! | element       | matches                                                   |
//! |---------------|-----------------------------------------------------------|
//! | `0`-`9` `+` `*` `#` | that character                                      |
//! | `X` `Z` `N`   | one digit 0-9, 1-9, 2-9 (as in Asterisk)                  |
//! | `[1-5]` `[147]` `[0-36-9]` | one digit out of the set                     |
//! | `{name}`      | one or more digits, captured as `name`                    |
//! | `{name:3}` `{name:2-6}` `{name:3-}` | exactly 3, 2 to 6, 3 or more digits |
//! | `{}` `{:2-6}` | the same, unnamed                                         |
//!
//! Every `{...}` run is a capture, numbered from 1 in order; `rewrite` and
//! `room` refer to them as `{name}` or `{1}`, `{2}`, ..., and to the whole
//! dialled number as `{0}`. Runs are greedy but give digits back when the
//! rest of the pattern needs them, so `{a}{b:2}` on `12345` gives `123`/`45`.
//! Numbers longer than 64 characters match no pattern (only a route
//! without `match`).
//!
//! Why this language: Asterisk's digit classes (`X`, `Z`, `N`, `[..]`) are
//! what telephony people already read, but Asterisk's `.`/`!` wildcards have
//! no captures and its rewriting is by character offset (`${EXTEN:1}`),
//! which is where dialplans go wrong. Named runs with length bounds say both
//! what is matched and what is passed on (`0{rest}` → `+49{rest}`), cover
//! `.` (`{x}`) and `!` (`{x:0-}`), and stay small enough to match in
//! bounded time without a regex engine.

mod number;
mod pattern;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use toml::Spanned;

pub use number::{normalise_e164, strip_separators, to_national, Numbering};
use pattern::{dial_literal, room_literal, Pattern, Template};

/// The dialplan shipped as `dialplans/default.toml`.
pub const DEFAULT_DIALPLAN: &str = include_str!("../../dialplans/default.toml");

/// A dialplan file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read dialplan {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("dialplan {path}: {error}")]
    Invalid {
        path: std::path::PathBuf,
        error: DialplanError,
    },
}

/// A dialplan that failed to load: what is wrong and, where the fault is in
/// one place, the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .line { Some(l) => format!("line {l}: {}", .message), None => .message.clone() })]
pub struct DialplanError {
    /// 1-based line number in the dialplan text, if the fault has one.
    pub line: Option<usize>,
    /// What is wrong, naming the route where there is one.
    pub message: String,
}

impl DialplanError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        DialplanError {
            line: Some(line),
            message: message.into(),
        }
    }
}

/// Who is calling, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerClass {
    /// A phone of a local user.
    Internal,
    /// A call that arrived through a trunk.
    Trunk,
}

/// A route's `from` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerFilter {
    Any,
    Internal,
    Trunk,
}

impl CallerFilter {
    fn admits(self, class: CallerClass) -> bool {
        matches!(
            (self, class),
            (CallerFilter::Any, _)
                | (CallerFilter::Internal, CallerClass::Internal)
                | (CallerFilter::Trunk, CallerClass::Trunk)
        )
    }
}

/// What to do with a call: the outcome of [`Dialplan::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Ring the user with this extension (wherever they are registered).
    User { extension: String },
    /// Dial `number` (E.164 where it could be normalised) through `trunk`.
    Trunk { trunk: String, number: String },
    /// Hand the call to fax reception for `number`.
    Fax { number: String },
    /// Join conference room `room`.
    Conference { room: String },
    /// Echo test.
    Echo,
    /// Answer with this SIP status (400..=699).
    Reject { status: u16 },
}

/// The first matching route's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The route's `name`, for logs and call records.
    pub route: String,
    /// The line of the route's `[[route]]` header.
    pub line: usize,
    pub target: Target,
}

/// A route's action, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    User,
    Trunk {
        trunk: String,
        line: usize,
        normalise: bool,
    },
    Fax,
    Conference {
        room: Option<Template>,
    },
    Echo,
    Reject {
        status: u16,
    },
}

/// One compiled `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    name: String,
    line: usize,
    pattern: Option<Pattern>,
    from: CallerFilter,
    rewrite: Option<Template>,
    action: Action,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Line of the route's `[[route]]` header.
    pub fn line(&self) -> usize {
        self.line
    }
    pub fn from(&self) -> CallerFilter {
        self.from
    }
}

/// A trunk name used by a route, for checking against the configured trunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkRef<'a> {
    pub trunk: &'a str,
    pub route: &'a str,
    /// Line of the `trunk = ...` key.
    pub line: usize,
}

/// A validated dialplan. Immutable: reloading builds a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialplan {
    numbering: Option<Numbering>,
    routes: Vec<Route>,
}

// --- the file as TOML sees it -------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    numbering: Option<Spanned<RawNumbering>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumbering {
    country_code: Spanned<String>,
    international_prefix: Option<Spanned<String>>,
    national_prefix: Option<Spanned<String>>,
    area_code: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    rewrite: Option<Spanned<String>>,
    action: Spanned<String>,
    trunk: Option<Spanned<String>>,
    room: Option<Spanned<String>>,
    status: Option<Spanned<i64>>,
    normalise: Option<Spanned<bool>>,
}

/// 1-based line of a byte offset; offsets past the end count as the last line.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn digits_field(
    text: &str,
    field: &Spanned<String>,
    what: &str,
    lengths: std::ops::RangeInclusive<usize>,
) -> Result<String, DialplanError> {
    let v = field.get_ref();
    let ok = v.bytes().all(|b| b.is_ascii_digit()) && lengths.contains(&v.len());
    if ok {
        Ok(v.clone())
    } else {
        Err(DialplanError::at(
            line_of(text, field.span().start),
            format!(
                "numbering: {what} '{v}' must be {} to {} digits",
                lengths.start(),
                lengths.end()
            ),
        ))
    }
}

fn parse_numbering(text: &str, raw: &RawNumbering) -> Result<Numbering, DialplanError> {
    let country_code = digits_field(text, &raw.country_code, "country_code", 1..=3)?;
    if country_code.starts_with('0') {
        return Err(DialplanError::at(
            line_of(text, raw.country_code.span().start),
            format!("numbering: country_code '{country_code}' cannot start with 0"),
        ));
    }
    let international_prefix = match &raw.international_prefix {
        Some(f) => digits_field(text, f, "international_prefix", 1..=4)?,
        None => "00".to_string(),
    };
    let national_prefix = match &raw.national_prefix {
        Some(f) => digits_field(text, f, "national_prefix", 0..=4)?,
        None => "0".to_string(),
    };
    if national_prefix == international_prefix {
        let span = raw
            .national_prefix
            .as_ref()
            .unwrap_or(&raw.country_code)
            .span();
        return Err(DialplanError::at(
            line_of(text, span.start),
            "numbering: national_prefix and international_prefix are the same",
        ));
    }
    let area_code = match &raw.area_code {
        Some(f) => Some(digits_field(text, f, "area_code", 1..=6)?),
        None => None,
    };
    Ok(Numbering {
        country_code,
        international_prefix,
        national_prefix,
        area_code,
    })
}

/// Compiles one route; `Err` carries the line of the key at fault.
fn parse_route(text: &str, raw: &Spanned<RawRoute>) -> Result<Route, DialplanError> {
    let line = line_of(text, raw.span().start);
    let r = raw.get_ref();
    let name = r.name.get_ref().clone();
    let at = |field_span: std::ops::Range<usize>, msg: String| {
        DialplanError::at(
            line_of(text, field_span.start),
            format!("route '{name}': {msg}"),
        )
    };
    if name.trim().is_empty() {
        return Err(DialplanError::at(
            line_of(text, r.name.span().start),
            "route name is empty",
        ));
    }

    let from = match &r.from {
        None => CallerFilter::Any,
        Some(f) => match f.get_ref().as_str() {
            "any" => CallerFilter::Any,
            "internal" => CallerFilter::Internal,
            "trunk" => CallerFilter::Trunk,
            other => {
                return Err(at(
                    f.span(),
                    format!(
                    "unknown caller class '{other}' in `from` (expected internal, trunk or any)"
                ),
                ))
            }
        },
    };

    let pattern = match &r.pattern {
        None => None,
        Some(p) => Some(
            Pattern::parse(p.get_ref()).map_err(|e| at(p.span(), format!("bad `match`: {e}")))?,
        ),
    };

    let rewrite = match &r.rewrite {
        None => None,
        Some(t) => Some(
            Template::parse(t.get_ref(), pattern.as_ref(), dial_literal)
                .map_err(|e| at(t.span(), format!("bad `rewrite`: {e}")))?,
        ),
    };

    let kind = r.action.get_ref().as_str();
    // Keys that belong to another action are errors rather than ignored:
    // a `trunk` on a `user` route is almost certainly a mistyped action.
    let stray = |key: &str, span: Option<std::ops::Range<usize>>, wanted: &str| match span {
        Some(s) => Err(at(
            s,
            format!("`{key}` only applies to action = \"{wanted}\", not \"{kind}\""),
        )),
        None => Ok(()),
    };
    if kind != "trunk" {
        stray("trunk", r.trunk.as_ref().map(Spanned::span), "trunk")?;
        stray(
            "normalise",
            r.normalise.as_ref().map(Spanned::span),
            "trunk",
        )?;
    }
    if kind != "conference" {
        stray("room", r.room.as_ref().map(Spanned::span), "conference")?;
    }
    if kind != "reject" {
        stray("status", r.status.as_ref().map(Spanned::span), "reject")?;
    }
    if matches!(kind, "echo" | "reject") {
        if let Some(t) = &r.rewrite {
            return Err(at(
                t.span(),
                format!("`rewrite` has no effect on action \"{kind}\""),
            ));
        }
    }

    let action = match kind {
        "user" => Action::User,
        "fax" => Action::Fax,
        "echo" => Action::Echo,
        "trunk" => {
            let t = r.trunk.as_ref().ok_or_else(|| {
                DialplanError::at(
                    line_of(text, r.action.span().start),
                    format!("route '{name}': action \"trunk\" needs `trunk = \"name\"`"),
                )
            })?;
            if t.get_ref().trim().is_empty() {
                return Err(at(t.span(), "trunk name is empty".into()));
            }
            Action::Trunk {
                trunk: t.get_ref().clone(),
                line: line_of(text, t.span().start),
                normalise: r.normalise.as_ref().map_or(true, |n| *n.get_ref()),
            }
        }
        "conference" => Action::Conference {
            room: match &r.room {
                None => None,
                Some(t) => Some(
                    Template::parse(t.get_ref(), pattern.as_ref(), room_literal)
                        .map_err(|e| at(t.span(), format!("bad `room`: {e}")))?,
                ),
            },
        },
        "reject" => {
            let status = match &r.status {
                None => 404,
                Some(s) => match u16::try_from(*s.get_ref()) {
                    Ok(v) if (400..=699).contains(&v) => v,
                    _ => {
                        return Err(at(
                            s.span(),
                            format!(
                                "status {} is not a SIP error status (400..=699)",
                                s.get_ref()
                            ),
                        ))
                    }
                },
            };
            Action::Reject { status }
        }
        other => {
            return Err(at(
                r.action.span(),
                format!(
                "unknown action '{other}' (expected user, trunk, fax, conference, echo or reject)"
            ),
            ))
        }
    };

    Ok(Route {
        name,
        line,
        pattern,
        from,
        rewrite,
        action,
    })
}

impl Dialplan {
    /// Parses and validates a dialplan. Every error names the line at fault
    /// where there is one (all but "no routes").
    pub fn parse(text: &str) -> Result<Dialplan, DialplanError> {
        let raw: RawPlan = toml::from_str(text).map_err(|e| DialplanError {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim_end().to_string(),
        })?;

        let numbering = match &raw.numbering {
            Some(n) => Some(parse_numbering(text, n.get_ref())?),
            None => None,
        };

        if raw.route.is_empty() {
            return Err(DialplanError {
                line: None,
                message: "dialplan has no routes (add [[route]] tables)".into(),
            });
        }

        let mut routes: Vec<Route> = Vec::with_capacity(raw.route.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        // Caller classes for which an earlier route already matches every
        // number: a later route for them could never be chosen.
        let mut catch_all: HashMap<CallerClass, String> = HashMap::new();
        for raw_route in &raw.route {
            let route = parse_route(text, raw_route)?;
            if let Some(first) = seen.get(&route.name) {
                return Err(DialplanError::at(
                    line_of(text, raw_route.get_ref().name.span().start),
                    format!(
                        "route '{}': duplicate route name (first used on line {first})",
                        route.name
                    ),
                ));
            }
            seen.insert(route.name.clone(), route.line);

            let admitted: Vec<CallerClass> = [CallerClass::Internal, CallerClass::Trunk]
                .into_iter()
                .filter(|c| route.from.admits(*c))
                .collect();
            // Every filter admits at least one class, so `Some` here means
            // every caller this route could serve is already caught above.
            let shadowed_by: Option<Vec<&String>> =
                admitted.iter().map(|c| catch_all.get(c)).collect();
            if let Some(first) = shadowed_by.as_ref().and_then(|v| v.first()) {
                return Err(DialplanError::at(
                    route.line,
                    format!(
                        "route '{}' can never match: route '{first}' above matches every number",
                        route.name
                    ),
                ));
            }
            if route.pattern.is_none() {
                for c in admitted {
                    catch_all.entry(c).or_insert_with(|| route.name.clone());
                }
            }
            routes.push(route);
        }

        Ok(Dialplan { numbering, routes })
    }

    /// The shipped `dialplans/default.toml`.
    /// Reads and parses the dialplan file at `path`. When `path` is the default location and no
    /// file is there (a binary run outside its source tree, a container without the folder), the
    /// built-in default plan is used: it is the same text as the shipped file.
    pub fn load(path: &std::path::Path, is_default_path: bool) -> Result<Dialplan, LoadError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Dialplan::parse(&text).map_err(|error| LoadError::Invalid {
                path: path.to_owned(),
                error,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_default_path => {
                Ok(Dialplan::default_plan())
            }
            Err(source) => Err(LoadError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn default_plan() -> Dialplan {
        // The text is compiled in and a unit test parses it, so this cannot
        // fail at run time; no user input reaches it.
        Dialplan::parse(DEFAULT_DIALPLAN).expect("shipped dialplans/default.toml is valid")
    }

    /// The `[numbering]` table, if the plan has one.
    pub fn numbering(&self) -> Option<&Numbering> {
        self.numbering.as_ref()
    }

    /// The routes, in matching order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Decides where a call to `dialled` from a `from` caller goes: the first
    /// route (in file order) whose condition and pattern fit. `None` if no
    /// route fits (a plan ending in a route without `match` always fits).
    pub fn route(&self, dialled: &str, from: CallerClass) -> Option<Decision> {
        let number = strip_separators(dialled);
        self.routes.iter().find_map(|r| {
            if !r.from.admits(from) {
                return None;
            }
            let caps = match &r.pattern {
                Some(p) => p.matches(&number)?,
                None => Vec::new(),
            };
            let out = match &r.rewrite {
                Some(t) => t.expand(&number, &caps),
                None => number.clone(),
            };
            let target = match &r.action {
                Action::User => Target::User { extension: out },
                Action::Trunk {
                    trunk, normalise, ..
                } => Target::Trunk {
                    trunk: trunk.clone(),
                    // Trunks get E.164 where the plan can make it; numbers it
                    // cannot go as dialled/rewritten. `normalise = false` is
                    // for short codes (112) that the area-code rule would
                    // otherwise turn into a local number.
                    number: self
                        .numbering
                        .as_ref()
                        .filter(|_| *normalise)
                        .and_then(|n| normalise_e164(&out, n))
                        .unwrap_or(out),
                },
                Action::Fax => Target::Fax { number: out },
                Action::Conference { room } => Target::Conference {
                    room: match room {
                        Some(t) => t.expand(&number, &caps),
                        None => out,
                    },
                },
                Action::Echo => Target::Echo,
                Action::Reject { status } => Target::Reject { status: *status },
            };
            Some(Decision {
                route: r.name.clone(),
                line: r.line,
                target,
            })
        })
    }

    /// Every trunk name a route uses, with the route and the line of its
    /// `trunk` key, in file order.
    pub fn trunks_referenced(&self) -> impl Iterator<Item = TrunkRef<'_>> {
        self.routes.iter().filter_map(|r| match &r.action {
            Action::Trunk { trunk, line, .. } => Some(TrunkRef {
                trunk,
                route: &r.name,
                line: *line,
            }),
            _ => None,
        })
    }

    /// Checks the trunk names against the configured ones; the error reads
    /// "line N: route 'x' uses unknown trunk 'y'".
    pub fn check_trunks(&self, is_configured: impl Fn(&str) -> bool) -> Result<(), DialplanError> {
        match self.trunks_referenced().find(|t| !is_configured(t.trunk)) {
            Some(t) => Err(DialplanError::at(
                t.line,
                format!("route '{}' uses unknown trunk '{}'", t.route, t.trunk),
            )),
            None => Ok(()),
        }
    }
}

impl fmt::Display for CallerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallerFilter::Any => "any",
            CallerFilter::Internal => "internal",
            CallerFilter::Trunk => "trunk",
        })
    }
}

/// The dialplan of a running server: the file it comes from and the plan in force. `reload`
/// swaps in a fresh parse; a call holds the `Arc` it started with, so reloading never disturbs
/// calls in progress, and a file with an error leaves the running plan in place.
#[derive(Debug)]
pub struct DialplanFile {
    path: std::path::PathBuf,
    is_default_path: bool,
    handle: DialplanHandle,
    /// The configured trunks; when there are any, every trunk a route names must be one of
    /// them (a typo would otherwise only show when a call fails). With none configured, the
    /// shipped plan's outside-call routes stay valid and answer 503.
    trunks: Vec<String>,
}

impl DialplanFile {
    /// Loads the file (see [`Dialplan::load`]).
    pub fn open(path: &std::path::Path, is_default_path: bool) -> Result<Self, LoadError> {
        Self::open_with_trunks(path, is_default_path, Vec::new())
    }

    /// Loads the file and checks the trunk names its routes use against `trunks` (unless that
    /// is empty); reloads are checked the same way.
    pub fn open_with_trunks(
        path: &std::path::Path,
        is_default_path: bool,
        trunks: Vec<String>,
    ) -> Result<Self, LoadError> {
        let plan = Dialplan::load(path, is_default_path)?;
        let file = DialplanFile {
            path: path.to_owned(),
            is_default_path,
            handle: DialplanHandle::new(Dialplan::default_plan()),
            trunks,
        };
        file.check(&plan)?;
        file.handle.replace(plan);
        Ok(file)
    }

    fn check(&self, plan: &Dialplan) -> Result<(), LoadError> {
        if self.trunks.is_empty() {
            return Ok(());
        }
        plan.check_trunks(|t| self.trunks.iter().any(|n| n == t))
            .map_err(|error| LoadError::Invalid {
                path: self.path.clone(),
                error,
            })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The plan in force.
    pub fn current(&self) -> Arc<Dialplan> {
        self.handle.current()
    }

    /// Re-reads the file; returns the new plan, or the error with the running plan untouched.
    pub fn reload(&self) -> Result<Arc<Dialplan>, LoadError> {
        let plan = Dialplan::load(&self.path, self.is_default_path)?;
        self.check(&plan)?;
        self.handle.replace(plan);
        Ok(self.handle.current())
    }
}

/// The dialplan in force, swappable at run time.
///
/// A call takes [`current`](Self::current) once when it starts routing and
/// keeps that `Arc`; [`replace`](Self::replace) on reload only affects calls
/// routed afterwards, so calls in progress are untouched. Reading is a
/// read-lock and an `Arc` clone; the lock is never held across anything else.
#[derive(Debug)]
pub struct DialplanHandle {
    inner: RwLock<Arc<Dialplan>>,
}

impl DialplanHandle {
    pub fn new(plan: Dialplan) -> Self {
        DialplanHandle {
            inner: RwLock::new(Arc::new(plan)),
        }
    }

    /// A snapshot of the plan in force.
    pub fn current(&self) -> Arc<Dialplan> {
        // A panic elsewhere while holding the lock cannot leave the Arc half
        // written, so a poisoned lock is still safe to read.
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `plan` in force and returns the one it replaces.
    pub fn replace(&self, plan: Dialplan) -> Arc<Dialplan> {
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(plan))
    }
}

#[cfg(test)]
mod tests;
