//! Tenants: optional API keys, who a request is, and what it may see.
//!
//! With no key configured the server is open, as it always was: every
//! request is anonymous and may see every job. With keys (`API_KEYS`,
//! `API_KEYS_FILE`), every job route asks for `Authorization: Bearer <key>`
//! and answers 401 (`unauthorized`, in the JSON error shape) without a
//! known one; the key's name is the request's [`Tenant`], which
//!
//! - owns every job it submits (async records and sync pages alike): any
//!   other tenant gets 404 for it, as for an unknown job ([`may_see`]);
//! - scopes its `Idempotency-Key`s ([`scoped_key`]);
//! - is what the rate limiter keys on (`routes::ClientKey`);
//! - holds at most its share of a queue's places while other tenants are
//!   waiting ([`crate::queue::Shares`]), its weight from `TENANT_WEIGHTS`.
//!
//! Keys are kept only as SHA-256 digests (a file may hold the digests
//! themselves, `sha256:<hex>`), and a presented key is compared with every
//! digest in constant time ([`subtle`]), so neither memory nor timing tells
//! a key. `/livez`, `/readyz`, `/openapi.json` and `/docs` never ask for one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;
use crate::error::ApiError;

/// Shortest key accepted in clear: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;

/// Who sent a request: the name of the API key it carried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub name: Arc<str>,
    /// Its weight in a queue's fair shares (`TENANT_WEIGHTS`, default 1).
    pub weight: u32,
}

/// One configured key: its name and the digest of the key.
#[derive(Clone)]
pub struct ApiKey {
    tenant: Tenant,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.tenant.name)
            .field("weight", &self.tenant.weight)
            .finish_non_exhaustive()
    }
}

/// The configured keys. Logged with the effective config as names and
/// weights only.
#[derive(Clone, Debug, Default)]
pub struct Tenants {
    keys: Vec<ApiKey>,
}

impl Serialize for Tenants {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.keys.len()))?;
        for key in &self.keys {
            map.serialize_entry(&*key.tenant.name, &key.tenant.weight)?;
        }
        map.end()
    }
}

impl Tenants {
    /// Whether job routes ask for a key.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The names of the configured tenants.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.tenant.name)
    }

    /// The tenant whose key this is. Every digest is compared, in constant
    /// time, whatever matched before.
    pub fn identify(&self, presented: &str) -> Option<Tenant> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key.tenant.clone());
            }
        }
        found
    }

    /// Keys from `API_KEYS` (comma-separated) and `API_KEYS_FILE` (one per
    /// line, `#` comments), each `name=key` or `name=sha256:<64 hex>`;
    /// weights from `TENANT_WEIGHTS` (`name=weight`, comma-separated).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut tenants = Tenants::default();
        if let Some(raw) = lookup("API_KEYS") {
            for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                tenants.add("API_KEYS", entry)?;
            }
        }
        if let Some(path) = lookup("API_KEYS_FILE").filter(|p| !p.trim().is_empty()) {
            let text = std::fs::read_to_string(path.trim()).map_err(|e| {
                ConfigError::new("API_KEYS_FILE", &path, format!("cannot read it: {e}"))
            })?;
            for line in text.lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    tenants.add("API_KEYS_FILE", line)?;
                }
            }
        }
        if let Some(raw) = lookup("TENANT_WEIGHTS") {
            for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                tenants.weigh(entry)?;
            }
        }
        Ok(tenants)
    }

    /// Adds one `name=key` or `name=sha256:<hex>` entry.
    pub fn add(&mut self, var: &str, entry: &str) -> Result<(), ConfigError> {
        // The key itself is never echoed back in an error.
        let (name, secret) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::new(var, "<redacted>", "each key is name=key"))?;
        let name = valid_name(var, name.trim())?;
        let secret = secret.trim();
        let digest = match secret.strip_prefix("sha256:") {
            Some(hex) => parse_digest(hex).ok_or_else(|| {
                ConfigError::new(var, name, "sha256: must be followed by 64 hex digits")
            })?,
            None if secret.len() < MIN_KEY_LEN => {
                return Err(ConfigError::new(
                    var,
                    name,
                    format!("the key must be at least {MIN_KEY_LEN} characters"),
                ))
            }
            None => Sha256::digest(secret.as_bytes()).into(),
        };
        if self.keys.iter().any(|k| *k.tenant.name == *name) {
            return Err(ConfigError::new(var, name, "a second key of that name"));
        }
        if self.keys.iter().any(|k| k.digest == digest) {
            return Err(ConfigError::new(var, name, "the same key as another name"));
        }
        self.keys.push(ApiKey {
            tenant: Tenant {
                name: Arc::from(name),
                weight: 1,
            },
            digest,
        });
        Ok(())
    }

    fn weigh(&mut self, entry: &str) -> Result<(), ConfigError> {
        const VAR: &str = "TENANT_WEIGHTS";
        let (name, weight) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::new(VAR, entry, "each weight is name=weight"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| ConfigError::new(VAR, entry, "a weight is 1 to 1000"))?;
        let key = self
            .keys
            .iter_mut()
            .find(|k| *k.tenant.name == *name.trim())
            .ok_or_else(|| ConfigError::new(VAR, entry, "no API key has that name"))?;
        key.tenant.weight = weight;
        Ok(())
    }
}

fn valid_name<'a>(var: &str, name: &'a str) -> Result<&'a str, ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match ok {
        true => Ok(name),
        false => Err(ConfigError::new(
            var,
            name,
            "a key's name is 1 to 64 letters, digits, '-', '_' or '.'",
        )),
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

/// Who a request is, as [`require_key`] found it: a request extension on
/// every job route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller(pub Option<Tenant>);

impl Caller {
    pub fn tenant(&self) -> Option<&Tenant> {
        self.0.as_ref()
    }

    /// The name a job of this caller is recorded under.
    pub fn owner(&self) -> Option<&str> {
        self.0.as_ref().map(|t| &*t.name)
    }
}

impl axum::extract::FromRequestParts<crate::state::AppState> for Caller {
    type Rejection = ApiError;

    /// The caller [`require_key`] found. A route it does not guard has
    /// none: anonymous with keys off, refused with keys on.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, ApiError> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None if state.config.tenants.enabled() => {
                Err(ApiError::Unauthorized("this route needs an API key".into()))
            }
            None => Ok(Caller(None)),
        }
    }
}

/// Whether `caller` may see a job owned by `owner` (`None`: submitted with
/// keys off). With keys on, only its owner may; a job without an owner is
/// no tenant's.
pub fn may_see(caller: &Caller, owner: Option<&str>) -> bool {
    match caller.owner() {
        None => true,
        Some(name) => owner == Some(name),
    }
}

/// The key a job's `Idempotency-Key` is stored under: the tenant's name
/// before it, so two tenants' keys never meet. (A name has no `/`; a key
/// sent with keys off is stored as it came.)
pub fn scoped_key(caller: &Caller, key: &str) -> String {
    match caller.owner() {
        Some(name) => format!("{name}/{key}"),
        None => key.to_string(),
    }
}

/// The middleware in front of every job route: with keys on, a request
/// without a known key gets 401; every request leaves with a [`Caller`].
pub async fn require_key(
    State(tenants): State<Arc<Tenants>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !tenants.enabled() {
        request.extensions_mut().insert(Caller(None));
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let tenant = match presented {
        None => {
            return ApiError::Unauthorized(
                "this route needs an API key: send `Authorization: Bearer <key>`".into(),
            )
            .into_response()
        }
        Some(key) => tenants.identify(key),
    };
    match tenant {
        Some(tenant) => {
            request.extensions_mut().insert(Caller(Some(tenant)));
            next.run(request).await
        }
        None => ApiError::Unauthorized("the API key is not known".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn hex(digest: &[u8]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_in_clear_or_as_digests_identify_their_tenant_and_nothing_else() {
        let bob = hex(&Sha256::digest(b"bob-key-0123456789"));
        let tenants = Tenants::from_lookup(&lookup(&[
            ("API_KEYS", "alice=alice-key-0123456789, bob=sha256:BOB"),
            ("TENANT_WEIGHTS", "bob=3"),
        ]))
        .err()
        .map(|e| e.reason);
        assert!(tenants.is_some(), "a digest that is not hex is refused");
        let tenants = Tenants::from_lookup(&lookup(&[
            (
                "API_KEYS",
                &format!("alice=alice-key-0123456789,bob=sha256:{bob}"),
            ),
            ("TENANT_WEIGHTS", "bob=3"),
        ]))
        .unwrap();
        assert!(tenants.enabled());
        let alice = tenants.identify("alice-key-0123456789").unwrap();
        assert_eq!((&*alice.name, alice.weight), ("alice", 1));
        let bob = tenants.identify("bob-key-0123456789").unwrap();
        assert_eq!((&*bob.name, bob.weight), ("bob", 3));
        assert_eq!(tenants.identify("alice-key-012345678"), None);
        assert_eq!(tenants.identify(""), None);
        let logged = serde_json::to_string(&tenants).unwrap();
        assert_eq!(logged, r#"{"alice":1,"bob":3}"#, "names and weights only");
    }

    #[test]
    fn bad_entries_are_refused_naming_the_variable_without_the_key() {
        for (var, value) in [
            ("API_KEYS", "alice=short"),
            ("API_KEYS", "no-name-here-0123456789"),
            ("API_KEYS", "a b=0123456789abcdef0"),
            ("API_KEYS", "a=0123456789abcdef0,a=0123456789abcdef1"),
            ("API_KEYS", "a=0123456789abcdef0,b=0123456789abcdef0"),
        ] {
            let err = Tenants::from_lookup(&lookup(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
        }
        let err = Tenants::from_lookup(&lookup(&[
            ("API_KEYS", "a=0123456789abcdef0"),
            ("TENANT_WEIGHTS", "b=2"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "TENANT_WEIGHTS");
        let err = Tenants::from_lookup(&lookup(&[
            ("API_KEYS", "a=0123456789abcdef0"),
            ("TENANT_WEIGHTS", "a=0"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "TENANT_WEIGHTS");
    }

    #[test]
    fn a_keys_file_holds_one_key_a_line_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(
            &path,
            "# tenants\nalice=alice-key-0123456789\n\n bob=bob-key-0123456789 \n",
        )
        .unwrap();
        let tenants =
            Tenants::from_lookup(&lookup(&[("API_KEYS_FILE", path.to_str().unwrap())])).unwrap();
        assert_eq!(tenants.names().collect::<Vec<_>>(), ["alice", "bob"]);
        let missing = Tenants::from_lookup(&lookup(&[("API_KEYS_FILE", "/nonexistent/keys")]));
        assert_eq!(missing.unwrap_err().var, "API_KEYS_FILE");
    }

    #[test]
    fn with_keys_on_a_job_is_seen_by_its_owner_alone() {
        let alice = Caller(Some(Tenant {
            name: "alice".into(),
            weight: 1,
        }));
        let open = Caller(None);
        assert!(may_see(&alice, Some("alice")));
        assert!(!may_see(&alice, Some("bob")));
        assert!(!may_see(&alice, None));
        assert!(may_see(&open, Some("alice")));
        assert!(may_see(&open, None));
        assert_eq!(scoped_key(&alice, "k"), "alice/k");
        assert_eq!(scoped_key(&open, "k"), "k");
    }
}
