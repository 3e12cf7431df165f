//! Per-account destination allowlists: which hosts an account's click links may redirect to.
//!
//! An account that is listed may send clicks only to its hosts and their subdomains, matched on
//! dot boundaries (`example.com` allows `shop.example.com`, not `badexample.com`); an account
//! not listed may redirect anywhere its sealed links say. Hosts are compared as the `url` crate
//! serialises them (lowercase, punycode), so an IDN homograph never matches.

use std::collections::{BTreeMap, HashMap};

/// The allowlists of every listed account.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    by_account: HashMap<String, Vec<String>>,
}

impl Allowlist {
    /// From `[click.allowed_hosts]`.
    pub fn new(config: &BTreeMap<String, Vec<String>>) -> Self {
        let normalise = |h: &String| {
            url::Url::parse(&format!("http://{h}/"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| h.to_ascii_lowercase())
        };
        let by_account = config
            .iter()
            .map(|(account, hosts)| (account.clone(), hosts.iter().map(normalise).collect()))
            .collect();
        Self { by_account }
    }

    /// Whether `account` may redirect to `host`.
    pub fn allows(&self, account: &str, host: &str) -> bool {
        let Some(allowed) = self.by_account.get(account) else {
            return true;
        };
        allowed.iter().any(|a| {
            host == a
                || (host.len() > a.len()
                    && host.ends_with(a.as_str())
                    && host.as_bytes()[host.len() - a.len() - 1] == b'.')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_on_dot_boundaries_for_listed_accounts_only() {
        let config = BTreeMap::from([("acme".to_owned(), vec!["Example.COM".to_owned()])]);
        let list = Allowlist::new(&config);
        assert!(list.allows("acme", "example.com"));
        assert!(list.allows("acme", "shop.example.com"));
        assert!(!list.allows("acme", "badexample.com"));
        assert!(!list.allows("acme", "example.com.evil.net"));
        assert!(list.allows("other", "anywhere.net"));
    }
}
