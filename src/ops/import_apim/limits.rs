//! `<rate-limit>`, `<rate-limit-by-key>`, `<quota>` and `<quota-by-key>` into `[[limits]]`.
//! A `counter-key` on the subscription, the client IP or a JWT claim maps to a limit key;
//! anything else is reported as not converted, naming the expression.

use roxmltree::{Document, Node};

use super::draft::{Table, string, strings};

/// The policies this converts.
pub(super) const POLICIES: [&str; 4] = ["rate-limit", "rate-limit-by-key", "quota", "quota-by-key"];

/// A `counter-key` expression as a limit key, with why; `None` when it has no equivalent.
pub(super) fn counter_key(expr: &str) -> Option<(String, &'static str)> {
    let e: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    if e.contains("context.Subscription.Id") || e.contains("context.Subscription.Key") {
        return Some((
            "client".into(),
            "from the subscription: the calling application (azp/appid) is its closest equivalent",
        ));
    }
    if e == "@(context.Request.IpAddress)" {
        return Some(("ip".into(), "from the client IP address"));
    }
    if e.contains("AsJwt()") {
        if e.ends_with(".Subject)") {
            return Some(("claim:sub".into(), "from the token's sub"));
        }
        let name = ["Claims.GetValueOrDefault(\"", "Claims[\""]
            .iter()
            .find_map(|p| {
                let start = e.find(p)? + p.len();
                let len = e[start..].find('"')?;
                Some(e[start..start + len].to_owned())
            })?;
        return Some(match name.as_str() {
            "oid" => ("user".into(), "from the token's oid"),
            "appid" | "azp" => ("client".into(), "from the token's client application"),
            "tid" => ("tenant".into(), "from the token's tid"),
            _ => (format!("claim:{name}"), "from a claim of the token"),
        });
    }
    None
}

/// `calls` per `seconds` as a rate entragate can write (`N/s`, `N/min`, `N/h`, `N/day`):
/// exact, or `None`. A quota needs its window to be one of those lengths.
fn rate(calls: u64, seconds: u64, quota: bool) -> Option<String> {
    let units = [(1, "s"), (60, "min"), (3600, "h"), (86_400, "day")];
    if let Some((_, u)) = units.iter().find(|(s, _)| *s == seconds) {
        return Some(format!("{calls}/{u}"));
    }
    if quota || seconds == 0 {
        return None;
    }
    units
        .iter()
        .filter(|(s, _)| *s >= seconds)
        .find(|(s, _)| (calls * s).is_multiple_of(seconds))
        .map(|(s, u)| format!("{}/{u}", calls * s / seconds))
}

/// The `[[limits]]` tables of `doc`'s limit policies; what cannot be converted goes to
/// `unconverted`.
/// The limits of `doc`; `api` names the `[[apis]]` entry whose policy it is (the limit is
/// then scoped to it with `apis`, its name prefixed with the API's), `None` for a policy
/// over everything.
pub(super) fn convert(
    doc: &Document,
    api: Option<&str>,
    limits: &mut Vec<Table>,
    unconverted: &mut Vec<String>,
) {
    let mut n = 0;
    for node in doc
        .descendants()
        .filter(|n| n.is_element() && POLICIES.contains(&n.tag_name().name()))
    {
        n += 1;
        if let Some(t) = one(node, n, api, unconverted) {
            limits.push(t);
        }
    }
}

fn one(node: Node, n: usize, api: Option<&str>, unconverted: &mut Vec<String>) -> Option<Table> {
    let tag = node.tag_name().name();
    let quota = tag.starts_with("quota");
    let what = format!(
        "<{tag}> (line {})",
        node.document().text_pos_at(node.range().start).row
    );
    let calls = node
        .attribute("calls")
        .and_then(|c| c.trim().parse::<u64>().ok());
    let period = node
        .attribute("renewal-period")
        .and_then(|c| c.trim().parse::<u64>().ok());
    let (Some(calls), Some(period)) = (calls.filter(|c| *c > 0), period) else {
        if node.attribute("bandwidth").is_some() {
            unconverted.push(format!(
                "{what}: a bandwidth quota (kilobytes) has no equivalent; entragate counts requests"
            ));
        } else {
            unconverted.push(format!(
                "{what}: without literal calls and renewal-period attributes, not converted"
            ));
        }
        return None;
    };
    let Some(rate) = rate(calls, period, quota) else {
        unconverted.push(format!(
            "{what}: {calls} calls per {period} s cannot be written as N/s, N/min, N/h or N/day{}",
            if quota {
                " (a quota's window must be one of those)"
            } else {
                ""
            }
        ));
        return None;
    };
    let (key, why) = match node.attribute("counter-key") {
        None => (
            "client".to_owned(),
            "APIM counts per subscription: the calling application (azp/appid) is its closest equivalent",
        ),
        Some(expr) => {
            if let Some(k) = counter_key(expr) {
                k
            } else {
                unconverted.push(format!(
                    "{what}: counter-key {expr:?} is neither the subscription, the client IP nor a JWT claim: not converted"
                ));
                return None;
            }
        }
    };
    let mut t = Table::default();
    let name = match api {
        Some(api) => format!("{api}-{tag}-{n}"),
        None => format!("{tag}-{n}"),
    };
    t.set("name", &string(&name), &format!("from {what}"));
    if let Some(api) = api {
        t.set("apis", &strings(&[api]), "the API whose policy it is");
    }
    t.set("key", &string(&key), why);
    t.set(
        "rate",
        &string(&rate),
        &format!("calls=\"{calls}\" renewal-period=\"{period}\""),
    );
    if quota {
        t.set("kind", &string("quota"), "fixed window, as APIM's quota");
    } else {
        t.set("kind", &string("rate"), "");
        t.set(
            "burst",
            &calls.to_string(),
            "APIM allows the whole count at once",
        );
    }
    for attr in [
        "increment-condition",
        "increment-count",
        "bandwidth",
        "remaining-calls-header-name",
        "retry-after-header-name",
        "remaining-calls-variable-name",
        "retry-after-variable-name",
        "total-calls-header-name",
        "first-period-start",
    ] {
        if let Some(v) = node.attribute(attr) {
            unconverted.push(format!(
                "{what}: {attr}=\"{v}\" has no equivalent (entragate counts every authenticated request and answers 429 with Retry-After, RateLimit-Policy and RateLimit)"
            ));
        }
    }
    if node.children().any(|c| c.is_element()) {
        unconverted.push(format!(
            "{what}: per-API or per-operation children (<api>, <operation>) are not converted: use paths on the limit"
        ));
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_map_to_limit_keys() {
        let k = |e: &str| counter_key(e).map(|(k, _)| k);
        assert_eq!(k("@(context.Subscription.Id)").as_deref(), Some("client"));
        assert_eq!(k("@(context.Request.IpAddress)").as_deref(), Some("ip"));
        assert_eq!(
            k("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)").as_deref(),
            Some("claim:sub")
        );
        assert_eq!(
            k("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Claims.GetValueOrDefault(\"oid\", \"\"))").as_deref(),
            Some("user")
        );
        assert_eq!(
            k("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Claims[\"team\"].FirstOrDefault())").as_deref(),
            Some("claim:team")
        );
        assert_eq!(k("@(context.User.Id)"), None);
        assert_eq!(
            k("@(context.Request.Headers.GetValueOrDefault(\"X-Key\"))"),
            None
        );
    }

    #[test]
    fn periods_become_rates_when_exact() {
        assert_eq!(rate(10, 60, false).as_deref(), Some("10/min"));
        assert_eq!(rate(20, 90, false).as_deref(), Some("800/h"));
        assert_eq!(rate(7, 7, false).as_deref(), Some("60/min"));
        assert_eq!(rate(10_000, 86_400, true).as_deref(), Some("10000/day"));
        assert_eq!(rate(100, 604_800, true), None);
        assert_eq!(rate(100, 90, true), None);
    }
}
