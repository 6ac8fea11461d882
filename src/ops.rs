//! Operator commands: getting Entra, Power BI and the gateway to agree.
//!
//! [`check`] reviews a config and the identity provider behind it and prints the Entra
//! app-registration checklist; [`explain`] says why a given token is accepted or refused, in
//! Entra terms; [`import_apim`] turns an Azure API Management policy into entragate TOML;
//! [`init`] writes a config and the Entra app registration that agree with it. All of them reuse the gateway's own config loading, key fetching and validation, so what they
//! say is what `serve` does.

pub mod check;
pub mod explain;
pub mod import_apim;
pub mod init;
pub mod revoke;

use std::time::Duration;

/// Exit code: a check failed, or a token is refused (SPEC §2's runtime failure).
const FAILED: u8 = 1;
/// Exit code: bad usage or bad config.
const BAD_CONFIG: u8 = 2;

/// Client applications whose IDs people meet in Power BI / Power Platform tokens (`appid` in
/// v1, `azp` in v2), as Microsoft documents them for pre-authorization.
pub const POWER_PLATFORM_CLIENTS: [(&str, &str); 3] = [
    (
        "a672d62c-fc7b-4e81-a576-e60dc46e951d",
        "Power Query for Excel / Power BI Desktop (also the on-premises data gateway)",
    ),
    (
        "b52893c8-bc2e-47fc-918b-77022b299bbc",
        "Power BI Data Refresh (the Power BI service's scheduled refresh)",
    ),
    (
        "7ab7862c-4c57-491e-8a45-d52a7e023983",
        "Power Apps and Power Automate",
    ),
];

/// Microsoft's own resources, whose tokens are never for this API.
const MICROSOFT_RESOURCES: [(&str, &str); 2] = [
    ("00000003-0000-0000-c000-000000000000", "Microsoft Graph"),
    ("https://graph.microsoft.com", "Microsoft Graph"),
];

/// The name of a well-known client ID.
#[must_use]
pub fn client_name(id: &str) -> Option<&'static str> {
    POWER_PLATFORM_CLIENTS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(id))
        .map(|(_, name)| *name)
}

/// The name of a Microsoft resource an `aud` may name.
#[must_use]
pub fn microsoft_resource(aud: &str) -> Option<&'static str> {
    let aud = aud.trim_end_matches('/');
    MICROSOFT_RESOURCES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(aud))
        .map(|(_, name)| *name)
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased, without a default port:
/// what Power Query asks Entra for as resource when a user types a URL.
#[must_use]
pub fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = uri.host()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(443), "https") | (Some(80), "http") | (None, _) => String::new(),
        (Some(p), _) => format!(":{p}"),
    };
    Some(format!("{scheme}://{host}{port}"))
}

/// A duration for people, to the second ("2h 5m 3s").
#[must_use]
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Milliseconds, for progress lines.
#[must_use]
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://API.contoso.com:443/x?y").as_deref(),
            Some("https://api.contoso.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("api://1111"), None);
        assert_eq!(origin_of("11111111-1111-1111-1111-111111111111"), None);
    }

    #[test]
    fn names() {
        assert!(client_name("A672D62C-FC7B-4E81-A576-E60DC46E951D").is_some());
        assert_eq!(
            microsoft_resource("https://graph.microsoft.com/"),
            Some("Microsoft Graph")
        );
        assert_eq!(human(Duration::from_millis(7_384_900)), "2h 3m 4s");
    }
}
