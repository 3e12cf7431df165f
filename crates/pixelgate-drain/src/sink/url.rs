//! A sink's URL: its scheme names the sink (one of [`SINKS`]), its location is a server's host
//! or a file's path. Checked when it is read, so `pixelgate -t` names a bad one.

use std::{fmt, path::PathBuf, str::FromStr};

use pixelgate_core::{BadValue, config::without_password, deserialize_from_str};
use url::Url;

use super::{Location, SINKS, registration};

/// Where the drain writes: a URL whose scheme names one of the sinks ([`SINKS`]),
/// with a host for a server's, or an absolute path for a file's.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkUrl(Url);

impl SinkUrl {
    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The file a `jsonl:///path` URL names.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.0.to_file_path().ok()
    }
}

impl fmt::Debug for SinkUrl {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkUrl({})", without_password(&self.0))
    }
}

impl FromStr for SinkUrl {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s)?;
        let Some(sink) = registration(url.scheme()) else {
            let schemes: Vec<String> = SINKS
                .iter()
                .flat_map(|r| r.schemes.iter().map(|s| format!("{s}://")))
                .collect();
            return Err(BadValue::Scheme(schemes.join(", ")));
        };
        let has_host = url.host_str().is_some_and(|h| !h.is_empty());
        match sink.location {
            Location::Server if has_host => Ok(Self(url)),
            Location::Server => Err(BadValue::Rule("needs a host: SCHEME://user@host/db")),
            Location::File if !has_host && url.path().len() > 1 && url.to_file_path().is_ok() => {
                Ok(Self(url))
            }
            Location::File => Err(BadValue::Rule(
                "needs an absolute file path: SCHEME:///path",
            )),
        }
    }
}
deserialize_from_str!(SinkUrl);
