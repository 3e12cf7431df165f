//! The request paths each server is driven with: opens, clicks, and the mix with 10 % tampered.
//!
//! pixelgate's paths carry its sealed tokens; the Lua frontend's carry its own signed ones
//! (`PAYLOAD.SIG`, see `bench/nginx/frontend.lua`); `empty_gif` answers any `/o/…` and is
//! given pixelgate's. Both token kinds name the same ids, so every event records the same data.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{KeyInit as _, Mac as _};
use pixelgate_core::{Claims, Destination, Ids, Keyring};
use serde::{Deserialize, Serialize};

/// Distinct recipients in each list; the lists are cycled through.
pub const RECIPIENTS: usize = 1000;

/// Where every click goes.
pub const DESTINATION: &str =
    "https://shop.example.com/spring-sale?utm_source=newsletter&utm_medium=email";

/// What a list of paths asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Workload {
    /// Valid open pixels.
    Opens,
    /// Valid click links.
    Clicks,
    /// Opens and clicks half and half, one in ten of them with a tampered token.
    Mix,
}

impl Workload {
    pub const ALL: [Self; 3] = [Self::Opens, Self::Clicks, Self::Mix];

    pub fn name(self) -> &'static str {
        match self {
            Self::Opens => "opens",
            Self::Clicks => "clicks",
            Self::Mix => "mix (10 % tampered)",
        }
    }

    /// Events a server should record per 1000 requests of this workload.
    pub fn events_per_1000(self) -> f64 {
        match self {
            Self::Opens | Self::Clicks => 1000.0,
            Self::Mix => 900.0,
        }
    }
}

/// How a server's tokens are made.
#[derive(Debug)]
pub enum Signer {
    /// pixelgate's sealed tokens.
    Sealed(Keyring),
    /// The Lua frontend's: base64url payload, base64url HMAC-SHA1 of it under this key.
    Hmac(Vec<u8>),
}

impl Signer {
    /// The paths of one workload, in the order they are requested.
    pub fn paths(&self, workload: Workload) -> anyhow::Result<Vec<String>> {
        let destination = Destination::parse(DESTINATION)?;
        (0..RECIPIENTS)
            .map(|i| {
                let ids = Ids::new(
                    "acme",
                    "spring-sale-2026",
                    format!("msg-{:08}", 40_000 + i),
                    format!("rcpt-{i:08}"),
                )?;
                let (click, tampered) = match workload {
                    Workload::Opens => (false, false),
                    Workload::Clicks => (true, false),
                    // Pairs (open, click); one pair in ten tampered: 5 % opens, 5 % clicks.
                    Workload::Mix => (i % 2 == 1, (i / 2) % 10 == 4),
                };
                let claims = if click {
                    Claims::click(ids, destination.clone())
                } else {
                    Claims::open(ids)
                };
                let mut token = self.token(&claims)?;
                if tampered {
                    tamper(&mut token);
                }
                Ok(if click {
                    format!("/c/{token}")
                } else {
                    format!("/o/{token}.gif")
                })
            })
            .collect()
    }

    fn token(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(match self {
            Self::Sealed(keys) => keys.seal(claims),
            Self::Hmac(key) => {
                let ids = &claims.ids;
                let mut fields = vec![
                    ids.account.as_str(),
                    &ids.campaign,
                    &ids.message,
                    &ids.recipient,
                ];
                if let pixelgate_core::Target::Click(dest) = &claims.target {
                    fields.push(dest.as_str());
                }
                let payload = URL_SAFE_NO_PAD.encode(fields.join("\n"));
                let sig = URL_SAFE_NO_PAD.encode(hmac_sha1(key, payload.as_bytes())?);
                format!("{payload}.{sig}")
            }
        })
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut mac = <hmac::Hmac<sha1::Sha1>>::new_from_slice(key)
        .map_err(|_| anyhow::anyhow!("HMAC key of {} bytes refused", key.len()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Changes one character in the middle of the token's first part (for `PAYLOAD.SIG`, the
/// payload), so that it no longer authenticates but still has the shape of a token.
fn tamper(token: &mut String) {
    let first = token.split('.').next().map_or(0, str::len);
    let at = first / 2;
    let replacement = if token.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    token.replace_range(at..=at, replacement);
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use pixelgate_core::{KeyId, Kind, Secret};

    use super::*;

    fn sealed() -> Keyring {
        Keyring::new([(KeyId(1), Secret::generate().unwrap())]).unwrap()
    }

    #[test]
    fn sealed_paths_open_unless_tampered() {
        let signer = Signer::Sealed(sealed());
        let mix = signer.paths(Workload::Mix).unwrap();
        let Signer::Sealed(keys) = &signer else {
            unreachable!()
        };
        assert_eq!(mix.len(), RECIPIENTS);
        let mut good = 0;
        for path in &mix {
            let (token, kind) = match path.strip_prefix("/o/") {
                Some(t) => (t.strip_suffix(".gif").unwrap(), Kind::Open),
                None => (path.strip_prefix("/c/").unwrap(), Kind::Click),
            };
            if keys.open(token, kind, SystemTime::now()).is_ok() {
                good += 1;
            }
        }
        assert_eq!(good, 900);
        assert!(mix.iter().filter(|p| p.starts_with("/c/")).count() == 500);
    }

    #[test]
    fn hmac_tokens_match_what_ngx_computes() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(
            hmac_sha1(b"Jefe", b"what do ya want for nothing?")
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let paths = Signer::Hmac(b"k".to_vec()).paths(Workload::Clicks).unwrap();
        let (payload, _) = paths[0]
            .strip_prefix("/c/")
            .unwrap()
            .split_once('.')
            .unwrap();
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            raw,
            format!("acme\nspring-sale-2026\nmsg-00040000\nrcpt-00000000\n{DESTINATION}")
        );
    }
}
