//! What [`super::Gateway::check`] answers: pass (with the header edits for the upstream
//! request) or refuse (with the answer for the door), plus what the log and metrics record.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{LiveApi, Refusal};
use crate::auth::Facts;
use crate::config::Route;
use crate::metrics::Outcome;

/// The decision on one request.
#[derive(Debug)]
pub struct Decision<'g> {
    /// What the log line and the request counter say (a door may replace it with what
    /// happened afterwards: the upstream failed, the client went away).
    pub outcome: Outcome,
    pub verdict: Verdict<'g>,
    /// The API the request is for (`None`: its path is under no API, or it was refused
    /// before the API match). The proxy forwards to its upstream.
    pub api: Option<&'g LiveApi>,
    /// The route rule the request fell under, if any.
    pub route: Option<&'g Route>,
    /// What the log records about the token.
    pub facts: Facts,
    /// The verified-token cache: `Some(true)` hit, `Some(false)` miss (the signature was
    /// checked), `None` when no token was looked up (or the cache is off).
    pub token_cache: Option<bool>,
}

impl<'g> Decision<'g> {
    /// The name of the API the request is for (`[[apis]]` `name`, `"default"` without
    /// `[[apis]]`); `None` when it is under no API or was refused before the match.
    #[must_use]
    pub fn api_name(&self) -> Option<&'g str> {
        self.api.map(|a| a.name.as_str())
    }

    /// The same decision, for `api`.
    #[must_use]
    pub(super) fn in_api(mut self, api: Option<&'g LiveApi>) -> Self {
        self.api = api;
        self
    }
}

/// Pass or refuse.
#[derive(Debug)]
pub enum Verdict<'g> {
    /// On to the upstream, after these edits.
    Pass(Pass<'g>),
    /// Answered here, with this.
    Refuse(Refusal),
}

/// A request that goes on to the upstream.
#[derive(Debug)]
pub struct Pass<'g> {
    /// The API whose upstream it goes to.
    pub api: &'g LiveApi,
    pub edits: Edits,
    /// The body limit that applies while the body streams (the declared `Content-Length`
    /// was already checked against it).
    pub body_limit: Option<u64>,
    /// The verified token's `exp` (Unix seconds); `None` for an anonymous route. A
    /// WebSocket tunnel the request opens ends then.
    pub token_exp: Option<f64>,
}

/// Header edits for the upstream request, applied in this order: every `remove`, then every
/// `set` (strip before you set).
///
/// `remove` holds the client's identity headers (and `Authorization` when it must not go on);
/// `set` the verified identity and the upstream credential (`upstream.authorization =
/// "basic"`).
#[derive(Debug, Default)]
pub struct Edits {
    pub remove: Vec<HeaderName>,
    pub set: Sets,
}

impl Edits {
    /// Applies the edits to the upstream request's headers.
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }

    /// The removals a door must list apart from the headers it sets: a header both set and
    /// removed would depend on the proxy's order of applying the two lists.
    pub fn removals(&self) -> impl Iterator<Item = &HeaderName> {
        self.remove.iter().filter(|n| !self.set.contains_key(n))
    }
}

/// The headers [`Edits`] sets: each name once, in the order first set (setting a name again
/// replaces its value). A list, not a map: a pass sets a handful, and the proxy inserts them
/// into the request's own map, so a map of their own would hash every name twice.
#[derive(Debug, Default, Clone)]
pub struct Sets(Vec<(HeaderName, HeaderValue)>);

impl Sets {
    /// Sets `name` to `value`, replacing what it was set to before.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// The pairs, each name once (as [`Sets::insert`] leaves them).
    #[must_use]
    pub fn into_pairs(self) -> Vec<(HeaderName, HeaderValue)> {
        self.0
    }

    /// `Sets` of pairs known to name each header once (taken from [`Sets::into_pairs`]).
    #[must_use]
    pub fn from_unique(pairs: &[(HeaderName, HeaderValue)]) -> Self {
        Self(pairs.to_vec())
    }

    #[must_use]
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[must_use]
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

impl IntoIterator for Sets {
    type Item = (HeaderName, HeaderValue);
    type IntoIter = std::vec::IntoIter<(HeaderName, HeaderValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};

    #[test]
    fn removals_come_before_sets() {
        let mut e = Edits::default();
        e.remove.push(HeaderName::from_static("x-auth-subject"));
        e.remove.push(HeaderName::from_static("x-auth-roles"));
        e.set.insert(
            HeaderName::from_static("x-auth-subject"),
            HeaderValue::from_static("verified"),
        );
        assert_eq!(
            e.removals().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-auth-roles"]
        );
        let mut h = HeaderMap::new();
        h.insert("x-auth-subject", HeaderValue::from_static("spoofed"));
        h.insert("x-auth-roles", HeaderValue::from_static("Admin"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        e.apply(&mut h);
        assert_eq!(h["x-auth-subject"], "verified");
        assert!(!h.contains_key("x-auth-roles"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn setting_a_name_again_replaces_its_value_in_place() {
        let mut s = Sets::default();
        s.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic a"));
        s.insert(
            HeaderName::from_static("x-auth-subject"),
            HeaderValue::from_static("o"),
        );
        s.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic b"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(&header::AUTHORIZATION).expect("set"), "Basic b");
        let names: Vec<_> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-auth-subject"]);
    }
}
