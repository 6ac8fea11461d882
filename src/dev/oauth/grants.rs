//! Authorization codes and refresh tokens the dev issuer has handed out. A code is
//! single-use (taken out on its first redemption, whatever the outcome) and short-lived,
//! and bound to the client, the redirect URI and the PKCE challenge it was issued with. A
//! refresh token is bound to its client and lives `dev.refresh_token_lifetime`. Both are
//! random, opaque strings; only their grant is kept, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::{EntraError, Permissions, pkce_s256_matches};

/// What a code or a refresh token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    /// Index into `dev.users`.
    pub user: usize,
    pub permissions: Permissions,
    /// The OIDC `nonce` of the authorize request, for the ID token.
    pub nonce: Option<String>,
}

/// A code's bindings besides the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBinding {
    pub redirect_uri: String,
    /// The S256 challenge; `None` when a confidential client sent none.
    pub challenge: Option<String>,
}

struct Issued<T> {
    value: T,
    expires: Instant,
}

/// The issued codes and refresh tokens.
pub struct Grants {
    code_lifetime: Duration,
    refresh_lifetime: Duration,
    codes: Mutex<HashMap<String, Issued<(Grant, CodeBinding)>>>,
    refresh: Mutex<HashMap<String, Issued<Grant>>>,
}

/// A new random opaque value (32 bytes, base64url), prefixed for the reader's sake.
fn opaque(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // A failing system RNG leaves zeros: still a string, and the machine is broken anyway.
    let _ = SystemRandom::new().fill(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn bad_code(message: &str) -> EntraError {
    EntraError::new("invalid_grant", 70000, message.to_owned())
}

impl Grants {
    #[must_use]
    pub fn new(code_lifetime: Duration, refresh_lifetime: Duration) -> Self {
        Self {
            code_lifetime,
            refresh_lifetime,
            codes: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a code for `grant`.
    pub fn issue_code(&self, grant: Grant, binding: CodeBinding) -> String {
        let code = opaque("dev.code.");
        let now = Instant::now();
        if let Ok(mut codes) = self.codes.lock() {
            codes.retain(|_, c| c.expires > now);
            codes.insert(
                code.clone(),
                Issued {
                    value: (grant, binding),
                    expires: now + self.code_lifetime,
                },
            );
        }
        code
    }

    /// Redeems `code` once: the client, redirect URI and PKCE verifier must be those it was
    /// issued for.
    ///
    /// # Errors
    /// `invalid_grant` with Entra's code for what is wrong.
    pub fn redeem_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<Grant, EntraError> {
        let issued = self
            .codes
            .lock()
            .ok()
            .and_then(|mut codes| codes.remove(code));
        let Some(issued) = issued else {
            return Err(bad_code(
                "The provided authorization code is invalid or was already redeemed; a code can be used once.",
            ));
        };
        if Instant::now() >= issued.expires {
            return Err(EntraError::new(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        let (grant, binding) = issued.value;
        if !grant.client_id.eq_ignore_ascii_case(client_id) {
            return Err(bad_code(
                "The provided authorization code was issued to another client.",
            ));
        }
        if redirect_uri != Some(binding.redirect_uri.as_str()) {
            return Err(EntraError::new(
                "invalid_grant",
                500_112,
                "The reply address does not match the reply address provided when requesting the authorization code.",
            ));
        }
        match (&binding.challenge, verifier) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(EntraError::new(
                    "invalid_grant",
                    501_481,
                    "The Code_Verifier is missing: the authorization request carried a code_challenge.",
                ));
            }
            (Some(challenge), Some(v)) => {
                if !pkce_s256_matches(v, challenge) {
                    return Err(EntraError::new(
                        "invalid_grant",
                        501_481,
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    ));
                }
            }
        }
        Ok(grant)
    }

    /// Issues a refresh token for `grant`.
    pub fn issue_refresh(&self, grant: Grant) -> String {
        let token = opaque("dev.rt.");
        let now = Instant::now();
        if let Ok(mut refresh) = self.refresh.lock() {
            refresh.retain(|_, r| r.expires > now);
            refresh.insert(
                token.clone(),
                Issued {
                    value: grant,
                    expires: now + self.refresh_lifetime,
                },
            );
        }
        token
    }

    /// The grant behind a refresh token of `client_id` (it stays valid until it expires).
    ///
    /// # Errors
    /// `invalid_grant`: unknown, expired, or another client's.
    pub fn use_refresh(&self, token: &str, client_id: &str) -> Result<Grant, EntraError> {
        let now = Instant::now();
        let found = self.refresh.lock().ok().and_then(|refresh| {
            refresh
                .get(token)
                .map(|r| (r.value.clone(), r.expires > now))
        });
        match found {
            None => Err(bad_code(
                "The provided refresh token is invalid or malformed.",
            )),
            Some((_, false)) => Err(EntraError::new(
                "invalid_grant",
                700_082,
                "The refresh token has expired due to inactivity.",
            )),
            Some((g, true)) if !g.client_id.eq_ignore_ascii_case(client_id) => {
                Err(bad_code("The refresh token was issued to another client."))
            }
            Some((g, true)) => Ok(g),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";

    fn grant() -> Grant {
        Grant {
            client_id: "c1".into(),
            user: 0,
            permissions: Permissions {
                resource: "api://x".into(),
                scopes: vec!["user_impersonation".into()],
                oidc: vec!["openid".into()],
            },
            nonce: None,
        }
    }

    fn binding() -> CodeBinding {
        CodeBinding {
            redirect_uri: "http://localhost/cb".into(),
            challenge: Some(CHALLENGE.into()),
        }
    }

    fn grants() -> Grants {
        Grants::new(Duration::from_secs(600), Duration::from_secs(3600))
    }

    #[tokio::test(start_paused = true)]
    async fn a_code_is_single_use_and_expires() {
        let g = grants();
        let code = g.issue_code(grant(), binding());
        let ok = g.redeem_code(&code, "c1", Some("http://localhost/cb"), Some(VERIFIER));
        assert_eq!(ok, Ok(grant()));
        let again = g.redeem_code(&code, "c1", Some("http://localhost/cb"), Some(VERIFIER));
        assert_eq!(again.expect_err("used").code, 70000);

        let code = g.issue_code(grant(), binding());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(
            g.redeem_code(&code, "c1", Some("http://localhost/cb"), Some(VERIFIER))
                .is_ok()
        );
        let code = g.issue_code(grant(), binding());
        tokio::time::advance(Duration::from_secs(600)).await;
        let late = g.redeem_code(&code, "c1", Some("http://localhost/cb"), Some(VERIFIER));
        assert_eq!(late.expect_err("expired").code, 70008);
    }

    #[tokio::test(start_paused = true)]
    async fn a_code_is_bound_to_client_redirect_and_challenge() {
        let g = grants();
        let redeem = |client: &str, redirect: Option<&str>, verifier: Option<&str>| {
            let code = g.issue_code(grant(), binding());
            g.redeem_code(&code, client, redirect, verifier)
                .map_err(|e| e.code)
        };
        let cb = Some("http://localhost/cb");
        assert_eq!(redeem("c2", cb, Some(VERIFIER)), Err(70000));
        assert_eq!(
            redeem("c1", Some("http://localhost/other"), Some(VERIFIER)),
            Err(500_112)
        );
        assert_eq!(redeem("c1", None, Some(VERIFIER)), Err(500_112));
        assert_eq!(redeem("c1", cb, None), Err(501_481));
        assert_eq!(redeem("c1", cb, Some(CHALLENGE)), Err(501_481));
        assert!(redeem("c1", cb, Some(VERIFIER)).is_ok());
        // A failed redemption uses the code up too.
        let code = g.issue_code(grant(), binding());
        assert!(g.redeem_code(&code, "c1", cb, None).is_err());
        assert_eq!(
            g.redeem_code(&code, "c1", cb, Some(VERIFIER))
                .map_err(|e| e.code),
            Err(70000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_token_is_bound_to_its_client_and_expires() {
        let g = grants();
        let rt = g.issue_refresh(grant());
        assert_eq!(g.use_refresh(&rt, "c1"), Ok(grant()));
        assert_eq!(
            g.use_refresh(&rt, "c1"),
            Ok(grant()),
            "reusable until it expires"
        );
        assert_eq!(g.use_refresh(&rt, "c2").map_err(|e| e.code), Err(70000));
        assert_eq!(
            g.use_refresh("dev.rt.nope", "c1").map_err(|e| e.code),
            Err(70000)
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(g.use_refresh(&rt, "c1").map_err(|e| e.code), Err(700_082));
    }
}
