//! One revocation entry, as it is written in the file (a line) and in Redis (a member of
//! the sorted set, scored by its expiry).
//!
//! File lines: `oid=<value> until=<RFC 3339> [issued_before=<RFC 3339>]`; `#` starts a
//! comment. Redis members: `oid=<value>` or `oid=<value> issued_before=<Unix seconds>`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The user's (or service principal's) object ID.
    Oid,
    /// The client application: `azp` (v2) / `appid` (v1).
    Client,
    /// The tenant: `tid`.
    Tenant,
    /// One token: `jti` (Entra's `uti` is not a `jti`; Entra tokens carry none by default).
    Jti,
}

impl Kind {
    /// As written in entries, metrics and on the command line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Oid => "oid",
            Self::Client => "client",
            Self::Tenant => "tenant",
            Self::Jti => "jti",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "oid" => Self::Oid,
            "client" => Self::Client,
            "tenant" => Self::Tenant,
            "jti" => Self::Jti,
            _ => return None,
        })
    }

    /// Object, client and tenant IDs are GUIDs, compared in any case; a `jti` exactly.
    #[must_use]
    pub fn normalize(self, value: &str) -> Cow<'_, str> {
        match self {
            Self::Jti => Cow::Borrowed(value),
            _ if value.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Owned(value.to_ascii_lowercase())
            }
            _ => Cow::Borrowed(value),
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Normalised ([`Kind::normalize`]).
    pub value: String,
    /// Only tokens with `iat` before this (Unix seconds); `None` = every token.
    pub issued_before: Option<u64>,
    /// The entry expires at this time (Unix seconds).
    pub until: u64,
}

/// Checks a value: non-empty, at most 256 bytes, no whitespace, `=` or control characters.
///
/// # Errors
/// What is wrong, in words.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 256 {
        return Err("must be 1 to 256 bytes".into());
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '=')
    {
        return Err(format!(
            "{value:?} must not contain spaces, '=' or control characters"
        ));
    }
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
        .to_string()
}

/// Parses an RFC 3339 time (or Unix seconds) into Unix seconds.
///
/// # Errors
/// What is wrong, in words.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-12-03T16:00:00Z: {e}"))?
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("{text:?} is before 1970"))
}

impl Entry {
    /// The Redis member (the score is `until`).
    #[must_use]
    pub fn member(&self) -> String {
        match self.issued_before {
            None => format!("{}={}", self.kind.as_str(), self.value),
            Some(t) => format!("{}={} issued_before={t}", self.kind.as_str(), self.value),
        }
    }

    /// An entry from a Redis member and its score.
    #[must_use]
    pub fn from_member(member: &str, until: u64) -> Option<Self> {
        let mut parts = member.split(' ');
        let (kind, value) = parts.next()?.split_once('=')?;
        let kind = Kind::parse(kind)?;
        let issued_before = match parts.next() {
            None => None,
            Some(p) => Some(p.strip_prefix("issued_before=")?.parse().ok()?),
        };
        check_value(value).ok()?;
        Some(Self {
            kind,
            value: kind.normalize(value).into_owned(),
            issued_before,
            until,
        })
    }

    /// The file line.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{}={} until={}",
            self.kind.as_str(),
            self.value,
            rfc3339(self.until)
        );
        if let Some(t) = self.issued_before {
            line.push_str(&format!(" issued_before={}", rfc3339(t)));
        }
        line
    }

    /// An entry from a file line; `Ok(None)` for a blank or comment line.
    ///
    /// # Errors
    /// What is wrong with the line.
    pub fn parse_line(line: &str) -> Result<Option<Self>, String> {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            return Ok(None);
        }
        let mut subject = None;
        let mut until = None;
        let mut issued_before = None;
        for field in line.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("{field:?} is not key=value"))?;
            match k {
                "until" => until = Some(parse_time(v)?),
                "issued_before" => issued_before = Some(parse_time(v)?),
                _ => {
                    let kind = Kind::parse(k).ok_or_else(|| {
                        format!("{k:?} is not oid, client, tenant, jti, until or issued_before")
                    })?;
                    if subject.is_some() {
                        return Err("names more than one of oid, client, tenant, jti".into());
                    }
                    check_value(v)?;
                    subject = Some((kind, kind.normalize(v).into_owned()));
                }
            }
        }
        let (kind, value) = subject.ok_or("names none of oid, client, tenant, jti")?;
        let until = until.ok_or("has no until= (every entry expires)")?;
        Ok(Some(Self {
            kind,
            value,
            issued_before,
            until,
        }))
    }
}

/// Every entry of a file, and a problem per line that is not one.
#[must_use]
pub fn parse_file(text: &str) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match Entry::parse_line(line) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(p) => problems.push(format!("line {}: {p}", i + 1)),
        }
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_members_round_trip() {
        let e = Entry {
            kind: Kind::Oid,
            value: "aaaa".into(),
            issued_before: Some(1_764_000_000),
            until: 1_764_100_000,
        };
        let line = e.to_line();
        assert_eq!(
            line,
            "oid=aaaa until=2025-11-25T19:46:40Z issued_before=2025-11-24T16:00:00Z"
        );
        assert_eq!(Entry::parse_line(&line), Ok(Some(e.clone())));
        assert_eq!(Entry::from_member(&e.member(), e.until), Some(e));
        let j = Entry::parse_line("jti=AbC until=100 # a comment").expect("line");
        assert_eq!(
            j.map(|e| (e.kind, e.value)),
            Some((Kind::Jti, "AbC".into()))
        );
        let c = Entry::parse_line("client=ABCD until=100").expect("line");
        assert_eq!(c.map(|e| e.value), Some("abcd".into()));
    }

    #[test]
    fn bad_lines_are_named() {
        let (entries, problems) = parse_file(
            "\n# only a comment\noid=a\nuser=x until=1\noid=a client=b until=1\noid=a until=yesterday\ntenant=t until=1\n",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("line 3: has no until="));
        assert!(Entry::from_member("oid=a b", 1).is_none());
        assert!(Entry::from_member("nope=a", 1).is_none());
        assert!(check_value("a b").is_err() && check_value("").is_err());
    }
}
