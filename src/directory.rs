//! The directory model: users, their external numbers, phones, locations and API tokens, with the
//! rules every input must satisfy before it reaches the store.
//!
//! This module is pure: types and validation, no I/O. The store persists these types and the API
//! exposes them; both rely on the rules here so a CLI-created user obeys the same rules as one
//! created over HTTP.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A rule broken by an input: the field at fault and why, in words for an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A user of the PBX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    /// Internal extension: digits only, unique.
    pub extension: String,
    pub display_name: String,
    pub email: String,
    /// The user's own fax number, if any (E.164 or dialable digits), unique.
    pub fax_number: Option<String>,
    /// Numbers outside the PBX where the user can be reached (mobile, home), in the order given.
    pub external_numbers: Vec<ExternalNumber>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A number outside the PBX that belongs to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExternalNumber {
    /// Free text such as `mobile` or `home`.
    pub label: String,
    /// E.164 (`+4930123456`) or dialable digits (`0301234567`).
    pub number: String,
}

/// An internal SIP device (desk phone, softphone, ATA) owned by one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Phone {
    pub id: i64,
    pub user_id: i64,
    /// The username the device authenticates with; unique across the PBX.
    pub sip_username: String,
    /// A label such as `Desk phone`.
    pub name: String,
    pub created_at: i64,
}

/// A named set of a user's phones and external numbers, all rung at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Location {
    pub id: i64,
    pub user_id: i64,
    /// Unique per user.
    pub name: String,
    /// Ids of the user's own phones in this location.
    pub phones: Vec<i64>,
    /// The user's external numbers in this location.
    pub numbers: Vec<String>,
    pub created_at: i64,
}

/// Scope of an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything, including acting for any user.
    Admin,
    /// One user's own `/me` resources.
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "user" => Some(Scope::User),
            _ => None,
        }
    }
}

/// The bearer of a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    User(i64),
}

// ---------------------------------------------------------------------------------------------
// Rules

/// Extensions are 1 to 15 digits: short enough to dial, long enough for big sites.
pub fn check_extension(field: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::new(field, "must be 1 to 15 digits"));
    }
    Ok(())
}

/// A number outside the PBX: `+` followed by 2 to 15 digits (E.164), or 2 to 20 dialable digits.
pub fn check_number(field: &str, s: &str) -> Result<(), Invalid> {
    let ok = match s.strip_prefix('+') {
        Some(rest) => (2..=15).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit()),
        None => (2..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()),
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be E.164 (+ and 2 to 15 digits) or 2 to 20 dialable digits",
        ))
    }
}

/// Non-empty, at most `max` characters, no control characters.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.trim().is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// A deliberately loose address check: one `@`, something on both sides, a dot in the domain.
/// Mail delivery is the real test; this only catches obvious typing mistakes.
pub fn check_email(field: &str, s: &str) -> Result<(), Invalid> {
    check_text(field, s, 254)?;
    let ok = match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(field, "is not an email address"))
    }
}

/// SIP usernames appear unescaped in Authorization headers and URIs; keep them to the
/// RFC 3261 `unreserved` set so no device has to escape anything.
pub fn check_sip_username(field: &str, s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be 1 to 64 letters, digits or -_.!~*'()",
        ))
    }
}

/// Phone passwords: long enough to resist guessing, printable so they can be typed into a phone.
pub fn check_sip_password(field: &str, s: &str) -> Result<(), Invalid> {
    if s.len() < 8 || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            "must be 8 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// Validates a user's external numbers: each well formed, no number twice.
pub fn check_external_numbers(numbers: &[ExternalNumber]) -> Result<(), Invalid> {
    for (i, n) in numbers.iter().enumerate() {
        check_text(&format!("external_numbers[{i}].label"), &n.label, 64)?;
        check_number(&format!("external_numbers[{i}].number"), &n.number)?;
        if numbers[..i].iter().any(|m| m.number == n.number) {
            return Err(Invalid::new(
                format!("external_numbers[{i}].number"),
                "appears twice",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inputs: what a caller (API or CLI) asks to create or change, validated before any write.

/// A new user.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub extension: String,
    pub display_name: String,
    pub email: String,
    #[serde(default)]
    pub fax_number: Option<String>,
    #[serde(default)]
    pub external_numbers: Vec<ExternalNumber>,
}

impl NewUser {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_extension("extension", &self.extension)?;
        check_text("display_name", &self.display_name, 128)?;
        check_email("email", &self.email)?;
        if let Some(f) = &self.fax_number {
            check_number("fax_number", f)?;
        }
        check_external_numbers(&self.external_numbers)
    }
}

/// Changes to a user; absent fields stay as they are, `fax_number: null` removes the fax number,
/// `external_numbers` replaces the whole list (numbers no longer listed leave every location).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub extension: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub fax_number: Option<Option<String>>,
    pub external_numbers: Option<Vec<ExternalNumber>>,
}

impl UserPatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(e) = &self.extension {
            check_extension("extension", e)?;
        }
        if let Some(n) = &self.display_name {
            check_text("display_name", n, 128)?;
        }
        if let Some(e) = &self.email {
            check_email("email", e)?;
        }
        if let Some(Some(f)) = &self.fax_number {
            check_number("fax_number", f)?;
        }
        if let Some(list) = &self.external_numbers {
            check_external_numbers(list)?;
        }
        Ok(())
    }
}

/// A new phone. Without `password` a strong one is generated and returned once.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPhone {
    pub sip_username: String,
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
}

impl NewPhone {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_sip_username("sip_username", &self.sip_username)?;
        check_text("name", &self.name, 128)?;
        if let Some(p) = &self.password {
            check_sip_password("password", p)?;
        }
        Ok(())
    }
}

/// Changes to a phone. A new `sip_username` needs a new `password` too: the stored digests bind
/// username, realm and password together.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhonePatch {
    pub name: Option<String>,
    pub sip_username: Option<String>,
    pub password: Option<String>,
}

impl PhonePatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(n) = &self.name {
            check_text("name", n, 128)?;
        }
        if let Some(u) = &self.sip_username {
            check_sip_username("sip_username", u)?;
            if self.password.is_none() {
                return Err(Invalid::new(
                    "password",
                    "is required when sip_username changes",
                ));
            }
        }
        if let Some(p) = &self.password {
            check_sip_password("password", p)?;
        }
        Ok(())
    }
}

/// A new location: a name and a non-empty set of the user's own phones and external numbers.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLocation {
    pub name: String,
    #[serde(default)]
    pub phones: Vec<i64>,
    #[serde(default)]
    pub numbers: Vec<String>,
}

impl NewLocation {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_text("name", &self.name, 64)?;
        check_members(&self.phones, &self.numbers)
    }
}

/// Changes to a location; `phones` and `numbers` each replace their list when present.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationPatch {
    pub name: Option<String>,
    pub phones: Option<Vec<i64>>,
    pub numbers: Option<Vec<String>>,
}

impl LocationPatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(n) = &self.name {
            check_text("name", n, 64)?;
        }
        for (i, n) in self.numbers.iter().flatten().enumerate() {
            check_number(&format!("numbers[{i}]"), n)?;
        }
        Ok(())
    }
}

/// Members of a location: well-formed, no duplicates, not empty.
pub fn check_members(phones: &[i64], numbers: &[String]) -> Result<(), Invalid> {
    if phones.is_empty() && numbers.is_empty() {
        return Err(Invalid::new(
            "phones",
            "a location needs at least one phone or number",
        ));
    }
    for (i, p) in phones.iter().enumerate() {
        if phones[..i].contains(p) {
            return Err(Invalid::new(format!("phones[{i}]"), "appears twice"));
        }
    }
    for (i, n) in numbers.iter().enumerate() {
        check_number(&format!("numbers[{i}]"), n)?;
        if numbers[..i].contains(n) {
            return Err(Invalid::new(format!("numbers[{i}]"), "appears twice"));
        }
    }
    Ok(())
}

/// Lets a PATCH tell "absent" (`None`) from "set to null" (`Some(None)`).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_digits() {
        assert!(check_extension("e", "100").is_ok());
        assert!(check_extension("e", "").is_err());
        assert!(check_extension("e", "10a").is_err());
        assert!(check_extension("e", "1234567890123456").is_err());
    }

    #[test]
    fn numbers_are_e164_or_digits() {
        assert!(check_number("n", "+4930123456").is_ok());
        assert!(check_number("n", "0301234567").is_ok());
        assert!(check_number("n", "+").is_err());
        assert!(check_number("n", "+49 30").is_err());
        assert!(check_number("n", "12-34").is_err());
        assert!(check_number("n", "+1234567890123456").is_err());
    }

    #[test]
    fn duplicate_external_numbers_are_rejected() {
        let n = |x: &str| ExternalNumber {
            label: "m".into(),
            number: x.into(),
        };
        let e = check_external_numbers(&[n("+491"), n("+491")]).unwrap_err();
        assert_eq!(e.field, "external_numbers[1].number");
    }

    #[test]
    fn emails_and_usernames() {
        assert!(check_email("e", "a@b.de").is_ok());
        assert!(check_email("e", "a@b").is_err());
        assert!(check_email("e", "a b@c.de").is_err());
        assert!(check_sip_username("u", "alice-desk").is_ok());
        assert!(check_sip_username("u", "al ice").is_err());
        assert!(check_sip_username("u", "a@b").is_err());
        assert!(check_sip_password("p", "short").is_err());
        assert!(check_sip_password("p", "long enough").is_err());
        assert!(check_sip_password("p", "longenough").is_ok());
    }
}
