//! A small Redis client for what the gateway shares between replicas (rate-limit counters,
//! the revocation list): RESP2 over one TCP connection per slot, commands pipelined, every
//! call under a short timeout, and a circuit that fails calls at once while Redis is down.
//!
//! A leaf: it imports nothing of the crate. Hand-written rather than the `redis` crate
//! because the gateway needs five commands (`EVALSHA`/`EVAL`, `ZADD`, `ZREM`, `ZRANGEBYSCORE`,
//! `PING`) and control over every deadline and reconnect, and the crate (with its `combine`
//! parser, `url`, `sha1_smol`, `tokio-util`) costs more compile time in CI than this file.
//!
//! While Redis is unreachable: the first failure opens the circuit for a backoff (50 ms,
//! doubling to 2 s, with jitter so replicas do not retry in step); calls fail at once with
//! [`Error::Down`]; when the backoff is over one call (and only one) tries a fresh
//! connection, and its success closes the circuit. No request ever waits longer than
//! `timeout` for Redis.

use crate::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connections kept open to Redis (calls are spread over them).
const SLOTS: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Largest bulk string or array accepted in a reply.
const MAX_REPLY_LEN: i64 = 64 * 1024 * 1024;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Ok(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`): Redis answered, the command failed.
    Error(String),
}

impl Value {
    /// The integer of an integer reply (or of a bulk string holding one).
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis is unreachable (retrying in the background)")]
    Down,
    #[error("redis protocol: {0}")]
    Protocol(String),
}

impl Error {
    /// A short label for metrics.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
            Self::Down => "down",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// Where Redis is: parsed from `redis://[user:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
    }
}

impl Target {
    /// Parses a `redis://` URL.
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("rediss://") {
            return Err("rediss:// (TLS) is not supported; use redis:// on a private network or a local TLS tunnel".into());
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(format!("{url:?} must start with redis://"));
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse::<u32>()
                    .map_err(|_| format!("database {db:?} is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or("unclosed [ in the host")?;
            (h.to_owned(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p),
                None => (hostport.to_owned(), ""),
            }
        };
        if host.is_empty() {
            return Err("needs a host, e.g. redis://127.0.0.1:6379/0".into());
        }
        let port = if port.is_empty() {
            6379
        } else {
            port.parse::<u16>()
                .map_err(|_| format!("port {port:?} is not a number"))?
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(decode(p))),
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (None, Some(decode(a))),
            },
        };
        Ok(Self {
            host,
            port,
            db,
            username,
            password,
        })
    }
}

/// One open connection.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

/// The circuit: open (failing fast) until `retry_at`.
#[derive(Debug)]
struct Circuit {
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// A Redis client: a few connections, each used by one call at a time, and a circuit.
pub struct Client {
    target: Target,
    timeout: Duration,
    slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    circuit: Mutex<Circuit>,
    /// Set while one call probes a Redis that was down.
    probing: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("redis::Client")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The one call allowed through after a backoff; dropping it lets the next one probe.
struct Probe<'c> {
    client: &'c Client,
    active: bool,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if self.active {
            self.client.probing.store(false, Relaxed);
        }
    }
}

/// Encodes one command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Client {
    /// A client for `target`; connects on first use. `timeout` bounds every call,
    /// connecting included.
    #[must_use]
    pub fn new(target: Target, timeout: Duration) -> Self {
        Self {
            target,
            timeout,
            slots: (0..SLOTS).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            circuit: Mutex::new(Circuit {
                retry_at: None,
                backoff: FIRST_BACKOFF,
            }),
            probing: AtomicBool::new(false),
        }
    }

    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One command.
    ///
    /// # Errors
    /// See [`Error`]; an error reply is a [`Value::Error`], not an `Err`.
    pub async fn query(&self, args: &[&[u8]]) -> Result<Value, Error> {
        let mut replies = self.pipeline(&[args]).await?;
        replies
            .pop()
            .ok_or_else(|| Error::Protocol("no reply".into()))
    }

    /// Several commands in one round trip; one reply each, in order.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn pipeline(&self, commands: &[&[&[u8]]]) -> Result<Vec<Value>, Error> {
        // Ends the probe even when the caller's future is dropped mid-call (the client of
        // the request went away): otherwise no call would ever probe again.
        let probe = Probe {
            client: self,
            active: self.admit()?,
        };
        let result = tokio::time::timeout(self.timeout, self.run(commands))
            .await
            .unwrap_or(Err(Error::Timeout(self.timeout)));
        self.settle(result.is_ok());
        drop(probe);
        result
    }

    /// Whether a call may go to Redis now: `Ok(true)` for the one probe after a backoff.
    fn admit(&self) -> Result<bool, Error> {
        let c = lock(&self.circuit);
        match c.retry_at {
            None => Ok(false),
            Some(at) if Instant::now() < at => Err(Error::Down),
            Some(_) => {
                if self
                    .probing
                    .compare_exchange(false, true, Relaxed, Relaxed)
                    .is_ok()
                {
                    Ok(true)
                } else {
                    Err(Error::Down)
                }
            }
        }
    }

    fn settle(&self, ok: bool) {
        let mut c = lock(&self.circuit);
        if ok {
            if c.retry_at.take().is_some() {
                tracing::info!(redis = ?self.target, "redis is reachable again");
            }
            c.backoff = FIRST_BACKOFF;
        } else {
            if c.retry_at.is_none() {
                tracing::warn!(redis = ?self.target, "redis is unreachable: requests follow limits_store.on_error until it is back");
            }
            // Jitter: up to a quarter of the backoff, from the clock's low bits, so replicas
            // that lost Redis together do not come back together.
            let jitter_ns = u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()),
            ) % (u64::try_from(c.backoff.as_nanos() / 4).unwrap_or(1).max(1));
            c.retry_at = Some(Instant::now() + c.backoff + Duration::from_nanos(jitter_ns));
            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn run(&self, commands: &[&[&[u8]]]) -> Result<Vec<Value>, Error> {
        let i = self.next.fetch_add(1, Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        // Taken out for the exchange and put back only after it completed: a connection
        // whose exchange failed, timed out or was abandoned may hold half a reply, and is
        // closed instead of reused.
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let replies = exchange(&mut conn, commands).await?;
        *slot = Some(conn);
        Ok(replies)
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port)).await?;
        stream.set_nodelay(true)?;
        let (r, writer) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(r),
            writer,
        };
        let mut setup: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(p) = &self.target.password {
            let mut auth = vec![b"AUTH".to_vec()];
            if let Some(u) = &self.target.username {
                auth.push(u.as_bytes().to_vec());
            }
            auth.push(p.as_bytes().to_vec());
            setup.push(auth);
        }
        if self.target.db != 0 {
            setup.push(vec![
                b"SELECT".to_vec(),
                self.target.db.to_string().into_bytes(),
            ]);
        }
        if !setup.is_empty() {
            let args: Vec<Vec<&[u8]>> = setup
                .iter()
                .map(|c| c.iter().map(Vec::as_slice).collect())
                .collect();
            let refs: Vec<&[&[u8]]> = args.iter().map(Vec::as_slice).collect();
            for reply in exchange(&mut conn, &refs).await? {
                if let Value::Error(e) = reply {
                    return Err(Error::Protocol(format!("connection setup: {e}")));
                }
            }
        }
        Ok(conn)
    }
}

async fn exchange(conn: &mut Conn, commands: &[&[&[u8]]]) -> Result<Vec<Value>, Error> {
    let mut buf = Vec::with_capacity(256);
    for c in commands {
        encode(&mut buf, c);
    }
    conn.writer.write_all(&buf).await?;
    let mut out = Vec::with_capacity(commands.len());
    for _ in commands {
        out.push(read_one(&mut conn.reader).await?);
    }
    Ok(out)
}

/// Reads one reply; arrays nest at most [`MAX_DEPTH`] deep.
async fn read_one<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Value, Error> {
    read_nested(r, 0).await
}

const MAX_DEPTH: usize = 4;

async fn read_nested<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    depth: usize,
) -> Result<Value, Error> {
    let line = read_line(r).await?;
    let (kind, rest) = line.split_at(1);
    let text = std::str::from_utf8(rest).map_err(|_| Error::Protocol("not UTF-8".into()))?;
    let num = || {
        text.parse::<i64>()
            .map_err(|_| Error::Protocol(format!("bad length {text:?}")))
    };
    match kind[0] {
        b'+' => Ok(Value::Ok(text.to_owned())),
        b'-' => Ok(Value::Error(text.to_owned())),
        b':' => Ok(Value::Int(num()?)),
        b'$' => {
            let n = num()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            if n > MAX_REPLY_LEN {
                return Err(Error::Protocol("reply too large".into()));
            }
            let n = usize::try_from(n).map_err(|_| Error::Protocol("length".into()))?;
            let mut b = vec![0; n + 2];
            r.read_exact(&mut b).await?;
            b.truncate(n);
            Ok(Value::Bulk(b))
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            if n > MAX_REPLY_LEN {
                return Err(Error::Protocol("reply too large".into()));
            }
            if depth >= MAX_DEPTH {
                return Err(Error::Protocol("reply nested too deep".into()));
            }
            let n = usize::try_from(n).map_err(|_| Error::Protocol("length".into()))?;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(Box::pin(read_nested(r, depth + 1)).await?);
            }
            Ok(Value::Array(items))
        }
        other => Err(Error::Protocol(format!(
            "unexpected reply type {:?}",
            other as char
        ))),
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, Error> {
    let mut line = Vec::with_capacity(32);
    let n = r.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(Error::Protocol("bad line".into()));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// The SHA-1 of a script, hex, as `EVALSHA` names it.
#[must_use]
pub fn script_sha1(script: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        script.as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `script` by its SHA-1 (`EVALSHA`), loading it with `EVAL` when Redis does not
/// know it yet (`NOSCRIPT`: first use, or after a restart or `SCRIPT FLUSH`).
///
/// # Errors
/// See [`Error`]; a script error is a [`Value::Error`].
pub async fn eval(
    client: &Client,
    script: &str,
    sha1: &str,
    keys: &[&[u8]],
    args: &[&[u8]],
) -> Result<Value, Error> {
    let numkeys = keys.len().to_string();
    let mut cmd: Vec<&[u8]> = vec![b"EVALSHA", sha1.as_bytes(), numkeys.as_bytes()];
    cmd.extend_from_slice(keys);
    cmd.extend_from_slice(args);
    let reply = client.query(&cmd).await?;
    match &reply {
        Value::Error(e) if e.starts_with("NOSCRIPT") => {
            cmd[0] = b"EVAL";
            cmd[1] = script.as_bytes();
            client.query(&cmd).await
        }
        _ => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t = Target::parse("redis://127.0.0.1:6380/2").expect("url");
        assert_eq!((t.host.as_str(), t.port, t.db), ("127.0.0.1", 6380, 2));
        let t = Target::parse("redis://:s%40cret@cache").expect("url");
        assert_eq!((t.port, t.password.as_deref()), (6379, Some("s@cret")));
        let t = Target::parse("redis://app:pw@[::1]:7000").expect("url");
        assert_eq!(
            (t.host.as_str(), t.username.as_deref()),
            ("::1", Some("app"))
        );
        assert!(Target::parse("rediss://x").is_err());
        assert!(Target::parse("http://x").is_err());
        assert!(Target::parse("redis://x/db").is_err());
        assert!(Target::parse("redis://:6379").is_err());
        // The password never shows in Debug.
        let t = Target::parse("redis://:hunter2@h").expect("url");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn replies_parse() {
        let mut input: &[u8] =
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n";
        let mut r = BufReader::new(&mut input);
        assert_eq!(read_one(&mut r).await.expect("ok"), Value::Ok("OK".into()));
        assert_eq!(
            read_one(&mut r).await.expect("err"),
            Value::Error("ERR no".into())
        );
        assert_eq!(read_one(&mut r).await.expect("int").as_int(), Some(42));
        assert_eq!(
            read_one(&mut r).await.expect("bulk"),
            Value::Bulk(b"abc".to_vec())
        );
        assert_eq!(read_one(&mut r).await.expect("nil"), Value::Nil);
        assert_eq!(
            read_one(&mut r).await.expect("array"),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::Bulk(b"x".to_vec())])
            ])
        );
        assert!(read_one(&mut r).await.is_err(), "end of input");
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(
            script_sha1("return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    /// A server whose first connection never answers, and every later one at once: the
    /// connection that timed out is closed, so no call reads another's reply.
    #[tokio::test]
    async fn a_late_reply_is_never_taken_for_the_next_ones() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let late = std::mem::take(&mut first);
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        // *1 $4 ECHO-ish: read "*2", "$4", "ECHO", "$n", value.
                        let mut lines = Vec::new();
                        for _ in 0..5 {
                            let mut l = String::new();
                            if r.read_line(&mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            lines.push(l.trim_end().to_owned());
                        }
                        if late {
                            // Never answers in time.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let v = &lines[4];
                        let _ = w
                            .write_all(format!("${}\r\n{v}\r\n", v.len()).as_bytes())
                            .await;
                    }
                });
            }
        });
        let c = Client::new(
            Target::parse(&format!("redis://127.0.0.1:{port}")).expect("url"),
            Duration::from_millis(500),
        );
        assert!(matches!(
            c.query(&[b"ECHO", b"one"]).await,
            Err(Error::Timeout(_))
        ));
        // The circuit opened; once it lets a call through, that call gets its own reply.
        tokio::time::sleep(Duration::from_millis(150)).await;
        for word in ["two", "three", "four", "five", "six"] {
            let reply = c.query(&[b"ECHO", word.as_bytes()]).await;
            match reply {
                Ok(v) => assert_eq!(v, Value::Bulk(word.as_bytes().to_vec())),
                Err(Error::Down) => tokio::time::sleep(Duration::from_millis(150)).await,
                Err(e) => panic!("{word}: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_then_one_call_probes() {
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let c = Client::new(
            Target::parse(&format!("redis://127.0.0.1:{port}")).expect("url"),
            Duration::from_millis(200),
        );
        assert!(matches!(
            c.query(&[b"PING"]).await,
            Err(Error::Io(_) | Error::Timeout(_))
        ));
        // The circuit is open: no connection attempt.
        assert!(matches!(c.query(&[b"PING"]).await, Err(Error::Down)));
        assert!(matches!(c.admit(), Err(Error::Down)));
    }
}
