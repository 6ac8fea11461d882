//! Every reason a token would be refused, not just the first: what `entragate explain` reports.
//!
//! It runs the validator's own checks ([`Validator::header_failures`], the issuer match and
//! [`check_issuer_agrees`], [`Validator::verify_signature`], [`Validator::claim_failures`])
//! and the route rules ([`route_failures`]) without stopping at the first failure, so the
//! gateway and `explain` cannot disagree on what a check means. When no keys could be loaded
//! (offline), the issuer is compared with the value Entra writes for the configured tenant
//! and the signature is left unverified.

use super::policy::route_failures;
use super::token::{Claims, Decoded};
use super::validate::check_issuer_agrees;
use super::{Reason, Validator};
use crate::config::{Entra, Route};
use crate::keys::{Issuer, IssuerMatch, IssuerTemplate, KeyStore, TokenVersion};

/// What was found out about a token.
#[derive(Debug)]
pub struct Diagnosis {
    /// Every refusal reason, in the order the gateway checks them, without repeats.
    /// Empty: this config accepts the token (as far as [`Diagnosis::signature`] says).
    pub reasons: Vec<Reason>,
    pub issuer: IssuerFinding,
    pub signature: SignatureFinding,
}

/// How the token's `iss` relates to the trusted issuers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerFinding {
    /// A trusted issuer whose metadata was loaded, by key-source name.
    Matched { source: String },
    /// The issuer Entra writes for the configured tenant (metadata not loaded).
    Expected { source: String },
    /// No trusted issuer has this value; these would be accepted.
    Mismatch { expected: Vec<String> },
    /// The token has no `iss`.
    Missing,
    /// Metadata not loaded and the issuer cannot be derived from the config (a domain name
    /// as `tenant_id`): not checked.
    Unknown,
}

/// Whether the signature was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFinding {
    Verified {
        kid: String,
        source: String,
    },
    /// `unknown_kid`, `bad_signature`, or `issuer_mismatch` (the key belongs to another issuer).
    Failed {
        reason: Reason,
        source: String,
    },
    /// Not attempted, and why.
    NotChecked(&'static str),
}

/// The issuers a token may carry, derived from the config alone: for each of `keys`'
/// issuers (by index), the `iss` value Entra writes for the configured tenant, or the
/// `[[oidc]]` issuer as configured. Entra issuers of a tenant given by domain name cannot be
/// derived (the tenant's GUID is in its metadata) and are left out.
#[must_use]
pub fn expected_issuers(entra: &Entra, keys: &KeyStore) -> Vec<(usize, IssuerTemplate)> {
    let derived = entra.derived_issuers();
    keys.issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            let value = match issuer.version {
                Some(TokenVersion::V1) => derived.as_ref()?.0.clone(),
                Some(TokenVersion::V2) => derived.as_ref()?.1.clone(),
                None => issuer.source.expected_issuer()?.to_owned(),
            };
            Some((i, IssuerTemplate::new(&value)))
        })
        .collect()
}

/// The Entra token version `claims` say they are: `ver`, else the form of `iss`.
#[must_use]
pub fn version_of(claims: &Claims) -> Option<TokenVersion> {
    match claims.ver.as_deref() {
        Some("1.0") => Some(TokenVersion::V1),
        Some("2.0") => Some(TokenVersion::V2),
        _ => match claims.iss.as_deref() {
            Some(iss) if iss.starts_with("https://sts.") => Some(TokenVersion::V1),
            Some(iss) if iss.trim_end_matches('/').ends_with("/v2.0") => Some(TokenVersion::V2),
            _ => None,
        },
    }
}

impl Validator {
    /// Checks `decoded` as [`Validator::validate`] does, then the `route` it would fall
    /// under, collecting every failure. `offline_issuers` ([`expected_issuers`]) stands in
    /// for issuers whose metadata is not loaded. `now` is Unix seconds.
    pub async fn diagnose(
        &self,
        decoded: &Decoded<'_>,
        route: Option<&Route>,
        offline_issuers: &[(usize, IssuerTemplate)],
        now: f64,
    ) -> Diagnosis {
        let claims = &decoded.claims;
        let keys = self.keys();
        let mut reasons: Vec<Reason> = self.header_failures(&decoded.header).collect();

        let (finding, issuer) = match claims.iss.as_deref() {
            None => {
                reasons.push(Reason::MissingClaim);
                (IssuerFinding::Missing, None)
            }
            Some(iss) => self.find_issuer(iss, claims, offline_issuers, &mut reasons),
        };
        // Even for a foreign `iss`, the claims are judged against the Entra issuer of the
        // token's version, so every other fault shows too.
        let issuer = issuer.or_else(|| version_of(claims).and_then(|v| keys.entra(v)));

        let signature = match (issuer, self.allowed_alg(&decoded.header)) {
            (None, _) => SignatureFinding::NotChecked("no trusted issuer to take keys from"),
            (Some(_), None) => SignatureFinding::NotChecked("the algorithm is not allowed"),
            (Some(issuer), Some(alg)) => {
                let source = issuer.source.name.clone();
                if issuer.source.snapshot().is_none() {
                    SignatureFinding::NotChecked("the issuer's keys are not loaded")
                } else {
                    match self.verify_signature(decoded, issuer, alg).await {
                        Ok(kid) => SignatureFinding::Verified {
                            kid: kid.to_owned(),
                            source,
                        },
                        Err(Reason::KeysUnavailable) => {
                            SignatureFinding::NotChecked("the issuer's keys are not loaded")
                        }
                        Err(reason) => {
                            reasons.push(reason);
                            SignatureFinding::Failed { reason, source }
                        }
                    }
                }
            }
        };

        if let Some(issuer) = issuer {
            reasons.extend(self.claim_failures(claims, &issuer.policy, now));
        }
        if let Some(route) = route.filter(|r| !r.anonymous) {
            reasons.extend(route_failures(route, claims));
        }
        let mut unique = Vec::with_capacity(reasons.len());
        for r in reasons {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        Diagnosis {
            reasons: unique,
            issuer: finding,
            signature,
        }
    }

    fn find_issuer<'a>(
        &'a self,
        iss: &str,
        claims: &Claims,
        offline_issuers: &[(usize, IssuerTemplate)],
        reasons: &mut Vec<Reason>,
    ) -> (IssuerFinding, Option<&'a Issuer>) {
        let keys = self.keys();
        let tid = claims.tid.as_deref();
        let matched = match keys.issuer_for(iss, tid) {
            IssuerMatch::Found(issuer, set) => Some((issuer, set.issuer.is_template(), true)),
            // Not every issuer is loaded: the config's own idea of the issuers decides.
            IssuerMatch::Unavailable | IssuerMatch::Mismatch => offline_issuers
                .iter()
                .find(|(i, t)| t.matches(iss, tid) && keys.issuers[*i].source.snapshot().is_none())
                .map(|(i, t)| (&keys.issuers[*i], t.is_template(), false)),
        };
        if let Some((issuer, is_template, loaded)) = matched {
            if let Err(reason) = check_issuer_agrees(issuer, is_template, claims) {
                reasons.push(reason);
            }
            let source = issuer.source.name.clone();
            let finding = if loaded {
                IssuerFinding::Matched { source }
            } else {
                IssuerFinding::Expected { source }
            };
            return (finding, Some(issuer));
        }
        // Known issuers: the loaded ones' own values, the derived ones for the rest.
        let mut expected = Vec::new();
        let mut unknowable = false;
        for (i, issuer) in keys.issuers.iter().enumerate() {
            match issuer.source.snapshot() {
                Some(set) => expected.push(set.issuer.to_string()),
                None => match offline_issuers.iter().find(|(j, _)| *j == i) {
                    Some((_, t)) => expected.push(t.to_string()),
                    None => unknowable = true,
                },
            }
        }
        if unknowable {
            return (IssuerFinding::Unknown, None);
        }
        reasons.push(Reason::IssuerMismatch);
        (IssuerFinding::Mismatch { expected }, None)
    }
}
