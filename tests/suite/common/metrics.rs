//! Reading the admin `/metrics` text: one series, and the request counters by reason.

use std::collections::BTreeMap;

use entragate::auth::Reason;

use super::Harness;

/// The value of the series `series` (name and labels exactly as rendered).
pub fn series(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} is not in /metrics:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// `entragate_requests_total{outcome="denied",reason=…}` for every reason; every reason is
/// listed from the start, and no other.
pub async fn denials(h: &Harness) -> BTreeMap<String, u64> {
    let text = h.metrics_text().await;
    let prefix = "entragate_requests_total{outcome=\"denied\",reason=\"";
    let counts: BTreeMap<String, u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| {
            let (reason, value) = rest.split_once("\"} ").expect("counter line");
            (reason.to_owned(), value.parse().expect("counter value"))
        })
        .collect();
    let listed: Vec<&str> = counts.keys().map(String::as_str).collect();
    let mut all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    all.sort_unstable();
    assert_eq!(listed, all, "every reason is listed from the start");
    counts
}

/// Exactly these denials were counted, none under any other reason.
pub async fn assert_denials(h: &Harness, expected: &BTreeMap<&str, u64>) {
    let counts = denials(h).await;
    for reason in expected.keys() {
        assert!(counts.contains_key(*reason), "no counter for {reason}");
    }
    let want: BTreeMap<String, u64> = counts
        .keys()
        .map(|r| (r.clone(), expected.get(r.as_str()).copied().unwrap_or(0)))
        .collect();
    assert_eq!(counts, want, "denials by reason");
}

/// Exactly `n` denials were counted under `reason`, and none under any other reason.
pub async fn assert_only_denials(h: &Harness, reason: &str, n: u64) {
    assert_denials(h, &BTreeMap::from([(reason, n)])).await;
}

/// `entragate_requests_total{outcome="allowed",reason="none"}`.
pub async fn allowed(h: &Harness) -> u64 {
    series(
        &h.metrics_text().await,
        "entragate_requests_total{outcome=\"allowed\",reason=\"none\"}",
    )
}
