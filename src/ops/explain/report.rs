//! What `explain` answers, for scripts (JSON) and for people (text).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::fixes;
use crate::auth::diagnose::version_of;
use crate::auth::token;
use crate::keys::TokenVersion;
use crate::ops::{client_name, human};

/// The answer.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// True when no check fails (see `signature` for whether the signature was verified).
    pub accepted: bool,
    /// What the gateway would answer in its `server.mode`: 200 (forwarded, or allowed in
    /// forward-auth mode), or the refusal's status.
    pub status: u16,
    /// The decoded header (`null` when it does not decode).
    pub header: Value,
    /// The decoded claims (`null` when they do not decode).
    pub claims: Value,
    /// The signature's length in bytes; the signature itself is never shown.
    pub signature_bytes: usize,
    pub about: About,
    pub issuer: String,
    pub signature: String,
    pub signature_verified: bool,
    pub route: String,
    /// Every reason the token is refused, in the order the gateway checks them (the first is
    /// what its log's `auth.reason` says).
    pub reasons: Vec<Finding>,
    /// The key fetches made to verify the signature.
    pub key_fetches: Vec<KeyFetch>,
}

/// What kind of token this is.
#[derive(Debug, Default, Serialize)]
pub struct About {
    pub version: Option<String>,
    pub kind: Option<String>,
    pub client: Option<String>,
    pub client_name: Option<String>,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub expires: Option<String>,
}

/// One reason for refusal.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub reason: &'static str,
    pub status: u16,
    pub problem: String,
    pub fix: String,
}

/// One key source loaded for verification.
#[derive(Debug, Serialize)]
pub struct KeyFetch {
    pub source: String,
    pub url: String,
    pub ok: bool,
    pub error: Option<String>,
    pub ms: u64,
}

/// What kind of token `c` is, at Unix time `now`.
pub(super) fn about(c: &token::Claims, now: f64) -> About {
    let version = version_of(c).map(|v| match v {
        TokenVersion::V1 => "v1 (ver 1.0): the API's manifest has accessTokenAcceptedVersion null or 1; aud is the Application ID URI as requested, the client is in appid".to_owned(),
        TokenVersion::V2 => "v2 (ver 2.0): the API's manifest has accessTokenAcceptedVersion 2; aud is the API's client ID, the client is in azp".to_owned(),
    });
    let kind = if c.is_delegated() {
        format!(
            "delegated: a user signed in through the client; scopes (scp): {}",
            c.scp.as_deref().unwrap_or("")
        )
    } else {
        format!(
            "app-only (client credentials, no user); roles: [{}]",
            c.roles().collect::<Vec<_>>().join(" ")
        )
    };
    let expires = c.exp.map(|exp| {
        let when = fixes::timestamp(exp);
        let d = fixes::secs((exp - now).abs());
        if exp >= now {
            format!("in {} ({when})", human(d))
        } else {
            format!("{} ago ({when})", human(d))
        }
    });
    About {
        version,
        kind: Some(kind),
        client: c.client_id().map(str::to_owned),
        client_name: c.client_id().and_then(client_name).map(str::to_owned),
        tenant: c.tid.clone(),
        user: c.user_name().map(str::to_owned),
        expires,
    }
}

impl Explanation {
    /// The explanation for people.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let pretty = |v: &Value| {
            serde_json::to_string_pretty(v)
                .unwrap_or_default()
                .replace('\n', "\n          ")
        };
        let _ = writeln!(
            o,
            "Token (the signature, {} bytes, is never shown)",
            self.signature_bytes
        );
        let _ = writeln!(o, "  header  {}", pretty(&self.header));
        let _ = writeln!(o, "  claims  {}\n", pretty(&self.claims));
        let a = &self.about;
        let client = a.client.as_ref().map(|id| match &a.client_name {
            Some(n) => format!("{id} ({n})"),
            None => format!("{id} (not a Power Platform client)"),
        });
        for (label, value) in [
            ("version", a.version.clone()),
            ("kind", a.kind.clone()),
            ("client", client),
            ("tenant", a.tenant.clone()),
            ("user", a.user.clone()),
            ("expires", a.expires.clone()),
            ("issuer", Some(self.issuer.clone())),
            ("signature", Some(self.signature.clone())),
            ("route", Some(self.route.clone())),
        ] {
            if let Some(v) = value {
                let _ = writeln!(o, "  {label:<10}{v}");
            }
        }
        let _ = writeln!(o);
        if self.accepted {
            let _ = writeln!(
                o,
                "ACCEPTED: this config lets the token through{}.",
                if self.signature_verified {
                    ""
                } else {
                    " on its claims; the signature was not verified"
                }
            );
            return o;
        }
        let first = self.reasons.first().map_or("", |f| f.reason);
        let _ = writeln!(
            o,
            "REFUSED with {}: the gateway logs auth.reason={first}. Every reason:",
            self.status
        );
        for (i, f) in self.reasons.iter().enumerate() {
            let _ = writeln!(o, "  {}. {} ({})", i + 1, f.reason, f.status);
            let _ = writeln!(o, "     {}", f.problem);
            if !f.fix.is_empty() {
                let _ = writeln!(o, "     fix: {}", f.fix);
            }
        }
        o
    }
}
