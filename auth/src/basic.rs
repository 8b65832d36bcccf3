//! HTTP Basic credentials (RFC 7617) from an `Authorization` header value.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// Longest header value looked at: a user name and a password of at most 1 KiB, encoded.
const MAX_HEADER_BYTES: usize = 4096;

/// A user name and password from an `Authorization: Basic ...` header. The password is wiped
/// from memory when dropped and never printed.
pub struct BasicCredentials {
    pub username: String,
    pub password: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The credentials in `header` (the value of `Authorization`), or `None` when it is not a
/// well-formed Basic header.
pub fn parse(header: &[u8]) -> Option<BasicCredentials> {
    if header.len() > MAX_HEADER_BYTES {
        return None;
    }
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Zeroizing::new(STANDARD.decode(encoded.trim()).ok()?);
    let colon = decoded.iter().position(|&b| b == b':')?;
    let username = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some(BasicCredentials {
        username,
        password: Zeroizing::new(decoded[colon + 1..].to_vec()),
    })
}

/// The `Authorization` header value for `username` and `password` (for clients and tests).
pub fn header(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{username}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_and_refuses_the_rest() {
        let c = parse(header("ops", "p:w").as_bytes()).unwrap();
        assert_eq!(c.username, "ops");
        assert_eq!(&c.password[..], b"p:w");
        assert!(!format!("{c:?}").contains("p:w"));
        let c = parse(b"basic b3BzOg==").unwrap();
        assert_eq!((c.username.as_str(), c.password.len()), ("ops", 0));
        for bad in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic b3Bz",
            b"Basic",
            b"\xff\xfe",
            &[b'a'; 5000],
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
