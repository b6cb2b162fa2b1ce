//! What a tenant, a key name and a key id may be: the one place every write path and the
//! lookup path check them.
//!
//! Tenants travel in headers (`X-Hapnd-Tenant`) and are compared byte for byte, so they
//! have a strict ASCII grammar: `acme` and `acme ` must not be two tenants that a proxy
//! shows as one. Key names are shown to people, so they may be any printable text, but
//! nothing invisible or that reorders or breaks lines around it.

use super::StoreError;

/// The longest tenant: 63 characters.
pub(crate) const MAX_TENANT_LEN: usize = 63;
/// The longest key name, in characters.
pub(crate) const MAX_NAME_LEN: usize = 128;
/// The longest key id, in bytes.
const MAX_ID_LEN: usize = 64;

/// Whether `tenant` matches `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn is_valid_tenant(tenant: &str) -> bool {
    let bytes = tenant.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= MAX_TENANT_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Whether `name` is 1 to 128 characters of printable text: no control or format
/// characters (bidi overrides and isolates, zero-width characters, soft hyphen, BOM), no
/// line or paragraph separators, no whitespace but the ASCII space, and none at either end.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name.chars().all(is_printable)
}

/// Whether a key id can travel in a header and a log line: 1 to 64 visible ASCII characters.
pub(crate) fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn check_tenant(tenant: &str) -> Result<(), StoreError> {
    if is_valid_tenant(tenant) {
        return Ok(());
    }
    Err(StoreError::invalid(format!(
        "invalid tenant {}: a tenant is 1 to {MAX_TENANT_LEN} characters of lowercase \
         letters a-z, digits, '.', '_' and '-', starting with a letter or a digit",
        shown(tenant)
    )))
}

pub(crate) fn check_key_name(name: &str) -> Result<(), StoreError> {
    if is_valid_key_name(name) {
        return Ok(());
    }
    Err(StoreError::invalid(format!(
        "invalid key name {}: a key name is 1 to {MAX_NAME_LEN} characters of printable \
         text, without control, format or invisible characters, line breaks, or spaces \
         at either end",
        shown(name)
    )))
}

pub(crate) fn check_key_id(id: &str) -> Result<(), StoreError> {
    if is_valid_key_id(id) {
        return Ok(());
    }
    Err(StoreError::invalid(format!(
        "invalid key id {}: an id is 1 to {MAX_ID_LEN} visible ASCII characters",
        shown(id)
    )))
}

/// The value, quoted and escaped so that nothing invisible reaches a terminal or a log,
/// and cut short.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let mut cut: String = value.chars().take(MAX).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    // `escape_debug` leaves printable non-ASCII as it is: escape everything we refuse.
    let mut out = String::with_capacity(cut.len() + 2);
    out.push('"');
    for c in cut.chars() {
        if c == '"' || c == '\\' || !is_printable(c) || (c != ' ' && c.is_whitespace()) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn is_printable(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace() || is_format(c) || is_invisible(c))
}

/// Unicode general category Cf (format characters), Unicode 16.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Characters that render as nothing although they are not Cf: fillers, the combining
/// grapheme joiner, Mongolian free variation selectors, and noncharacters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}'
            | '\u{3164}'
            | '\u{FFA0}'
            | '\u{FDD0}'..='\u{FDEF}'
    ) || (c as u32 & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_follow_the_grammar() {
        for ok in ["acme", "a", "0", "acme-prod", "acme.eu_1", &"a".repeat(63)] {
            assert!(is_valid_tenant(ok), "{ok:?} refused");
        }
        for bad in [
            "",
            "Acme",
            "acme ",
            " acme",
            "-acme",
            ".acme",
            "_acme",
            "ac me",
            "acme\u{a0}",
            "acme\u{200b}",
            "\u{202e}acme",
            "acme\u{2028}",
            "acmé",
            "acme/x",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_tenant(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_names_are_printable_text() {
        for ok in [
            "ci",
            "CI pipeline (prod)",
            "déploiement",
            "本番",
            "🔑 deploy",
            "a-b_c.d/e:f",
            &"x".repeat(128),
        ] {
            assert!(is_valid_key_name(ok), "{ok:?} refused");
        }
        for bad in [
            "",
            " ci",
            "ci ",
            "ci\t",
            "c\ni",
            "c\ri",
            "c\u{1b}[31mi",
            "c\u{7f}i",
            "c\u{85}i",
            "ci\u{a0}",
            "c\u{a0}i",
            "c\u{2028}i",
            "c\u{2029}i",
            "c\u{202e}i",
            "c\u{2066}i",
            "c\u{200b}i",
            "c\u{200d}i",
            "c\u{feff}i",
            "c\u{ad}i",
            "c\u{3000}i",
            "c\u{e0041}i",
            "c\u{3164}i",
            "c\u{fffe}i",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_key_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_show_the_value_escaped() {
        let err = check_tenant("acme\u{202e} ").unwrap_err();
        assert_eq!(err.kind(), super::super::StoreErrorKind::Invalid);
        let text = err.to_string();
        assert!(text.contains(r#""acme\u{202e} ""#), "{text}");
        let err = check_key_name("a\u{1b}[2Jb").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains(r"\u{1b}"), "{err}");
        let long = "x".repeat(1000);
        assert!(check_key_name(&long).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn key_ids_are_visible_ascii() {
        assert!(is_valid_key_id("key_0123456789abcdef"));
        for bad in ["", "key x", "key\n", "ключ", &"k".repeat(65)] {
            assert!(!is_valid_key_id(bad), "{bad:?} accepted");
        }
    }
}
