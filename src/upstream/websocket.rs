//! WebSocket tunnels (RFC 6455) through the proxy: which request is an opening handshake,
//! the two headers that must survive the hop for it, and the relay once both sides have
//! switched protocols.
//!
//! The relay copies bytes both ways through one buffer per direction and reads only the
//! frame headers as they pass (RFC 6455 §5.2: 2 to 14 bytes each; payloads are skipped by
//! their length, never copied or unmasked, so `permessage-deflate` and any other extension
//! pass unchanged). Knowing where each frame ends lets the gateway end a tunnel cleanly:
//!
//! - at the deadline (the `exp` of the token that opened it), each direction is stopped at
//!   its next frame boundary (a control frame may sit between two fragments of a message,
//!   so a boundary is enough), then the client gets a Close `1008` "token expired"
//!   (unmasked, as a server sends) and the upstream the same Close masked with a random key
//!   (as a client sends); each peer's own Close is awaited for [`Limits::grace`], then both
//!   connections are shut down. A direction that reaches no boundary within the grace (a
//!   peer stuck in the middle of a frame) is cut without a Close;
//! - after [`Limits::idle`] without a byte either way, the same with `1001` "idle timeout";
//! - when a peer closes (a Close frame, or its connection ends), the other side's
//!   connection is shut down once its own bytes are through, as any TCP proxy does; once
//!   both have sent Close and one connection has ended, the closing handshake is complete
//!   and the tunnel ends.
//!
//! It knows nothing of tokens: the proxy hands it the deadline.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

/// True for an HTTP/1.1 WebSocket opening handshake (RFC 6455 §4.1): a `GET` whose
/// `Connection` names `upgrade` and whose `Upgrade` names `websocket`.
#[must_use]
pub fn is_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    *method == Method::GET
        && version == Version::HTTP_11
        && names(headers, &header::CONNECTION, "upgrade")
        && names(headers, &header::UPGRADE, "websocket")
}

/// True when a comma-separated header lists `token` (case-insensitive; an `Upgrade`
/// protocol's `/version` is ignored).
fn names(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split('/')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

/// Puts back, after hop-by-hop removal, the two headers a WebSocket upgrade needs on its
/// next hop (the upstream's request, or the 101 to the client).
pub fn keep_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// How long a tunnel may live and wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When the gateway closes it (the token's expiry); `None`: never.
    pub deadline: Option<Instant>,
    /// No bytes either way for this long closes it.
    pub idle: Duration,
    /// How long each step of a close by the gateway may take: reaching a frame boundary,
    /// then the peers' Close.
    pub grace: Duration,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The gateway closed it at the token's expiry (1008).
    TokenExpired,
    /// The gateway closed it after `upstream.websocket_idle_timeout` without traffic (1001).
    IdleTimeout,
    /// The client sent Close first, or its connection ended.
    ClientClosed,
    /// The upstream sent Close first, or its connection ended.
    UpstreamClosed,
}

impl End {
    /// The reason's name in the log and `entragate_websocket_tunnels_closed_total`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TokenExpired => "token_expired",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientClosed => "client_closed",
            Self::UpstreamClosed => "upstream_closed",
        }
    }

    /// The Close frame the gateway sends for this end (only for its own).
    const fn close(self) -> (u16, &'static str) {
        match self {
            Self::IdleTimeout => (1001, "idle timeout"),
            _ => (1008, "token expired"),
        }
    }
}

/// How a tunnel ended, for the log.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    pub end: End,
    /// Bytes the client sent through the tunnel.
    pub from_client: u64,
    /// Bytes the upstream sent through the tunnel.
    pub from_upstream: u64,
    /// For a close by the gateway: which peers got its Close frame (client, upstream).
    pub close_sent: (bool, bool),
}

/// Where frame boundaries are in one direction's byte stream: the header being read, or
/// what is left of the payload. Never holds payload bytes.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    head: [u8; 14],
    have: usize,
    remaining: u64,
    /// Close frames (opcode 8) whose header has passed.
    closes: u64,
}

impl Frames {
    /// True between two frames.
    #[must_use]
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Close frames seen so far.
    #[must_use]
    pub fn closes(&self) -> u64 {
        self.closes
    }

    /// Follows the frames over `bytes`. With `stop`, stops at the first frame boundary
    /// (possibly at once) and returns its offset in `bytes`; otherwise (or when none comes)
    /// goes over all of them and returns `None`.
    pub fn feed(&mut self, bytes: &[u8], stop: bool) -> Option<usize> {
        let mut i = 0;
        loop {
            if stop && self.at_boundary() {
                return Some(i);
            }
            let &byte = bytes.get(i)?;
            if self.remaining > 0 {
                let left = (bytes.len() - i) as u64;
                let take = self.remaining.min(left);
                self.remaining -= take;
                // `take` is at most what is left of `bytes`, so it fits.
                i += usize::try_from(take).unwrap_or(bytes.len() - i);
                continue;
            }
            self.head[self.have] = byte;
            self.have += 1;
            i += 1;
            if self.have >= 2 && self.have == header_len(self.head[1]) {
                self.remaining = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => u64::from_be_bytes([
                        self.head[2],
                        self.head[3],
                        self.head[4],
                        self.head[5],
                        self.head[6],
                        self.head[7],
                        self.head[8],
                        self.head[9],
                    ]),
                    n => u64::from(n),
                };
                if self.head[0] & 0x0f == 0x8 {
                    self.closes += 1;
                }
                self.have = 0;
            }
        }
    }
}

/// The length of a frame header whose second byte is `b1`: 2, the extended length (2 or 8),
/// and the masking key (4) when the mask bit is set.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 == 0 { 0 } else { 4 }
}

/// A Close frame with `code` and `reason` (at most 123 bytes), masked with `mask` when given
/// (a frame to a server must be masked, RFC 6455 §5.3).
#[must_use]
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x88); // FIN, Close
    // At most 125 bytes: the 7-bit length.
    let len = u8::try_from(payload.len()).unwrap_or(125);
    match mask {
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
    }
    frame
}

/// A masking key from the system's random source (RFC 6455 §5.3: unpredictable).
fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut key).is_err() {
        // Never on a working system; a fixed key is still a valid frame.
        key = [0x5a, 0x17, 0xc3, 0x9e];
    }
    key
}

/// Bytes relayed at once in each direction.
const BUFFER: usize = 16 * 1024;

const CLIENT: u8 = 1;
const UPSTREAM: u8 = 2;

/// What the two directions tell the tunnel: traffic and who closed first.
struct Shared {
    started: Instant,
    /// Milliseconds after `started` of the last byte read either way.
    last_ms: AtomicU64,
    from_client: AtomicU64,
    from_upstream: AtomicU64,
    /// [`CLIENT`] or [`UPSTREAM`]: the side that first sent Close or ended (0: neither yet).
    first_close: AtomicU8,
    /// The sides that have sent a Close frame ([`CLIENT`] | [`UPSTREAM`] bits).
    sent_close: AtomicU8,
}

impl Shared {
    fn touch(&self, side: u8, n: usize) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        let counter = if side == CLIENT {
            &self.from_client
        } else {
            &self.from_upstream
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn closed_by(&self, side: u8) {
        let _ = self
            .first_close
            .compare_exchange(0, side, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn idle_since(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// How one direction's copy ended.
enum Pump<R, W> {
    /// Its reader ended (or failed); its writer was shut down.
    Ended,
    /// Stopped at a frame boundary as asked: the halves, the frame state and the bytes read
    /// past the boundary (not sent).
    Stopped {
        reader: R,
        writer: W,
        frames: Frames,
        rest: Vec<u8>,
    },
}

/// Copies `reader` to `writer`, following the frames, until the reader ends or `stop` is
/// set and the stream is at a frame boundary.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    side: u8,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Pump<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Frames::default();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let stopping = *stop.borrow();
        if stopping && frames.at_boundary() {
            return Pump::Stopped {
                reader,
                writer,
                frames,
                rest: Vec::new(),
            };
        }
        let read = tokio::select! {
            read = reader.read(&mut buf) => read,
            changed = stop.changed(), if !stopping => {
                if changed.is_err() {
                    // The tunnel is gone; nothing will read what this copies.
                    return Pump::Ended;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                shared.closed_by(side);
                let _ = writer.shutdown().await;
                return Pump::Ended;
            }
            Ok(n) => n,
        };
        shared.touch(side, n);
        let closes = frames.closes();
        let stopping = *stop.borrow();
        let boundary = frames.feed(&buf[..n], stopping);
        if frames.closes() > closes {
            shared.closed_by(side);
            shared.sent_close.fetch_or(side, Ordering::Relaxed);
        }
        let send = boundary.unwrap_or(n);
        if writer.write_all(&buf[..send]).await.is_err() {
            let other = if side == CLIENT { UPSTREAM } else { CLIENT };
            shared.closed_by(other);
            return Pump::Ended;
        }
        if boundary.is_some() {
            return Pump::Stopped {
                reader,
                writer,
                frames,
                rest: buf[send..n].to_vec(),
            };
        }
    }
}

/// Reads `reader` (whose frames are at a boundary, `rest` already read) until a Close frame
/// has passed or it ends; true for a Close.
async fn peer_close<R: AsyncRead + Unpin>(
    reader: &mut R,
    frames: &mut Frames,
    rest: &[u8],
) -> bool {
    let before = frames.closes();
    frames.feed(rest, false);
    let mut buf = vec![0u8; BUFFER];
    while frames.closes() == before {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                frames.feed(&buf[..n], false);
            }
        }
    }
    true
}

/// Relays `client` and `upstream` (both already switched to WebSocket) until the tunnel ends
/// (see the module docs).
pub async fn relay<C, U>(client: C, upstream: U, limits: Limits) -> Closed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_reader, client_writer) = tokio::io::split(client);
    let (upstream_reader, upstream_writer) = tokio::io::split(upstream);
    let shared = Shared {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        from_client: AtomicU64::new(0),
        from_upstream: AtomicU64::new(0),
        first_close: AtomicU8::new(0),
        sent_close: AtomicU8::new(0),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let up = pump(
        client_reader,
        upstream_writer,
        CLIENT,
        &shared,
        stop_rx.clone(),
    );
    let down = pump(upstream_reader, client_writer, UPSTREAM, &shared, stop_rx);
    tokio::pin!(up, down);
    let (mut up_end, mut down_end) = (None, None);
    let mut gateway_end: Option<(End, Instant)> = None;
    loop {
        if up_end.is_some() && down_end.is_some() {
            break;
        }
        // One side has ended after both sent Close: the closing handshake is complete
        // (RFC 6455 §7.1.1), so the other need not be waited for.
        if (up_end.is_some() || down_end.is_some())
            && shared.sent_close.load(Ordering::Relaxed) == CLIENT | UPSTREAM
        {
            break;
        }
        let idle_at = shared.idle_since() + limits.idle;
        let grace_at = gateway_end.map(|(_, at)| at + limits.grace);
        tokio::select! {
            end = &mut up, if up_end.is_none() => up_end = Some(end),
            end = &mut down, if down_end.is_none() => down_end = Some(end),
            () = sleep_until(limits.deadline), if gateway_end.is_none() && limits.deadline.is_some() => {
                gateway_end = Some((End::TokenExpired, Instant::now()));
                let _ = stop_tx.send(true);
            }
            () = tokio::time::sleep_until(idle_at), if gateway_end.is_none() => {
                if shared.idle_since() + limits.idle <= Instant::now() {
                    gateway_end = Some((End::IdleTimeout, Instant::now()));
                    let _ = stop_tx.send(true);
                }
            }
            () = sleep_until(grace_at), if grace_at.is_some() => break,
        }
        // Once stopping, a direction that has stopped or ended is done.
        if gateway_end.is_some() && up_end.is_some() && down_end.is_some() {
            break;
        }
    }
    let mut close_sent = (false, false);
    let end = match gateway_end {
        Some((end, _)) => {
            let (code, reason) = end.close();
            // Upstream to client stopped at a boundary: the client can be told. Client to
            // upstream stopped at one: the upstream can be told (masked). Each holds the
            // writer to tell with and the reader of the other peer's direction.
            let mut to_client = stopped(down_end);
            let mut to_upstream = stopped(up_end);
            if let Some((writer, ..)) = to_client.as_mut() {
                close_sent.0 = send(writer, &close_frame(code, reason, None), limits.grace).await;
            }
            if let Some((writer, ..)) = to_upstream.as_mut() {
                let frame = close_frame(code, reason, Some(mask_key()));
                close_sent.1 = send(writer, &frame, limits.grace).await;
            }
            // Each told peer's own Close, for a moment: the client's arrives on the client's
            // reader (held with the upstream's writer), the upstream's on the upstream's.
            let told = close_sent;
            let wait_client = async {
                if let (true, Some((_, reader, frames, rest))) = (told.0, to_upstream.as_mut()) {
                    peer_close(reader, frames, rest).await;
                }
            };
            let wait_upstream = async {
                if let (true, Some((_, reader, frames, rest))) = (told.1, to_client.as_mut()) {
                    peer_close(reader, frames, rest).await;
                }
            };
            let _ = tokio::time::timeout(limits.grace, async {
                tokio::join!(wait_client, wait_upstream)
            })
            .await;
            if let Some((writer, ..)) = to_client.as_mut() {
                let _ = tokio::time::timeout(limits.grace, writer.shutdown()).await;
            }
            if let Some((writer, ..)) = to_upstream.as_mut() {
                let _ = tokio::time::timeout(limits.grace, writer.shutdown()).await;
            }
            end
        }
        None => match shared.first_close.load(Ordering::Relaxed) {
            UPSTREAM => End::UpstreamClosed,
            _ => End::ClientClosed,
        },
    };
    Closed {
        end,
        from_client: shared.from_client.load(Ordering::Relaxed),
        from_upstream: shared.from_upstream.load(Ordering::Relaxed),
        close_sent,
    }
}

/// A direction stopped at a frame boundary, as (its writer, its reader, the reader's frames,
/// bytes read past the boundary).
fn stopped<R, W>(end: Option<Pump<R, W>>) -> Option<(W, R, Frames, Vec<u8>)> {
    match end {
        Some(Pump::Stopped {
            reader,
            writer,
            frames,
            rest,
        }) => Some((writer, reader, frames, rest)),
        _ => None,
    }
}

/// Writes `frame` within `within`; true when it went out.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8], within: Duration) -> bool {
    let write = async {
        writer.write_all(frame).await?;
        writer.flush().await
    };
    matches!(tokio::time::timeout(within, write).await, Ok(Ok(())))
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A frame: `opcode`, `payload`, masked with a fixed key when `masked`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | u8::try_from(n).expect("small")),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&u16::try_from(n).expect("16 bits").to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [1, 2, 3, 4];
            f.extend_from_slice(&key);
            f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    #[test]
    fn requests_that_ask_for_a_websocket() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&Method::GET, Version::HTTP_11, &h));
        assert!(!is_upgrade(&Method::POST, Version::HTTP_11, &h));
        assert!(!is_upgrade(&Method::GET, Version::HTTP_2, &h));
        assert!(!is_upgrade(&Method::GET, Version::HTTP_10, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&Method::GET, Version::HTTP_11, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_upgrade(&Method::GET, Version::HTTP_11, &h));
    }

    #[test]
    fn frame_boundaries_are_found_in_any_split() {
        let mut stream = Vec::new();
        let frames = [
            frame(false, 0x1, b"hello", true),
            frame(true, 0x9, b"", true), // a ping between two fragments
            frame(true, 0x0, &[7u8; 300], true),
            frame(true, 0x2, &[9u8; 70_000], false),
            frame(true, 0x8, &[0x03, 0xe8], true),
        ];
        let mut ends = Vec::new();
        for f in &frames {
            stream.extend_from_slice(f);
            ends.push(stream.len());
        }
        // Whole: every frame seen, one Close, at a boundary at the end.
        let mut all = Frames::default();
        assert_eq!(all.feed(&stream, false), None);
        assert!(all.at_boundary());
        assert_eq!(all.closes(), 1);
        // Byte by byte: at a boundary exactly at each frame's end.
        let mut one = Frames::default();
        for (i, b) in stream.iter().enumerate() {
            one.feed(std::slice::from_ref(b), false);
            assert_eq!(one.at_boundary(), ends.contains(&(i + 1)), "after byte {i}");
        }
        // Stopping: at once when at a boundary, else at the end of the frame under way.
        let mut f = Frames::default();
        assert_eq!(f.feed(&stream, true), Some(0));
        assert_eq!(f.feed(&stream[..3], false), None);
        assert_eq!(f.feed(&stream[3..], true), Some(ends[0] - 3));
        let mut g = Frames::default();
        g.feed(&stream[..ends[2] + 5], false);
        assert_eq!(
            g.feed(&stream[ends[2] + 5..], true),
            Some(ends[3] - ends[2] - 5)
        );
        assert_eq!(g.closes(), 0);
    }

    #[test]
    fn close_frames_for_client_and_server() {
        let to_client = close_frame(1008, "token expired", None);
        assert_eq!(&to_client[..4], &[0x88, 15, 0x03, 0xf0]);
        assert_eq!(&to_client[4..], b"token expired");
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        let to_server = close_frame(1008, "token expired", Some(key));
        assert_eq!(&to_server[..2], &[0x88, 0x80 | 15]);
        assert_eq!(&to_server[2..6], &key);
        let unmasked: Vec<u8> = to_server[6..]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(unmasked, to_client[2..]);
        let mut f = Frames::default();
        f.feed(&to_server, false);
        assert!(f.at_boundary() && f.closes() == 1);
    }

    /// The relay between two in-memory peers: (client end, upstream end, the relay).
    fn tunnel(limits: Limits) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Closed>) {
        let (client, client_side) = tokio::io::duplex(1 << 20);
        let (upstream, upstream_side) = tokio::io::duplex(1 << 20);
        let relay = tokio::spawn(relay(client_side, upstream_side, limits));
        (client, upstream, relay)
    }

    async fn read_exactly(s: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await.expect("read");
        buf
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_deadline_each_side_gets_a_close_after_its_frame_in_flight() {
        let (mut client, mut upstream, relay) = tunnel(Limits {
            deadline: Some(Instant::now() + Duration::from_secs(3)),
            idle: Duration::from_secs(600),
            grace: Duration::from_secs(1),
        });
        let message = frame(true, 0x1, b"0123456789", true);
        client.write_all(&message[..9]).await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 9).await, &message[..9]);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // The deadline has passed mid-frame (within the grace): the rest of the frame still goes through, and
        // then the Close.
        client.write_all(&message[9..]).await.expect("write");
        assert_eq!(
            read_exactly(&mut upstream, message.len() - 9).await,
            &message[9..]
        );
        let close = read_exactly(&mut upstream, 21).await;
        assert_eq!(
            &close[..2],
            &[0x88, 0x80 | 15],
            "masked Close to the upstream"
        );
        let key = [close[2], close[3], close[4], close[5]];
        let payload: Vec<u8> = close[6..]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(&payload[..2], &1008u16.to_be_bytes());
        assert_eq!(&payload[2..], b"token expired");
        assert_eq!(
            read_exactly(&mut client, 17).await,
            close_frame(1008, "token expired", None)
        );
        // Both answer with their own Close; the relay then ends.
        client
            .write_all(&frame(true, 0x8, &[0x03, 0xf0], true))
            .await
            .expect("write");
        upstream
            .write_all(&frame(true, 0x8, &[0x03, 0xf0], false))
            .await
            .expect("write");
        let closed = relay.await.expect("relay");
        assert_eq!(closed.end, End::TokenExpired);
        assert_eq!(closed.close_sent, (true, true));
        assert_eq!(closed.from_client, message.len() as u64, "bytes relayed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_stuck_in_a_frame_is_cut_after_the_grace() {
        let (mut client, mut upstream, relay) = tunnel(Limits {
            deadline: Some(Instant::now() + Duration::from_secs(1)),
            idle: Duration::from_secs(600),
            grace: Duration::from_secs(1),
        });
        // The upstream starts a 100-byte frame and never finishes it.
        let big = frame(true, 0x2, &[1u8; 100], false);
        upstream.write_all(&big[..20]).await.expect("write");
        assert_eq!(read_exactly(&mut client, 20).await, &big[..20]);
        let closed = relay.await.expect("relay");
        assert_eq!(closed.end, End::TokenExpired);
        assert_eq!(
            closed.close_sent,
            (false, true),
            "only the upstream could be told"
        );
        // The client's connection is cut, without a Close.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_traffic_for_the_idle_timeout_closes_with_1001() {
        let (mut client, mut upstream, relay) = tunnel(Limits {
            deadline: None,
            idle: Duration::from_secs(30),
            grace: Duration::from_secs(1),
        });
        let ping = frame(true, 0x9, b"", true);
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(&ping).await.expect("write");
        assert_eq!(read_exactly(&mut upstream, ping.len()).await, ping);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!relay.is_finished(), "traffic 20 s ago keeps it open");
        assert_eq!(
            read_exactly(&mut client, 16).await,
            close_frame(1001, "idle timeout", None)
        );
        let closed = relay.await.expect("relay");
        assert_eq!(closed.end, End::IdleTimeout);
    }

    #[tokio::test]
    async fn a_close_by_either_peer_is_relayed_and_named() {
        let (mut client, mut upstream, relay) = tunnel(Limits {
            deadline: None,
            idle: Duration::from_secs(600),
            grace: Duration::from_secs(1),
        });
        let close = frame(true, 0x8, &[0x03, 0xe8], false);
        upstream.write_all(&close).await.expect("write");
        assert_eq!(read_exactly(&mut client, close.len()).await, close);
        drop(upstream);
        drop(client);
        let closed = relay.await.expect("relay");
        assert_eq!(closed.end, End::UpstreamClosed);
        assert_eq!(closed.close_sent, (false, false));
    }
}
