//! Click destinations: the only URLs pixelgate will ever put in a `Location` header.
//!
//! A destination is `http` or `https`, has a host, carries no userinfo and no control
//! characters, and is stored in the form the `url` crate serialises it to. The same check runs
//! when a link is sealed and when it is opened, so a redirect goes exactly where the sender said.

use std::fmt;

use url::Url;

/// The longest destination accepted, in bytes of its serialised form.
pub const MAX_DESTINATION_LEN: usize = 2048;

/// A checked click destination, kept in its re-serialised form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination(String);

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination is empty")]
    Empty,
    #[error("destination is longer than {MAX_DESTINATION_LEN} bytes")]
    TooLong,
    #[error("destination contains a control character, space or backslash at byte {0}")]
    ForbiddenCharacter(usize),
    #[error("destination must start with http:// or https://")]
    Scheme,
    #[error("destination is not a valid URL")]
    Invalid(#[source] url::ParseError),
    #[error("destination has no host")]
    NoHost,
    #[error("destination must not carry a user name or password")]
    Userinfo,
}

impl Destination {
    /// Checks `input` and keeps the `url` crate's serialisation of it.
    ///
    /// The raw input is checked before parsing because the URL parser forgives what browsers
    /// forgive: it drops tabs and newlines, reads `\` as `/` and accepts `https:host`. Each of
    /// those is a classic open-redirect trick, so they are refused rather than repaired.
    pub fn parse(input: &str) -> Result<Self, DestinationError> {
        if input.is_empty() {
            return Err(DestinationError::Empty);
        }
        if input.len() > MAX_DESTINATION_LEN {
            return Err(DestinationError::TooLong);
        }
        if let Some((at, _)) = input
            .char_indices()
            .find(|&(_, c)| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(DestinationError::ForbiddenCharacter(at));
        }
        let lower = |n: usize| input.get(..n).map(str::to_ascii_lowercase);
        let explicit_scheme =
            lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://");
        if !explicit_scheme {
            return Err(DestinationError::Scheme);
        }
        let url = Url::parse(input).map_err(DestinationError::Invalid)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DestinationError::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(DestinationError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DestinationError::Userinfo);
        }
        let serialised = String::from(url);
        if serialised.len() > MAX_DESTINATION_LEN {
            return Err(DestinationError::TooLong);
        }
        Ok(Self(serialised))
    }

    /// The destination as it goes into `Location`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the destination uses `https`.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// The host, as serialised (IDNs in punycode, IPv6 in brackets).
    pub fn host(&self) -> &str {
        let rest = self.without_scheme();
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // A port follows the last colon, unless that colon is inside an IPv6 literal.
        match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        }
    }

    /// The destination without its `http://` or `https://` prefix.
    pub(crate) fn without_scheme(&self) -> &str {
        let skip = if self.is_https() { 8 } else { 7 };
        &self.0[skip..]
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        Destination::parse(input).unwrap().as_str().to_owned()
    }

    #[test]
    fn accepts_and_normalises_plain_urls() {
        assert_eq!(ok("https://example.com"), "https://example.com/");
        assert_eq!(
            ok("HTTPS://Example.COM/a?b=c#d"),
            "https://example.com/a?b=c#d"
        );
        assert_eq!(ok("http://example.com:8080/x"), "http://example.com:8080/x");
        assert_eq!(
            ok("https://bücher.example/"),
            "https://xn--bcher-kva.example/"
        );
        // Percent-encoded dot segments are resolved, so the Location shows the real path.
        assert_eq!(
            ok("https://example.com/a/%2e%2E/x"),
            "https://example.com/x"
        );
    }

    #[test]
    fn refuses_open_redirect_tricks() {
        use DestinationError::*;
        let cases: &[(&str, DestinationError)] = &[
            ("", Empty),
            ("javascript:alert(1)", Scheme),
            ("data:text/html,<script>", Scheme),
            ("ftp://example.com/", Scheme),
            ("//evil.example/", Scheme),
            ("https:evil.example", Scheme),
            ("https:/\\evil.example", ForbiddenCharacter(7)),
            (
                "https://evil.example\\@good.example",
                ForbiddenCharacter(20),
            ),
            ("https://user:pw@evil.example/", Userinfo),
            ("https://good.example@evil.example/", Userinfo),
            ("java\tscript:alert(1)", ForbiddenCharacter(4)),
            (" https://example.com/", ForbiddenCharacter(0)),
            (
                "https://example.com/\r\nSet-Cookie:x",
                ForbiddenCharacter(20),
            ),
            ("https://exa mple.com/", ForbiddenCharacter(11)),
            ("https://example.com/\u{7f}", ForbiddenCharacter(20)),
        ];
        for (input, want) in cases {
            assert_eq!(Destination::parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert!(matches!(Destination::parse("https://"), Err(Invalid(_))));
        let long = format!("https://example.com/{}", "a".repeat(MAX_DESTINATION_LEN));
        assert_eq!(Destination::parse(&long), Err(TooLong));
    }

    #[test]
    fn host_is_the_serialised_host() {
        let host = |s: &str| Destination::parse(s).unwrap().host().to_owned();
        assert_eq!(host("https://example.com/a:b"), "example.com");
        assert_eq!(host("https://example.com:444?x"), "example.com");
        assert_eq!(host("http://[::1]:8080/"), "[::1]");
        assert_eq!(host("http://[::1]/"), "[::1]");
    }
}
