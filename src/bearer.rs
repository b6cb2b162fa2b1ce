//! Where the `Authorization` header is parsed (RFC 6750 section 2.1, RFC 9110 section 11).
//!
//! Exactly one header; the scheme `Bearer` in any case; one or more spaces; a token of
//! visible ASCII, bounded length. Everything else is rejected before a key is looked at.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::{AuthError, Malformed};

/// The longest `Authorization` value accepted. A key is 46 bytes; the slack allows for
/// odd spacing without letting a client make the layer scan kilobytes.
pub const MAX_HEADER_LEN: usize = 256;

/// Finds the bearer token in `headers`, or says why there is none.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(AuthError::missing)?;
    if values.next().is_some() {
        return Err(AuthError::malformed(Malformed::MultipleHeaders));
    }
    let bytes = value.as_bytes();
    if let Some(token) = plain_bearer(bytes) {
        return Ok(token);
    }
    if bytes.len() > MAX_HEADER_LEN {
        return Err(AuthError::malformed(Malformed::TooLong));
    }
    // Visible ASCII and the spaces between scheme and token; this also rules out non-UTF-8.
    // No early exit: a good header is read whole anyway, and the branch-free fold vectorises.
    let allowed = bytes.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_graphic() | (b == b' ') | (b == b'\t'))
    });
    if !allowed {
        return Err(AuthError::malformed(Malformed::InvalidBytes));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| AuthError::malformed(Malformed::InvalidBytes))?;
    // Whitespace before the scheme is a malformed header, not a missing one. Only
    // in-process callers can send it: HTTP parsers trim it.
    if matches!(bytes.first(), Some(b' ' | b'\t')) {
        return Err(AuthError::malformed(Malformed::Syntax));
    }
    let scheme_end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, Digest, ...) carries no API key: same as none at all.
        return Err(AuthError::missing());
    }
    if bytes.get(scheme_end) == Some(&b'\t') {
        return Err(AuthError::malformed(Malformed::Syntax));
    }
    // The separator is a space here; trimming takes it with the others.
    let token = text[scheme_end..].trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::malformed(Malformed::EmptyToken));
    }
    let blank = token
        .bytes()
        .fold(false, |blank, b| blank | (b == b' ') | (b == b'\t'));
    if blank {
        return Err(AuthError::malformed(Malformed::Syntax));
    }
    Ok(token)
}

/// The shape nearly every request sends, checked in one pass: `Bearer` in any case, one
/// space, then a non-empty token of visible ASCII (no space, no tab), within
/// [`MAX_HEADER_LEN`]. `None` sends the header through the general parser above, which
/// accepts exactly these headers too, with the same token, and says why the others fail
/// (the tests compare both against a reference parser).
#[inline]
fn plain_bearer(bytes: &[u8]) -> Option<&str> {
    const SCHEME: usize = "Bearer ".len();
    if bytes.len() <= SCHEME || bytes.len() > MAX_HEADER_LEN {
        return None;
    }
    let (scheme, token) = bytes.split_at(SCHEME);
    if scheme[SCHEME - 1] != b' ' || !scheme[..SCHEME - 1].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    // 0x21..=0x7e; a branch-free range check per byte, which vectorises.
    let visible = token
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
    if !visible {
        return None;
    }
    std::str::from_utf8(token).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthErrorKind;
    use http::HeaderValue;

    fn parse(value: &[u8]) -> Result<String, AuthErrorKind> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        bearer_token(&headers)
            .map(str::to_owned)
            .map_err(|e| e.kind())
    }

    #[test]
    fn schemes_and_spacing() {
        assert_eq!(parse(b"Bearer abc").unwrap(), "abc");
        assert_eq!(parse(b"bEaReR    abc").unwrap(), "abc");
        assert_eq!(parse(b"Basic abc"), Err(AuthErrorKind::MissingApiKey));
        assert_eq!(parse(b"Bearer\tabc"), Err(AuthErrorKind::InvalidRequest));
        assert_eq!(parse(b"\tBearer abc"), Err(AuthErrorKind::InvalidRequest));
        assert_eq!(parse(b" Bearer abc"), Err(AuthErrorKind::InvalidRequest));
        assert_eq!(parse(b"Bearer a b"), Err(AuthErrorKind::InvalidRequest));
        assert_eq!(parse(b"Bearer"), Err(AuthErrorKind::InvalidRequest));
        assert_eq!(parse(b"Bearer \xff"), Err(AuthErrorKind::InvalidRequest));
    }

    /// The straightforward parser the fast one replaced: both must agree on every input.
    fn reference(value: &[u8]) -> Result<String, AuthErrorKind> {
        let err = |m| Err(AuthError::malformed(m).kind());
        if value.len() > MAX_HEADER_LEN {
            return err(Malformed::TooLong);
        }
        if !value
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
        {
            return err(Malformed::InvalidBytes);
        }
        let text = std::str::from_utf8(value).unwrap();
        if text.starts_with([' ', '\t']) {
            return err(Malformed::Syntax);
        }
        let (scheme, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthErrorKind::MissingApiKey);
        }
        if text.as_bytes()[scheme.len()..].first() == Some(&b'\t') {
            return err(Malformed::Syntax);
        }
        let token = rest.trim_start_matches(' ');
        if token.is_empty() {
            return err(Malformed::EmptyToken);
        }
        if token.bytes().any(|b| b == b' ' || b == b'\t') {
            return err(Malformed::Syntax);
        }
        Ok(token.to_owned())
    }

    #[test]
    fn agrees_with_the_reference_parser() {
        let pieces: [&[u8]; 12] = [
            b"Bearer",
            b"bearer",
            b"BEARER",
            b"Basic",
            b" ",
            b"  ",
            b"\t",
            b"sk_live_x",
            b"abc",
            b"\x7f",
            b"\xc3\xa9",
            b"=",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut value = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 5) {
                value.extend_from_slice(pieces[((seed >> (8 * i + 8)) % 12) as usize]);
            }
            if HeaderValue::from_bytes(&value).is_ok() {
                let expected = reference(&value);
                assert_eq!(parse(&value), expected, "{value:?}");
                if let Some(token) = plain_bearer(&value) {
                    assert_eq!(Ok(token.to_owned()), expected, "fast path: {value:?}");
                }
            }
        }
        let long = [b"Bearer ".as_slice(), &[b'a'; MAX_HEADER_LEN]].concat();
        assert_eq!(parse(&long), reference(&long));
        let longest = &long[..MAX_HEADER_LEN];
        assert_eq!(parse(longest), reference(longest));
        assert!(reference(longest).is_ok());
    }

    #[test]
    fn the_common_shape_takes_the_fast_path() {
        // Not a key (wrong length): the parser looks at the header's shape only.
        let key = b"Bearer sk_live_fixture";
        assert_eq!(plain_bearer(key), Some("sk_live_fixture"));
        assert_eq!(plain_bearer(b"bEARER x"), Some("x"));
        // Everything else goes to the general parser.
        for other in [
            b"Bearer  x".as_slice(),
            b"Bearer\tx",
            b"Bearer x y",
            b"Bearer ",
            b"Basic x",
            b"Bearerx",
            b" Bearer x",
            b"Bearer x\x7f",
        ] {
            assert_eq!(plain_bearer(other), None, "{other:?}");
        }
    }
}
