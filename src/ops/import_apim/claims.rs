//! `<required-claims>`: each `<claim name match separator>` with its `<value>`s.
//!
//! APIM's `match="all"` (the default) needs every value, `match="any"` one of them. entragate
//! needs one of a claim's values (route `claims`), so `any` and single-value claims convert;
//! `scp` and `roles` become the route's `scopes` and `roles` (same meaning, and the 403 then
//! names them); `appid`/`azp` and `tid` become the `[entra]` allow-lists; `aud` narrows
//! `audiences`. A claim entragate cannot express is kept as a commented-out line.

use roxmltree::Node;

use super::Conversion;
use super::draft::strings;

pub(super) fn required(c: &mut Conversion, node: Node) {
    for claim in node.children().filter(|n| n.has_tag_name("claim")) {
        let name = claim.attribute("name").unwrap_or("").trim().to_owned();
        let all = !claim
            .attribute("match")
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("any"));
        let separator = claim.attribute("separator");
        let values = super::values(claim, "value");
        if name.is_empty() || values.is_empty() {
            c.unconverted(format!("<claim name=\"{name}\"> without a name or values"));
            continue;
        }
        let one_of = !all || values.len() == 1;
        let spaces = separator.is_none_or(|s| s.trim().is_empty());
        match name.as_str() {
            "aud" if one_of => {
                let kept: Vec<String> = c
                    .audiences
                    .iter()
                    .filter(|a| values.contains(a))
                    .cloned()
                    .collect();
                c.audience_notes.push(format!(
                    "required claim aud {values:?} folded into audiences (a token's aud must be one of both lists)"
                ));
                c.audiences = if kept.is_empty() { values } else { kept };
            }
            "appid" | "azp" if one_of => c.client_ids.extend(values),
            "tid" if one_of => c.tenants.extend(values),
            "scp" if one_of && spaces => {
                c.route.set(
                    "scopes",
                    &strings(&values),
                    &format!(
                        "from required claim scp (match {})",
                        if all { "all" } else { "any" }
                    ),
                );
                c.route_used = true;
            }
            "roles" if one_of && separator.is_none() => {
                c.route
                    .set("roles", &strings(&values), "from required claim roles");
                c.route_used = true;
            }
            _ if one_of && separator.is_none() => {
                c.route.set(
                    &format!("claims.{}", toml_key(&name)),
                    &strings(&values),
                    "from required-claims: the claim must hold one of these",
                );
                c.route_used = true;
            }
            _ => {
                let why = if separator.is_some() && !(name == "scp" && spaces) {
                    format!(
                        "separator=\"{}\" (entragate splits only scp, at spaces)",
                        separator.unwrap_or("")
                    )
                } else {
                    "match=\"all\" with several values (entragate requires one of them)".to_owned()
                };
                c.route.note(&format!(
                    "NOT CONVERTED, {why}: claims.{} = {}",
                    toml_key(&name),
                    strings(&values)
                ));
                c.route_used = true;
                c.unconverted(format!("required claim {name}: {why}"));
            }
        }
    }
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_owned()
    } else {
        super::draft::string(name)
    }
}
