//! `entra.cloud`: which Microsoft Entra cloud instance the tenant lives in. It sets the
//! default `entra.authority` (and so the metadata URLs, the challenge's sign-in host and the
//! v2 issuer, `<authority>/<tenant>/v2.0`) and the host of the v1 issuer
//! (`https://<sts host>/<tenant>/`). Issuers are still read from each tenant's discovery
//! document; these values are what the offline checks (`explain --offline`)
//! expect. Sources: learn.microsoft.com/entra/identity-platform/authentication-national-cloud
//! (authorities) and the national clouds' token references (v1 issuers; US Government's v1
//! issuer is `sts.windows.net` as in the global cloud, its v2 issuer on
//! `login.microsoftonline.us`: learn.microsoft.com/en-us/answers/questions/1190472).

/// An Entra cloud instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    /// Microsoft Entra ID (global): `login.microsoftonline.com`, v1 `sts.windows.net`.
    #[default]
    Global,
    /// Azure Government: `login.microsoftonline.us`; v1 tokens keep `sts.windows.net`.
    UsGov,
    /// Microsoft Azure operated by 21Vianet: `login.partner.microsoftonline.cn`, v1
    /// `sts.chinacloudapi.cn`.
    China,
}

impl Cloud {
    /// Every cloud, with its config name.
    pub const ALL: [(Self, &'static str); 3] = [
        (Self::Global, "global"),
        (Self::UsGov, "usgov"),
        (Self::China, "china"),
    ];

    /// The value as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("global", |(_, n)| n)
    }

    /// `global`, `usgov` or `china`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(c, _)| *c)
    }

    /// The sign-in authority (no trailing `/`).
    #[must_use]
    pub const fn authority(self) -> &'static str {
        match self {
            Self::Global => "https://login.microsoftonline.com",
            Self::UsGov => "https://login.microsoftonline.us",
            Self::China => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The host of v1 tokens' `iss` (`https://<host>/<tenant>/`).
    #[must_use]
    pub const fn v1_issuer_host(self) -> &'static str {
        match self {
            Self::Global | Self::UsGov => "sts.windows.net",
            Self::China => "sts.chinacloudapi.cn",
        }
    }

    /// `https://<sts host>/<tid>/`: the v1 issuer of tenant `tid`.
    #[must_use]
    pub fn v1_issuer(self, tid: &str) -> String {
        format!("https://{}/{tid}/", self.v1_issuer_host())
    }

    /// `<authority>/<tid>/v2.0`: the v2 issuer of tenant `tid`.
    #[must_use]
    pub fn v2_issuer(self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.authority())
    }

    /// The metadata document's `cloud_instance_name`.
    #[must_use]
    pub const fn instance_name(self) -> &'static str {
        match self {
            Self::Global => "microsoftonline.com",
            Self::UsGov => "microsoftonline.us",
            Self::China => "partner.microsoftonline.cn",
        }
    }

    /// The cloud whose sign-in host `authority` names (its older hosts too:
    /// `login.windows.net`, `login.chinacloudapi.cn`, `login-us.microsoftonline.com`);
    /// `None` for any other host (a local issuer in tests, a proxy).
    #[must_use]
    pub fn of_authority(authority: &str) -> Option<Self> {
        let host = authority
            .split("://")
            .nth(1)
            .unwrap_or(authority)
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match host.as_str() {
            "login.microsoftonline.com"
            | "login.windows.net"
            | "login.microsoft.com"
            | "sts.windows.net" => Some(Self::Global),
            "login.microsoftonline.us" | "login-us.microsoftonline.com" => Some(Self::UsGov),
            "login.partner.microsoftonline.cn" | "login.chinacloudapi.cn" => Some(Self::China),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cloud_has_its_hosts() {
        assert_eq!(
            Cloud::China.authority(),
            "https://login.partner.microsoftonline.cn"
        );
        assert_eq!(
            Cloud::China.v1_issuer("t"),
            "https://sts.chinacloudapi.cn/t/"
        );
        assert_eq!(Cloud::UsGov.authority(), "https://login.microsoftonline.us");
        assert_eq!(Cloud::Global.v1_issuer("t"), "https://sts.windows.net/t/");
        assert_eq!(Cloud::UsGov.v1_issuer("t"), "https://sts.windows.net/t/");
        assert_eq!(
            Cloud::UsGov.v2_issuer("t"),
            "https://login.microsoftonline.us/t/v2.0"
        );
        assert_eq!(
            Cloud::China.v2_issuer("t"),
            "https://login.partner.microsoftonline.cn/t/v2.0"
        );
        for (c, name) in Cloud::ALL {
            assert_eq!(Cloud::from_name(name), Some(c));
            assert_eq!(c.as_str(), name);
            assert_eq!(Cloud::of_authority(c.authority()), Some(c));
        }
        assert_eq!(
            Cloud::of_authority("https://login.chinacloudapi.cn/"),
            Some(Cloud::China)
        );
        assert_eq!(Cloud::of_authority("http://127.0.0.1:8080"), None);
        assert_eq!(Cloud::from_name("germany"), None);
    }

    fn load(entra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::load(
            &format!(
                "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.cn\"]\n{entra}"
            ),
            &[],
            &|_| Err(std::io::Error::other("no files")),
        )
    }

    #[test]
    fn the_cloud_sets_the_authority_and_the_challenge_host() {
        let c = load("cloud = \"china\"\n").expect("valid");
        assert_eq!(
            c.entra.authority,
            "https://login.partner.microsoftonline.cn"
        );
        assert_eq!(
            c.challenge.authorization_uri,
            "https://login.partner.microsoftonline.cn/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/authorize"
        );
        let c = load("cloud = \"usgov\"\n").expect("valid");
        assert_eq!(
            c.challenge.realm,
            "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        // A local issuer (tests, dev) or a proxy may stand in for the cloud's host.
        let c = load("cloud = \"china\"\nauthority = \"http://127.0.0.1:9\"\n").expect("valid");
        assert_eq!(c.entra.authority, "http://127.0.0.1:9");
        // Another cloud's host, or an unknown cloud, is named.
        let e = load("cloud = \"usgov\"\nauthority = \"https://login.microsoftonline.com\"\n")
            .expect_err("mix-up");
        assert_eq!(e.problems[0].key, "entra.authority");
        let e = load("cloud = \"germany\"\n").expect_err("unknown");
        assert_eq!(e.problems[0].key, "entra.cloud");
    }
}
