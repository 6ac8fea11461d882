//! The access line's fixed formatter: the bytes `tracing-subscriber`'s `fmt` layer writes for
//! [`super::log_event`]'s event (text, or JSON with `flatten_event`), uncoloured and outside any
//! span, written straight into a buffer: integers with `itoa`, the date from a per-thread
//! cache of its seconds, plain strings copied; only what needs escaping, and the upstream
//! time, goes through `fmt`/`serde_json`, the same code `tracing-subscriber` uses for them.
//!
//! The tests feed the same entries through both and compare the bytes.

use std::cell::Cell;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Entry, labels, millis};
use crate::telemetry::LineFormat;

/// Appends the access line for `e` (with its `\n`), as logged at `now` after `elapsed_us`.
pub fn write(
    buf: &mut Vec<u8>,
    format: LineFormat,
    e: &Entry<'_>,
    now: SystemTime,
    elapsed_us: u64,
) {
    match format {
        LineFormat::Text => text(buf, e, now, elapsed_us),
        LineFormat::Json => json(buf, e, now, elapsed_us),
    }
}

fn text(buf: &mut Vec<u8>, e: &Entry<'_>, now: SystemTime, elapsed_us: u64) {
    let (outcome, reason) = labels(e);
    timestamp(buf, now);
    buf.extend_from_slice(b"  INFO entragate::access: request via=");
    debug_str(buf, e.via.as_str());
    if let Some(api) = e.api {
        buf.extend_from_slice(b" api=");
        debug_str(buf, api);
    }
    buf.extend_from_slice(b" method=");
    buf.extend_from_slice(e.method.as_bytes());
    buf.extend_from_slice(b" path=");
    buf.extend_from_slice(e.path.as_bytes());
    buf.extend_from_slice(b" status=");
    integer(buf, e.status);
    buf.extend_from_slice(b" auth.outcome=");
    debug_str(buf, outcome);
    buf.extend_from_slice(b" auth.reason=");
    debug_str(buf, &reason);
    let fields = [
        (&b" jwt.kid="[..], e.facts.kid()),
        (b" jwt.tid=", e.facts.tid()),
        (b" jwt.ver=", e.facts.ver()),
        (b" jwt.client=", e.facts.client()),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            buf.extend_from_slice(name);
            debug_str(buf, v);
        }
    }
    if let Some(ip) = e.client_ip {
        buf.extend_from_slice(b" client.ip=");
        ip_addr(buf, ip);
    }
    if let Some(id) = e.request_id {
        buf.extend_from_slice(b" request_id=");
        debug_str(buf, id);
    }
    if let Some(d) = e.upstream {
        buf.extend_from_slice(b" upstream.ms=");
        millis_debug(buf, d);
    }
    buf.extend_from_slice(b" elapsed_us=");
    integer(buf, elapsed_us);
    buf.push(b'\n');
}

fn json(buf: &mut Vec<u8>, e: &Entry<'_>, now: SystemTime, elapsed_us: u64) {
    let (outcome, reason) = labels(e);
    buf.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(buf, now);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"via\":");
    json_str(buf, e.via.as_str());
    if let Some(api) = e.api {
        buf.extend_from_slice(b",\"api\":");
        json_str(buf, api);
    }
    buf.extend_from_slice(b",\"method\":");
    json_str(buf, e.method);
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, e.path);
    buf.extend_from_slice(b",\"status\":");
    integer(buf, e.status);
    buf.extend_from_slice(b",\"auth.outcome\":");
    json_str(buf, outcome);
    buf.extend_from_slice(b",\"auth.reason\":");
    json_str(buf, &reason);
    let fields = [
        (&b",\"jwt.kid\":"[..], e.facts.kid()),
        (b",\"jwt.tid\":", e.facts.tid()),
        (b",\"jwt.ver\":", e.facts.ver()),
        (b",\"jwt.client\":", e.facts.client()),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            buf.extend_from_slice(name);
            json_str(buf, v);
        }
    }
    if let Some(ip) = e.client_ip {
        buf.extend_from_slice(b",\"client.ip\":\"");
        ip_addr(buf, ip);
        buf.push(b'"');
    }
    if let Some(id) = e.request_id {
        buf.extend_from_slice(b",\"request_id\":");
        json_str(buf, id);
    }
    if let Some(d) = e.upstream {
        buf.extend_from_slice(b",\"upstream.ms\":");
        let _ = serde_json::to_writer(&mut *buf, &millis(d));
    }
    buf.extend_from_slice(b",\"elapsed_us\":");
    integer(buf, elapsed_us);
    buf.extend_from_slice(b",\"target\":\"entragate::access\"}\n");
}

fn integer(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{:?}` of [`millis`]`(d)`, as the `fmt` layer writes the f64. The value is a whole
/// number of microseconds over 1,000, and below 2^40 microseconds (12 days) the f64 nearest
/// that decimal prints as exactly it (Rust's `{:?}` writes the shortest decimal that reads
/// back as the same f64, and no decimal of fewer digits is within an ulp of it): the whole
/// milliseconds, a point, the fraction's digits without trailing zeros (`0` when there are
/// none). Longer durations go through `fmt`.
fn millis_debug(buf: &mut Vec<u8>, d: std::time::Duration) {
    const LIMIT: f64 = (1_u64 << 40) as f64;
    let micros = (d.as_secs_f64() * 1e6).round();
    if !(0.0..LIMIT).contains(&micros) {
        let _ = write!(buf, "{:?}", millis(d));
        return;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a whole number in 0..2^40, checked above"
    )]
    let micros = micros as u64;
    integer(buf, micros / 1000);
    buf.push(b'.');
    let fraction = micros % 1000;
    let digits = [fraction / 100, fraction / 10 % 10, fraction % 10]
        .map(|d| b'0' + u8::try_from(d).unwrap_or(0));
    let used = if fraction.is_multiple_of(100) {
        1
    } else if fraction.is_multiple_of(10) {
        2
    } else {
        3
    };
    buf.extend_from_slice(&digits[..used]);
}

/// `{:?}` of a `&str`: quoted, with Rust's escapes. Printable ASCII without `"` and `\` is
/// copied as it is; anything else goes through `fmt` (Unicode printability rules).
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if plain(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// Printable ASCII without `"` and `\\`: written as it is in both formats. Folds over every
/// byte without an early exit, which the compiler turns into vector code.
fn plain(s: &str) -> bool {
    !s.bytes().fold(false, |special, b| {
        special | !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\')
    })
}

/// A JSON string, escaped as `serde_json` escapes it (which is what writes it in the `fmt`
/// layer's JSON).
fn json_str(buf: &mut Vec<u8>, s: &str) {
    if plain(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// The address as `Display` writes it (IPv4 by hand, IPv6 through `fmt`: its zero
/// compression rules).
fn ip_addr(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                integer(buf, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

thread_local! {
    /// The last second formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static DATE: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `2026-12-03T14:13:01.123456Z`, as `tracing-subscriber`'s `SystemTime` timer writes it.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let Ok(since) = now.duration_since(UNIX_EPOCH) else {
        // Before 1970: rare enough for the general path.
        let _ = write!(buf, "{}", humantime::format_rfc3339_micros(now));
        return;
    };
    let secs = since.as_secs();
    // Years past 9999 are written with a `+` by tracing-subscriber; not worth a cache entry.
    if secs >= 253_402_300_800 {
        let _ = write!(buf, "{}", TracingDate(secs, since.subsec_micros()));
        return;
    }
    let date = DATE.with(|cell| {
        let (cached, date) = cell.get();
        if cached == secs {
            date
        } else {
            let date = civil(secs);
            cell.set((secs, date));
            date
        }
    });
    buf.extend_from_slice(&date);
    buf.push(b'.');
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + u8::try_from(m % 10).unwrap_or(0);
        m /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SS` (UTC, proleptic Gregorian), for years up to
/// 9999.
fn civil(secs: u64) -> [u8; 19] {
    let (y, mo, d, h, mi, s) = fields(secs);
    let mut out = *b"0000-00-00T00:00:00";
    put(&mut out[0..4], y);
    put(&mut out[5..7], mo);
    put(&mut out[8..10], d);
    put(&mut out[11..13], h);
    put(&mut out[14..16], mi);
    put(&mut out[17..19], s);
    out
}

fn put(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
}

/// (year, month, day, hour, minute, second) of seconds since 1970 (Howard Hinnant's
/// `civil_from_days`).
fn fields(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// tracing-subscriber's rendering of a year past 9999 (`+10000-01-01T…`).
struct TracingDate(u64, u32);

impl std::fmt::Display for TracingDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, mo, d, h, mi, s) = fields(self.0);
        write!(
            f,
            "+{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
            self.1
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::access::{Via, log_event};
    use crate::auth::{Facts, Rejected};
    use crate::metrics::Outcome;
    use crate::reason::Reason;

    /// The line `tracing-subscriber` writes for the event, configured as
    /// `telemetry::init` configures it (uncoloured): the reference.
    fn reference(format: LineFormat, e: &Entry<'_>, elapsed_us: u64) -> Vec<u8> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let make = move || Capture(Arc::clone(&sink));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(make)
            .with_ansi(false);
        match format {
            LineFormat::Json => {
                let subscriber = builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .finish();
                tracing::subscriber::with_default(subscriber, || log_event(e, elapsed_us));
            }
            LineFormat::Text => {
                tracing::subscriber::with_default(builder.finish(), || log_event(e, elapsed_us));
            }
        }
        out.lock().map(|b| b.clone()).unwrap_or_default()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The reference's timestamp, read back, so that the new formatter writes the same
    /// instant.
    fn time_of(format: LineFormat, line: &[u8]) -> SystemTime {
        let text = String::from_utf8_lossy(line);
        let stamp = match format {
            LineFormat::Text => text.split(' ').next().unwrap_or_default().to_owned(),
            LineFormat::Json => text
                .strip_prefix("{\"timestamp\":\"")
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned(),
        };
        humantime::parse_rfc3339(&stamp)
            .unwrap_or_else(|e| panic!("reference timestamp {stamp:?}: {e}"))
    }

    /// Both formatters, both formats: the same bytes.
    fn assert_same(e: &Entry<'_>, elapsed_us: u64) {
        for format in [LineFormat::Text, LineFormat::Json] {
            let want = reference(format, e, elapsed_us);
            assert!(want.ends_with(b"\n"), "reference wrote {want:?}");
            let mut got = Vec::new();
            write(&mut got, format, e, time_of(format, &want), elapsed_us);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{format:?} for {e:?}"
            );
            assert_eq!(got, want, "{format:?} bytes for {e:?}");
        }
    }

    fn facts(
        kid: Option<&str>,
        tid: Option<&str>,
        ver: Option<&str>,
        client: Option<&str>,
    ) -> Facts {
        Facts::from(Rejected {
            reason: Reason::BadSignature,
            kid: kid.map(str::to_owned),
            tid: tid.map(str::to_owned),
            ver: ver.map(str::to_owned),
            client: client.map(str::to_owned),
        })
    }

    /// The facts of a request over the `[[limits]]` entry `name` (its reason names it).
    fn limited(name: &str) -> Facts {
        let claims =
            serde_json::from_value(serde_json::json!({"tid": "t", "azp": "c"})).expect("claims");
        let principal = std::sync::Arc::new(crate::auth::Principal {
            claims,
            version: None,
            kid: "k".into(),
            payload: None,
            headers: std::sync::OnceLock::new(),
        });
        Facts::limited(&principal, name.into())
    }

    const STRINGS: &[&str] = &[
        "",
        "plain",
        "/ehrbase/rest/openehr/v1/ehr",
        "with space",
        "quote\"inside",
        "back\\slash",
        "single'quote",
        "tab\there",
        "new\nline",
        "cr\rlf\n",
        "nul\0byte",
        "esc\u{1b}[31mred",
        "del\u{7f}",
        "\u{85}next-line",
        "café",
        "日本語",
        "emoji 🦀",
        "combining \u{301} accent",
        "\u{301}leading combining",
        "zero\u{200b}width",
        "bidi\u{202e}override",
        "replacement \u{fffd}",
        "private \u{e000}",
        "line sep \u{2028}",
        "%2F%00%ZZ",
        "{\"json\":[1,2]}",
        "</script>&<>",
    ];

    #[test]
    fn the_new_formatter_writes_the_bytes_of_the_old_one_for_the_corpus() {
        let long_path = format!("/{}", "segment/".repeat(2000));
        let long_unicode = "ü/\"\\\n".repeat(500);
        let mut strings: Vec<&str> = STRINGS.to_vec();
        strings.push(&long_path);
        strings.push(&long_unicode);
        let started = Instant::now();
        let outcomes = [
            Outcome::Allowed,
            Outcome::ClientClosed,
            Outcome::UpstreamTimeout,
            Outcome::Shed,
            Outcome::Denied(Reason::MissingToken),
            Outcome::Denied(Reason::Expired),
        ];
        let ips: [Option<IpAddr>; 5] = [
            None,
            Some(IpAddr::from([127, 0, 0, 1])),
            Some(IpAddr::from([255, 0, 10, 9])),
            Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            Some(IpAddr::from([
                0x2001, 0xdb8, 0, 0, 0, 0xffff, 0x0102, 0x0304,
            ])),
        ];
        let upstreams = [
            None,
            Some(Duration::ZERO),
            Some(Duration::from_nanos(400)),
            Some(Duration::from_micros(1234)),
            Some(Duration::from_millis(60_000)),
            Some(Duration::from_secs(86_400 * 365)),
        ];
        let mut n = 0usize;
        for (i, s) in strings.iter().enumerate() {
            let other = strings[(i + 7) % strings.len()];
            let with = facts(Some(s), Some(other), Some("2.0"), Some(s));
            let without = Facts::default();
            let partial = facts(None, Some(s), None, None);
            let limited = limited(s);
            for (j, facts) in [&with, &without, &partial, &limited]
                .into_iter()
                .enumerate()
            {
                let k = i + j;
                let e = Entry {
                    via: [Via::Proxy, Via::ForwardAuth, Via::ExtAuthz][k % 3],
                    api: [None, Some(*s), Some("default"), Some(other)][k % 4],
                    method: [*s, "GET", "POST"][k % 3],
                    path: s,
                    status: [200, 401, 499, 0, u16::MAX][k % 5],
                    outcome: outcomes[k % outcomes.len()],
                    facts,
                    client_ip: ips[k % ips.len()],
                    request_id: [Some(*s), None][k % 2],
                    started,
                    upstream: upstreams[k % upstreams.len()],
                };
                for elapsed in [0, 17, u64::MAX] {
                    assert_same(&e, elapsed);
                    n += 1;
                }
            }
        }
        assert!(n > 200, "only {n} lines compared");
    }

    #[test]
    fn the_date_is_written_as_tracing_subscriber_writes_it() {
        // The reference timestamps above are today's; these are not.
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (1_796_306_399, "2026-12-03T13:59:59.000000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
            (253_402_300_799, "9999-12-31T23:59:59.000000Z"),
        ] {
            let mut got = Vec::new();
            timestamp(&mut got, UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
    }

    fn millis_text(d: Duration) -> String {
        let mut got = Vec::new();
        millis_debug(&mut got, d);
        String::from_utf8(got).expect("text")
    }

    #[test]
    fn upstream_milliseconds_are_written_as_fmt_writes_the_f64() {
        // Every microsecond count of the first 2.1 seconds, around the 2^40 limit, and
        // durations between whole microseconds (rounded as `millis` rounds them).
        let around_limit = ((1_u64 << 40) - 2_000..(1_u64 << 40) + 2_000).step_by(7);
        for micros in (0..2_100_000).chain(around_limit) {
            let d = Duration::from_micros(micros);
            assert_eq!(millis_text(d), format!("{:?}", millis(d)), "{micros} µs");
        }
        for nanos in [499, 500, 501, 1_499, 1_500, 999_999_999, 12_345_678_901] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(millis_text(d), format!("{:?}", millis(d)), "{nanos} ns");
        }
        assert_eq!(millis_text(Duration::ZERO), "0.0");
        assert_eq!(millis_text(Duration::from_micros(1_230)), "1.23");
    }

    proptest! {
        #[test]
        fn any_duration_is_written_as_fmt_writes_its_milliseconds(
            // Up to 2^41 µs (twice the fast path's limit), and any at all.
            nanos in prop_oneof![0..2_199_023_255_552_000_u64, any::<u64>()],
        ) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(millis_text(d), format!("{:?}", millis(d)));
        }

        #[test]
        fn any_strings_give_the_same_bytes(
            method in any::<String>(),
            path in any::<String>(),
            kid in proptest::option::of(any::<String>()),
            tid in proptest::option::of(any::<String>()),
            client in proptest::option::of(any::<String>()),
            request_id in proptest::option::of(any::<String>()),
            status in any::<u16>(),
            elapsed in any::<u64>(),
            upstream_ns in proptest::option::of(any::<u64>()),
            ip in proptest::option::of(any::<[u8; 16]>()),
            api in proptest::option::of(any::<String>()),
        ) {
            let facts = facts(kid.as_deref(), tid.as_deref(), Some("1.0"), client.as_deref());
            let e = Entry {
                via: Via::Proxy,
                api: api.as_deref(),
                method: &method,
                path: &path,
                status,
                outcome: Outcome::Allowed,
                facts: &facts,
                client_ip: ip.map(|b| {
                    if b[0] % 2 == 0 { IpAddr::from([b[1], b[2], b[3], b[4]]) } else { IpAddr::from(b) }
                }),
                request_id: request_id.as_deref(),
                started: Instant::now(),
                upstream: upstream_ns.map(Duration::from_nanos),
            };
            assert_same(&e, elapsed);
        }

        #[test]
        fn any_time_gives_the_date_humantime_gives(secs in 0u64..253_402_300_800, micros in 0u32..1_000_000) {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros));
            let mut got = Vec::new();
            timestamp(&mut got, t);
            prop_assert_eq!(String::from_utf8_lossy(&got), humantime::format_rfc3339_micros(t).to_string());
        }
    }
}
