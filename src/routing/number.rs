//! Number normalisation: separators, E.164 and the national dialling form.
//!
//! Pure string functions; they know the site's numbering plan (country code,
//! prefixes, optional area code) and nothing about who owns a number.

/// The site's numbering plan, from the dialplan's `[numbering]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    /// Country calling code without `+`, e.g. `"49"` or `"1"`.
    pub country_code: String,
    /// Dialled before a country code, e.g. `"00"` (most of the world) or `"011"` (NANP).
    pub international_prefix: String,
    /// Dialled before a national number, e.g. `"0"` (DE, UK) or `"1"` (NANP).
    /// Empty for plans without one (the national number is dialled as is).
    pub national_prefix: String,
    /// Prepended to numbers dialled without any prefix (local calls), when set.
    pub area_code: Option<String>,
}

/// E.164 allows at most 15 digits after the `+`.
const E164_MAX_DIGITS: usize = 15;

/// Characters people and phones put in numbers for readability only.
/// `/` is common in German notation (`030/123456`), tabs come from pasting.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')' | '/')
}

/// Removes visual separators: `+1 (555) 010-9999` → `+15550109999`.
pub fn strip_separators(number: &str) -> String {
    number.chars().filter(|&c| !is_separator(c)).collect()
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `+` and `digits`, if `digits` can be an E.164 number.
fn e164(digits: &str) -> Option<String> {
    // Country codes never start with 0, so a leading 0 here means the
    // number was mis-prefixed (e.g. `000 49 30...`) and is not guessed at.
    if all_digits(digits) && digits.len() <= E164_MAX_DIGITS && !digits.starts_with('0') {
        Some(format!("+{digits}"))
    } else {
        None
    }
}

/// Converts a dialled number to E.164 (`+` and digits) using the site's plan.
///
/// - `+4930123` stays as it is (separators removed);
/// - international prefix: `004930123` → `+4930123`;
/// - national prefix: `030123` → `+4930123`;
/// - no prefix: with an `area_code`, a local number (`123` → `+4930123`); in
///   plans without a national prefix, a national number (`612345678` → `+34612345678`).
///
/// Returns `None` for anything else (letters, `*`/`#` codes, too long,
/// a local number without a configured area code). NANP ten-digit dialling
/// without the `1` is not guessed: write a route with a `rewrite` for it.
pub fn normalise_e164(number: &str, plan: &Numbering) -> Option<String> {
    let s = strip_separators(number);
    if let Some(rest) = s.strip_prefix('+') {
        return e164(rest);
    }
    if !all_digits(&s) {
        return None;
    }
    // The international prefix is checked first: in most plans the national
    // prefix is a prefix of it (`0` / `00`).
    if !plan.international_prefix.is_empty() {
        if let Some(rest) = s.strip_prefix(plan.international_prefix.as_str()) {
            return e164(rest);
        }
    }
    if plan.national_prefix.is_empty() {
        return e164(&format!("{}{s}", plan.country_code));
    }
    if let Some(rest) = s.strip_prefix(plan.national_prefix.as_str()) {
        if rest.is_empty() {
            return None;
        }
        return e164(&format!("{}{rest}", plan.country_code));
    }
    let area = plan.area_code.as_deref()?;
    e164(&format!("{}{area}{s}", plan.country_code))
}

/// The reverse of [`normalise_e164`]: how to dial `number` from inside the
/// site's country. Numbers in the own country get the national prefix
/// (`+4930123` → `030123`); foreign ones the international prefix
/// (`+15550109999` → `0015550109999`). Accepts anything `normalise_e164` does.
pub fn to_national(number: &str, plan: &Numbering) -> Option<String> {
    let e = normalise_e164(number, plan)?;
    let digits = e.strip_prefix('+')?;
    // Country codes are prefix-free, so a plain prefix test is exact.
    match digits.strip_prefix(plan.country_code.as_str()) {
        Some(national) if !national.is_empty() => {
            Some(format!("{}{national}", plan.national_prefix))
        }
        _ => Some(format!("{}{digits}", plan.international_prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> Numbering {
        Numbering {
            country_code: "49".into(),
            international_prefix: "00".into(),
            national_prefix: "0".into(),
            area_code: Some("30".into()),
        }
    }

    fn us() -> Numbering {
        Numbering {
            country_code: "1".into(),
            international_prefix: "011".into(),
            national_prefix: "1".into(),
            area_code: Some("555".into()),
        }
    }

    fn es() -> Numbering {
        Numbering {
            country_code: "34".into(),
            international_prefix: "00".into(),
            national_prefix: String::new(),
            area_code: None,
        }
    }

    #[test]
    fn separators() {
        assert_eq!(strip_separators("+1 (555) 010-9999"), "+15550109999");
        assert_eq!(strip_separators("030/1234.567"), "0301234567");
        assert_eq!(strip_separators(" \t"), "");
    }

    #[test]
    fn de_to_e164() {
        let p = de();
        assert_eq!(
            normalise_e164("030 1234-567", &p).as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalise_e164("0049 30 123", &p).as_deref(),
            Some("+4930123")
        );
        assert_eq!(
            normalise_e164("+49 30 123", &p).as_deref(),
            Some("+4930123")
        );
        assert_eq!(
            normalise_e164("001 555 0109999", &p).as_deref(),
            Some("+15550109999")
        );
        assert_eq!(
            normalise_e164("1234567", &p).as_deref(),
            Some("+49301234567")
        );
        let mut no_area = de();
        no_area.area_code = None;
        assert_eq!(normalise_e164("1234567", &no_area), None);
        for bad in [
            "",
            "0",
            "00",
            "+",
            "+0049",
            "000 49 30",
            "*43",
            "abc",
            "+4930a",
            "+1234567890123456",
        ] {
            assert_eq!(normalise_e164(bad, &p), None, "{bad:?}");
        }
    }

    #[test]
    fn us_to_e164() {
        let p = us();
        assert_eq!(
            normalise_e164("1 (555) 010-9999", &p).as_deref(),
            Some("+15550109999")
        );
        assert_eq!(
            normalise_e164("+1 (555) 010-9999", &p).as_deref(),
            Some("+15550109999")
        );
        assert_eq!(
            normalise_e164("011 49 30 123", &p).as_deref(),
            Some("+4930123")
        );
        assert_eq!(
            normalise_e164("010-9999", &p).as_deref(),
            Some("+15550109999")
        );
    }

    #[test]
    fn no_national_prefix() {
        let p = es();
        assert_eq!(
            normalise_e164("612 345 678", &p).as_deref(),
            Some("+34612345678")
        );
        assert_eq!(normalise_e164("0049 30 1", &p).as_deref(), Some("+49301"));
        assert_eq!(
            to_national("+34612345678", &p).as_deref(),
            Some("612345678")
        );
    }

    #[test]
    fn back_to_national() {
        let p = de();
        assert_eq!(
            to_national("+49301234567", &p).as_deref(),
            Some("0301234567")
        );
        assert_eq!(
            to_national("+15550109999", &p).as_deref(),
            Some("0015550109999")
        );
        assert_eq!(to_national("0301234567", &p).as_deref(), Some("0301234567"));
        assert_eq!(to_national("*43", &p), None);
        let u = us();
        assert_eq!(
            to_national("+15550109999", &u).as_deref(),
            Some("15550109999")
        );
        assert_eq!(to_national("+4930123", &u).as_deref(), Some("0114930123"));
        // Round trip.
        for n in ["+49301234567", "+15550109999", "+442079460000"] {
            for plan in [de(), us(), es()] {
                let nat = to_national(n, &plan).expect("national form");
                assert_eq!(
                    normalise_e164(&nat, &plan).as_deref(),
                    Some(n),
                    "{n} via {nat}"
                );
            }
        }
    }
}
