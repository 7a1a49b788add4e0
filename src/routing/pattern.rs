//! The `match` pattern language and the `rewrite` templates.
//!
//! Kept separate from the TOML handling so the grammar can be tested on its
//! own; errors here are plain messages, the caller adds the line number.

/// The longest dialled string (after separators are stripped) that a pattern
/// will look at. Real numbers are at most 15 digits plus prefixes; the bound
/// keeps matching cost small whatever a remote party puts in a request URI.
pub const MAX_DIALLED: usize = 64;

/// The longest `match` pattern accepted, in bytes.
const MAX_PATTERN: usize = 256;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    /// Exactly this byte (`0`-`9`, `+`, `*`, `#`).
    Lit(u8),
    /// Exactly one digit out of a set; bit `d` set means digit `d` is allowed.
    Class(u16),
    /// A run of `min..=max` digits; every run is a capture (positional index
    /// is its position among the runs), some also have a name.
    Run { min: usize, max: usize },
}

/// A compiled `match` pattern. Matching is anchored at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    elems: Vec<Elem>,
    /// One entry per run, in order: its name, if it has one.
    names: Vec<Option<String>>,
}

fn is_dial_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '+' | '*' | '#')
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_count(text: &str, what: &str) -> Result<usize, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{text}' is not a number"));
    }
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_DIALLED => Ok(n),
        _ => Err(format!("{what} '{text}' is larger than {MAX_DIALLED}")),
    }
}

/// Parses the length part of `{name:LEN}`: `N`, `N-M` or `N-`.
fn parse_bounds(spec: &str) -> Result<(usize, usize), String> {
    let (min, max) = match spec.split_once('-') {
        None => {
            let n = parse_count(spec, "length")?;
            (n, n)
        }
        Some((lo, "")) => (parse_count(lo, "minimum length")?, MAX_DIALLED),
        Some((lo, hi)) => (
            parse_count(lo, "minimum length")?,
            parse_count(hi, "maximum length")?,
        ),
    };
    if min > max {
        return Err(format!("length {spec}: minimum is larger than maximum"));
    }
    if max == 0 {
        return Err(format!("length {spec} matches nothing"));
    }
    Ok((min, max))
}

/// Parses the inside of `[...]`: digits and ranges such as `1-5`.
fn parse_set(body: &str) -> Result<u16, String> {
    let chars: Vec<char> = body.chars().collect();
    if chars.is_empty() {
        return Err("empty digit set '[]'".into());
    }
    let mut set = 0u16;
    let mut i = 0;
    while i < chars.len() {
        let lo = chars[i]
            .to_digit(10)
            .ok_or_else(|| format!("'{}' in digit set [{body}] is not a digit", chars[i]))?;
        let mut hi = lo;
        if chars.get(i + 1) == Some(&'-') {
            let c = chars
                .get(i + 2)
                .ok_or_else(|| format!("unfinished range in digit set [{body}]"))?;
            hi = c
                .to_digit(10)
                .ok_or_else(|| format!("'{c}' in digit set [{body}] is not a digit"))?;
            if hi < lo {
                return Err(format!(
                    "range {lo}-{hi} in digit set [{body}] is backwards"
                ));
            }
            i += 2;
        }
        for d in lo..=hi {
            set |= 1 << d;
        }
        i += 1;
    }
    Ok(set)
}

impl Pattern {
    /// Compiles a pattern; the error is a message without line number.
    pub fn parse(src: &str) -> Result<Pattern, String> {
        if src.is_empty() {
            return Err("empty pattern (leave `match` out to match every number)".into());
        }
        // Matching allocates a memo of pattern length × number length;
        // no sensible pattern comes near this bound.
        if src.len() > MAX_PATTERN {
            return Err(format!("pattern is longer than {MAX_PATTERN} characters"));
        }
        let mut elems = Vec::new();
        let mut names: Vec<Option<String>> = Vec::new();
        let mut rest = src;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                c if is_dial_char(c) => elems.push(Elem::Lit(c as u8)),
                'X' => elems.push(Elem::Class(0b11_1111_1111)),
                'Z' => elems.push(Elem::Class(0b11_1111_1110)),
                'N' => elems.push(Elem::Class(0b11_1111_1100)),
                '[' => {
                    let end = rest
                        .find(']')
                        .ok_or_else(|| format!("unclosed '[' in pattern '{src}'"))?;
                    elems.push(Elem::Class(parse_set(&rest[..end])?));
                    rest = &rest[end + 1..];
                }
                '{' => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in pattern '{src}'"))?;
                    let body = &rest[..end];
                    rest = &rest[end + 1..];
                    let (name, bounds) = match body.split_once(':') {
                        Some((n, b)) => (n, parse_bounds(b)?),
                        None => (body, (1, MAX_DIALLED)),
                    };
                    let name = if name.is_empty() {
                        None
                    } else if !valid_name(name) {
                        return Err(format!(
                            "capture name '{name}' must start with a letter or '_' \
                             and contain only letters, digits and '_'"
                        ));
                    } else if names.iter().flatten().any(|n| n == name) {
                        return Err(format!("capture '{name}' is defined twice"));
                    } else {
                        Some(name.to_string())
                    };
                    names.push(name);
                    elems.push(Elem::Run {
                        min: bounds.0,
                        max: bounds.1,
                    });
                }
                'x' | 'z' | 'n' => {
                    return Err(format!(
                        "unexpected '{c}' in pattern '{src}' (digit classes are upper-case X, Z, N)"
                    ))
                }
                '_' if elems.is_empty() => {
                    return Err(format!(
                        "unexpected '_' in pattern '{src}': patterns need no leading '_' \
                         (use '{{name}}' captures instead of '.' and '!')"
                    ))
                }
                _ => {
                    return Err(format!(
                        "unexpected '{c}' in pattern '{src}' (allowed: digits, + * #, X Z N, \
                         [digit set], {{capture}})"
                    ))
                }
            }
        }
        Ok(Pattern { elems, names })
    }

    /// Number of captures (runs), i.e. the highest valid positional index.
    pub fn captures(&self) -> usize {
        self.names.len()
    }

    /// Positional index (1-based) of a named capture.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .map(|i| i + 1)
    }

    /// Matches the whole of `s`; returns the captured text of every run.
    ///
    /// Runs are greedy (the leftmost run takes the most digits that still let
    /// the rest match), which makes `{a}{b}` well defined. A memo of dead
    /// (element, position) pairs bounds the work to elements × length².
    pub fn matches<'s>(&self, s: &'s str) -> Option<Vec<&'s str>> {
        let bytes = s.as_bytes();
        if bytes.len() > MAX_DIALLED {
            return None;
        }
        let mut caps = vec![(0usize, 0usize); self.names.len()];
        let mut dead = vec![false; (self.elems.len() + 1) * (bytes.len() + 1)];
        if !self.step(0, 0, 0, bytes, &mut caps, &mut dead) {
            return None;
        }
        // Runs only ever cover ASCII digits, so these are char boundaries;
        // `get` keeps that an invariant rather than a panic.
        caps.iter().map(|&(a, b)| s.get(a..b)).collect()
    }

    fn step(
        &self,
        elem: usize,
        run: usize,
        pos: usize,
        s: &[u8],
        caps: &mut [(usize, usize)],
        dead: &mut [bool],
    ) -> bool {
        let Some(e) = self.elems.get(elem) else {
            return pos == s.len();
        };
        let key = elem * (s.len() + 1) + pos;
        if dead.get(key).copied().unwrap_or(true) {
            return false;
        }
        let ok = match *e {
            Elem::Lit(b) => {
                s.get(pos) == Some(&b) && self.step(elem + 1, run, pos + 1, s, caps, dead)
            }
            Elem::Class(set) => match s.get(pos) {
                Some(&b) if b.is_ascii_digit() && set & (1 << (b - b'0')) != 0 => {
                    self.step(elem + 1, run, pos + 1, s, caps, dead)
                }
                _ => false,
            },
            Elem::Run { min, max } => {
                let avail = s
                    .get(pos..)
                    .unwrap_or_default()
                    .iter()
                    .take(max)
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let mut found = false;
                if avail >= min {
                    for len in (min..=avail).rev() {
                        if self.step(elem + 1, run + 1, pos + len, s, caps, dead) {
                            if let Some(c) = caps.get_mut(run) {
                                *c = (pos, pos + len);
                            }
                            found = true;
                            break;
                        }
                    }
                }
                found
            }
        };
        if !ok {
            if let Some(d) = dead.get_mut(key) {
                *d = true;
            }
        }
        ok
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// 0 is the whole dialled number, 1.. the pattern's captures.
    Cap(usize),
}

/// A `rewrite` (or `room`) template: literal text and `{capture}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles a template against the pattern it will be expanded with
    /// (`None` for a route without `match`, which has only `{0}`).
    /// `literal_ok` says which characters may appear outside braces.
    pub fn parse(
        src: &str,
        pattern: Option<&Pattern>,
        literal_ok: fn(char) -> bool,
    ) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '{' => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in '{src}'"))?;
                    let name = &rest[..end];
                    rest = &rest[end + 1..];
                    let captures = pattern.map_or(0, Pattern::captures);
                    let index = if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                        match name.parse::<usize>() {
                            Ok(i) if i <= captures => i,
                            _ => {
                                return Err(format!(
                                    "'{{{name}}}' refers to capture {name}, but the pattern has {captures}"
                                ))
                            }
                        }
                    } else {
                        pattern.and_then(|p| p.index_of(name)).ok_or_else(|| {
                            format!("'{{{name}}}' refers to an unknown capture '{name}'")
                        })?
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Cap(index));
                }
                c if literal_ok(c) => lit.push(c),
                c => return Err(format!("unexpected '{c}' in '{src}'")),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if parts.is_empty() {
            return Err("empty template".into());
        }
        Ok(Template { parts })
    }

    /// Fills in the template; `caps` are the values from [`Pattern::matches`].
    pub fn expand(&self, whole: &str, caps: &[&str]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Cap(0) => out.push_str(whole),
                // Validated at parse time; a missing one expands to nothing
                // rather than panicking.
                Part::Cap(i) => out.push_str(caps.get(i - 1).copied().unwrap_or_default()),
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Lit(s) => f.write_str(s)?,
                Part::Cap(i) => write!(f, "{{{i}}}")?,
            }
        }
        Ok(())
    }
}

/// Literal characters allowed in a `rewrite`: what a phone can dial.
pub fn dial_literal(c: char) -> bool {
    is_dial_char(c)
}

/// Literal characters allowed in a conference `room` name.
pub fn room_literal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> Option<Vec<String>> {
        Pattern::parse(p)
            .expect("test pattern")
            .matches(s)
            .map(|v| v.into_iter().map(String::from).collect())
    }

    #[test]
    fn literals_and_specials() {
        assert_eq!(m("*43", "*43"), Some(vec![]));
        assert_eq!(m("*43", "*430"), None);
        assert_eq!(m("*43", "*4"), None);
        assert_eq!(m("#1", "#1"), Some(vec![]));
        assert_eq!(m("+49{n}", "+4930"), Some(vec!["30".into()]));
        // `+` is a literal, not "one or more".
        assert_eq!(m("+49{n}", "4930"), None);
        assert_eq!(m("+49{n}", "++4930"), None);
    }

    #[test]
    fn classes_and_sets() {
        assert!(m("X", "0").is_some());
        assert!(m("Z", "0").is_none());
        assert!(m("Z", "1").is_some());
        assert!(m("N", "1").is_none());
        assert!(m("N", "2").is_some());
        assert!(m("N", "9").is_some());
        assert!(m("X", "*").is_none());
        assert!(m("[1-5]", "5").is_some());
        assert!(m("[1-5]", "6").is_none());
        assert!(m("[147]", "4").is_some());
        assert!(m("[147]", "5").is_none());
        assert!(m("[0-36-9]", "5").is_none());
        assert!(m("[0-36-9]", "7").is_some());
        assert!(m("[0-36-9]", "0").is_some());
    }

    #[test]
    fn length_bounds() {
        assert_eq!(m("{e:3-4}", "12"), None);
        assert_eq!(m("{e:3-4}", "123"), Some(vec!["123".into()]));
        assert_eq!(m("{e:3-4}", "1234"), Some(vec!["1234".into()]));
        assert_eq!(m("{e:3-4}", "12345"), None);
        assert_eq!(m("{e:3}", "123"), Some(vec!["123".into()]));
        assert_eq!(m("{e:3}", "1234"), None);
        assert_eq!(m("{e:2-}", "1"), None);
        assert_eq!(m("{e:2-}", "12345678"), Some(vec!["12345678".into()]));
        // Default is one or more.
        assert_eq!(m("0{e}", "0"), None);
        assert_eq!(m("0{e:0-}", "0"), Some(vec!["".into()]));
        // Runs are digits only.
        assert_eq!(m("{e}", "12*"), None);
        assert_eq!(m("{e}#", "12#"), Some(vec!["12".into()]));
    }

    #[test]
    fn greedy_and_backtracking() {
        // The first run is greedy but gives digits back to let the rest match.
        assert_eq!(
            m("{a}{b:2}", "12345"),
            Some(vec!["123".into(), "45".into()])
        );
        assert_eq!(m("{a}{b}", "12345"), Some(vec!["1234".into(), "5".into()]));
        assert_eq!(
            m("{a:1-3}9{b}", "1919"),
            Some(vec!["1".into(), "19".into()])
        );
        assert_eq!(m("{a:1-3}9{b}", "12349"), None);
    }

    #[test]
    fn long_and_odd_input_is_harmless() {
        let p = Pattern::parse("{a}{b}{c}{d}{e}{f}{g}{h}x").err();
        assert!(p.is_some());
        let p = Pattern::parse("{a:0-}{b:0-}{c:0-}{d:0-}{e:0-}{f:0-}*").expect("pattern");
        let long = "1".repeat(MAX_DIALLED);
        assert!(p.matches(&long).is_none());
        assert!(p.matches(&"1".repeat(10_000)).is_none());
        assert!(p.matches("ä1*").is_none());
        assert!(p.matches("").is_none());
        assert!(p.matches("*").is_some());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "",
            "_X.",
            "x",
            "1a",
            "[",
            "[]",
            "[5-1]",
            "[1-]",
            "[a]",
            "{",
            "{e:}",
            "{e:5-2}",
            "{e:0}",
            "{e:99}",
            "{e:a}",
            "{1e}",
            "{a}{a}",
            "{a-b}",
            &"1".repeat(257),
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn templates() {
        let p = Pattern::parse("0{area:2-5}{sub}").expect("pattern");
        let t = Template::parse("+49{area}{2}", Some(&p), dial_literal).expect("template");
        let caps = p.matches("030123").expect("match");
        // `area` is greedy but leaves `sub` its one digit.
        assert_eq!(caps, vec!["3012", "3"]);
        assert_eq!(t.expand("030123", &caps), "+4930123");
        let whole = Template::parse("9{0}", Some(&p), dial_literal).expect("template");
        assert_eq!(whole.expand("030123", &caps), "9030123");
        assert!(Template::parse("{nope}", Some(&p), dial_literal).is_err());
        assert!(Template::parse("{3}", Some(&p), dial_literal).is_err());
        assert!(Template::parse("{1}", None, dial_literal).is_err());
        assert!(Template::parse("{0}", None, dial_literal).is_ok());
        assert!(Template::parse("a{0}", None, dial_literal).is_err());
        assert!(Template::parse("room-{0}", None, room_literal).is_ok());
        assert!(Template::parse("{0", None, dial_literal).is_err());
        assert!(Template::parse("", None, dial_literal).is_err());
    }
}
