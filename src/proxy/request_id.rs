//! `x-request-id` values: a UUID v4 per request, as before, but drawn from a per-thread
//! generator seeded once from the operating system, instead of a `getrandom` system call for
//! every request. The ids correlate log lines; they are unique, not secrets.

use std::cell::Cell;

use http::HeaderValue;

/// A new request id for the main listener (see [`crate::app::Front`]).
#[must_use]
pub fn new() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(next_random()).into_uuid();
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    let text: &str = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// 128 bits from two SplitMix64 streams whose starting points come from the OS.
fn next_random() -> [u8; 16] {
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new(seed());
    }
    STATE.with(|state| {
        let (a, b) = state.get();
        let (a, b) = (
            a.wrapping_add(0x9E37_79B9_7F4A_7C15),
            b.wrapping_add(0xD1B5_4A32_D192_ED03),
        );
        state.set((a, b));
        let mut out = [0; 16];
        out[..8].copy_from_slice(&mix(a).to_le_bytes());
        out[8..].copy_from_slice(&mix(b).to_le_bytes());
        out
    })
}

fn seed() -> (u64, u64) {
    let pair = uuid::Uuid::new_v4().as_u64_pair();
    (pair.0, pair.1)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuid_v4_text() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = new();
            let text = id.to_str().expect("ascii").to_owned();
            let parsed = uuid::Uuid::parse_str(&text).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert!(seen.insert(text), "repeated id");
        }
    }
}
