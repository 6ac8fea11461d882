//! Where `entragate revoke`, `unrevoke` and `revoked` write and read: the Redis sorted set
//! when `limits_store.url` is set (every replica reads it), else `revocation.file`
//! (rewritten whole, atomically; every replica reading that file picks it up).

use std::path::PathBuf;
use std::sync::Arc;

use super::entry::{self, Entry, Kind};
use super::{REDIS_KEY, unix_now};
use crate::config::Config;
use crate::redis::{self, Client, Value};

/// The store the commands use.
#[derive(Debug)]
pub enum Store {
    Redis(Arc<Client>),
    File(PathBuf),
}

impl Store {
    /// The store `config` names.
    ///
    /// # Errors
    /// Neither `limits_store.url` nor `revocation.file` is set.
    pub fn of(config: &Config) -> Result<Self, String> {
        if let Some(target) = &config.limits_store.redis {
            // A command may wait longer than a request: it runs once.
            let timeout = config
                .limits_store
                .timeout
                .max(std::time::Duration::from_secs(2));
            return Ok(Self::Redis(Arc::new(Client::new(target.clone(), timeout))));
        }
        if let Some(file) = &config.revocation.file {
            return Ok(Self::File(PathBuf::from(file)));
        }
        Err("no revocation store is configured: set limits_store.url (Redis, shared by every replica) or revocation.file".into())
    }

    /// Where, in words.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Redis(c) => format!("Redis {:?}, key {REDIS_KEY}", c.target()),
            Self::File(p) => format!("file {}", p.display()),
        }
    }

    /// Adds (or extends) `e`.
    ///
    /// # Errors
    /// The store cannot be written.
    pub async fn add(&self, e: &Entry) -> Result<(), String> {
        match self {
            Self::Redis(c) => {
                let until = e.until.to_string();
                let member = e.member();
                let expired = format!("({}", unix_now());
                let replies = c
                    .pipeline(&[
                        &[
                            b"ZADD",
                            REDIS_KEY.as_bytes(),
                            until.as_bytes(),
                            member.as_bytes(),
                        ],
                        &[
                            b"ZREMRANGEBYSCORE",
                            REDIS_KEY.as_bytes(),
                            b"-inf",
                            expired.as_bytes(),
                        ],
                    ])
                    .await
                    .map_err(|e| e.to_string())?;
                check_replies(&replies)
            }
            Self::File(path) => {
                let mut entries = read_file(path)?;
                entries.retain(|x| {
                    !(x.kind == e.kind && x.value == e.value && x.issued_before == e.issued_before)
                });
                entries.push(e.clone());
                write_file(path, &entries)
            }
        }
    }

    /// Removes every entry naming `kind` = `value`; how many there were.
    ///
    /// # Errors
    /// The store cannot be read or written.
    pub async fn remove(&self, kind: Kind, value: &str) -> Result<usize, String> {
        let value = kind.normalize(value).into_owned();
        match self {
            Self::Redis(c) => {
                let all = read_redis(c, 0).await.map_err(|e| e.to_string())?;
                let members: Vec<String> = all
                    .iter()
                    .filter(|e| e.kind == kind && e.value == value)
                    .map(Entry::member)
                    .collect();
                if members.is_empty() {
                    return Ok(0);
                }
                let mut cmd: Vec<&[u8]> = vec![b"ZREM", REDIS_KEY.as_bytes()];
                cmd.extend(members.iter().map(|m| m.as_bytes()));
                let reply = c.query(&cmd).await.map_err(|e| e.to_string())?;
                check_replies(std::slice::from_ref(&reply))?;
                Ok(members.len())
            }
            Self::File(path) => {
                let mut entries = read_file(path)?;
                let before = entries.len();
                entries.retain(|x| !(x.kind == kind && x.value == value));
                let removed = before - entries.len();
                if removed > 0 {
                    write_file(path, &entries)?;
                }
                Ok(removed)
            }
        }
    }

    /// The entries in force now.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn list(&self) -> Result<Vec<Entry>, String> {
        let now = unix_now();
        let mut entries = match self {
            Self::Redis(c) => read_redis(c, now).await.map_err(|e| e.to_string())?,
            Self::File(path) => read_file(path)?,
        };
        entries.retain(|e| e.until > now);
        entries.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        Ok(entries)
    }
}

fn check_replies(replies: &[Value]) -> Result<(), String> {
    for r in replies {
        if let Value::Error(e) = r {
            return Err(format!("redis: {e}"));
        }
    }
    Ok(())
}

/// The entries in the Redis set that are in force after `now` (Unix seconds; 0 = all).
///
/// # Errors
/// Redis cannot be reached, or did not answer with the set.
pub async fn read_redis(client: &Client, now: u64) -> Result<Vec<Entry>, redis::Error> {
    let min = format!("({now}");
    let reply = client
        .query(&[
            b"ZRANGEBYSCORE",
            REDIS_KEY.as_bytes(),
            min.as_bytes(),
            b"+inf",
            b"WITHSCORES",
        ])
        .await?;
    let Value::Array(items) = reply else {
        return Err(redis::Error::Protocol(format!(
            "ZRANGEBYSCORE answered {reply:?}"
        )));
    };
    Ok(items
        .chunks_exact(2)
        .filter_map(|pair| {
            let Value::Bulk(member) = &pair[0] else {
                return None;
            };
            let score: f64 = match &pair[1] {
                Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok()?,
                _ => return None,
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let until = score.max(0.0) as u64;
            Entry::from_member(std::str::from_utf8(member).ok()?, until)
        })
        .collect())
}

fn read_file(path: &std::path::Path) -> Result<Vec<Entry>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (entries, problems) = entry::parse_file(&text);
            if let Some(p) = problems.first() {
                return Err(format!(
                    "{}: {p} (fix the file by hand first; nothing was changed)",
                    path.display()
                ));
            }
            Ok(entries)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the file whole: a sibling first, then a rename, so a replica never reads half.
fn write_file(path: &std::path::Path, entries: &[Entry]) -> Result<(), String> {
    let now = unix_now();
    let mut text = String::from(
        "# entragate revocation list: written by `entragate revoke` / `unrevoke`.\n# One entry a line: oid|client|tenant|jti=<value> until=<RFC 3339> [issued_before=<RFC 3339>]\n",
    );
    for e in entries.iter().filter(|e| e.until > now) {
        text.push_str(&e.to_line());
        text.push('\n');
    }
    let tmp = path.with_extension("entragate-new");
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}
