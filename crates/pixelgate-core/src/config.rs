//! What every crate's configuration shares: the error that names a bad key, and typed values
//! read through `FromStr`.
//!
//! Each crate checks its own sections and answers with [`Invalid`], which names the key and keeps
//! the reason as its source, so `pixelgate -t` prints `server.admin_listen: must differ from …`
//! and a parse failure keeps the parser's own words behind it.

use std::{borrow::Cow, error::Error};

/// A value a key may not have, and why: its source is the reason.
#[derive(Debug, thiserror::Error)]
#[error("{key}")]
pub struct Invalid {
    /// The dotted key (`server.listen`), environment variable or flag.
    pub key: Cow<'static, str>,
    #[source]
    pub reason: Box<dyn Error + Send + Sync>,
}

impl Invalid {
    /// `key` is wrong, for a reason given in words.
    pub fn new(key: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into().into(),
        }
    }

    /// `key` is wrong because of `source` (a value that did not parse, say).
    pub fn because(
        key: impl Into<Cow<'static, str>>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            key: key.into(),
            reason: Box::new(source),
        }
    }

    /// The reason, with its own causes, on one line.
    pub fn reason(&self) -> String {
        chain(&*self.reason)
    }
}

/// `key` is at most `max`: counts that size a semaphore, a channel or a pool, where a huge value
/// would panic or exhaust memory when the process starts instead of when it is checked.
pub fn at_most(key: &'static str, value: u64, max: u64) -> Result<(), Invalid> {
    if value > max {
        return Err(Invalid::new(key, format!("must be at most {max}")));
    }
    Ok(())
}

/// `key` lies from `min` to `max`: durations added to the clock, where a huge one overflows
/// and a tiny one makes every request time out.
pub fn within(
    key: &'static str,
    value: std::time::Duration,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(Invalid::new(
            key,
            format!(
                "must be from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// Why a text is not a value of its type: a URL that does not parse, or one of the type's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("not a URL")]
    NotUrl(#[source] url::ParseError),
    #[error("{0}")]
    Rule(&'static str),
    #[error("must start with one of {0}")]
    Scheme(String),
}

impl From<url::ParseError> for BadValue {
    fn from(e: url::ParseError) -> Self {
        Self::NotUrl(e)
    }
}

/// A URL as logs and `Debug` may show it: any password replaced by `***`.
pub fn without_password(url: &url::Url) -> url::Url {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown
}

/// An error and its causes on one line, joined with `": "`.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    Chain(error).to_string()
}

/// Shows an error and its causes, joined with `": "`: for log fields (`error = %Chain(&e)`),
/// since an error's own message never repeats its source.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Implements `serde::Deserialize` through `FromStr`, so that a value read from a file, an
/// environment variable or a flag is checked by the same code and fails with the same words
/// (the error's causes included, since serde keeps only a message).
#[macro_export]
macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(d)?;
                text.parse::<$ty>()
                    .map_err(|e| ::serde::de::Error::custom($crate::config::chain(&e)))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_keeps_its_causes() {
        let parse = "x".parse::<u8>().unwrap_err();
        let invalid = Invalid::because("server.port", parse);
        assert_eq!(invalid.to_string(), "server.port");
        assert_eq!(invalid.reason(), "invalid digit found in string");
        let worded = Invalid::new("queue.key", "must differ");
        assert_eq!(chain(&worded), "queue.key: must differ");
    }
}
