//! `[telemetry]`: OpenTelemetry traces exported over OTLP, and the standard `OTEL_*`
//! variables.
//!
//! Precedence, as the OpenTelemetry SDKs do it (explicit configuration wins over the
//! environment's defaults): a `telemetry.*` key (from the file or its
//! `ENTRAGATE_TELEMETRY__*` variable) wins; an `OTEL_*` variable fills in a key that is not
//! set. `OTEL_SDK_DISABLED=true` turns tracing off whatever the keys say.

use super::read::Reader;

/// `telemetry.otlp_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (port 4318), the default.
    HttpProtobuf,
    /// OTLP/gRPC (port 4317).
    Grpc,
}

impl OtlpProtocol {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }
}

/// Which traces are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The share of new traces (no sampled parent) kept, 0 to 1.
    pub ratio: f64,
    /// True: a parent's decision (`traceparent`'s sampled flag) is followed; the ratio
    /// applies to traces that start here. `telemetry.sample_ratio` is always parent-based.
    pub parent_based: bool,
}

/// Tracing on: where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Otlp {
    /// The URL spans are sent to: for `http/protobuf` the full traces URL (`/v1/traces`
    /// added to a bare origin), for `grpc` the collector's origin.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    pub sampling: Sampling,
    /// `enduser.id` = the token's `oid` on the request span.
    pub record_user: bool,
}

/// `[telemetry]`: `None` = no tracing (no `otlp_endpoint` nor `OTEL_EXPORTER_OTLP_*ENDPOINT`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    pub otlp: Option<Otlp>,
}

/// The standard variables read (the rest of `OTEL_*` is left to the exporter: headers,
/// timeout, TLS).
pub const OTEL_VARS: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// The default share of new traces kept.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.05;

pub(super) fn read_telemetry(r: &mut Reader, env: &[(String, String)]) -> Telemetry {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let protocol = match (
        r.opt_string("telemetry.otlp_protocol"),
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| (v, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| {
                var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| (v, "OTEL_EXPORTER_OTLP_PROTOCOL"))
            }),
    ) {
        (Some(text), _) => parse_protocol(&text).unwrap_or_else(|| {
            r.problem(
                "telemetry.otlp_protocol",
                format!("must be \"http/protobuf\" or \"grpc\", not {text:?}"),
            );
            OtlpProtocol::HttpProtobuf
        }),
        (None, Some((text, name))) => parse_protocol(&text).unwrap_or_else(|| {
            problem_from(
                r,
                "telemetry.otlp_protocol",
                name,
                format!("must be \"http/protobuf\" or \"grpc\", not {text:?}"),
            );
            OtlpProtocol::HttpProtobuf
        }),
        (None, None) => OtlpProtocol::HttpProtobuf,
    };
    // The endpoint: the key, else the signal's own variable (used as it is), else the
    // general one (`/v1/traces` appended for OTLP/HTTP, as the OpenTelemetry spec says).
    let endpoint = match r.opt_string("telemetry.otlp_endpoint") {
        Some(url) => check_endpoint(&url, protocol, Path::IfBare)
            .map_err(|msg| r.problem("telemetry.otlp_endpoint", msg))
            .ok(),
        None => {
            if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                check_endpoint(&url, protocol, Path::AsIs)
                    .map_err(|msg| {
                        problem_from(
                            r,
                            "telemetry.otlp_endpoint",
                            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                            msg,
                        );
                    })
                    .ok()
            } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                check_endpoint(&url, protocol, Path::Append)
                    .map_err(|msg| {
                        problem_from(
                            r,
                            "telemetry.otlp_endpoint",
                            "OTEL_EXPORTER_OTLP_ENDPOINT",
                            msg,
                        );
                    })
                    .ok()
            } else {
                None
            }
        }
    };
    let service_name = match r.opt_string("telemetry.service_name") {
        Some(name) if name.trim().is_empty() => {
            r.problem("telemetry.service_name", "must not be empty");
            "entragate".to_owned()
        }
        Some(name) => name,
        None => var("OTEL_SERVICE_NAME").unwrap_or_else(|| "entragate".to_owned()),
    };
    let sampling = if r.has("telemetry.sample_ratio") {
        let ratio = match r.opt_f64("telemetry.sample_ratio") {
            Some(v) if (0.0..=1.0).contains(&v) => v,
            Some(v) => {
                r.problem(
                    "telemetry.sample_ratio",
                    format!("must be between 0 and 1, not {v}"),
                );
                DEFAULT_SAMPLE_RATIO
            }
            None => DEFAULT_SAMPLE_RATIO,
        };
        Sampling {
            ratio,
            parent_based: true,
        }
    } else {
        match sampler_from_env(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG")) {
            Ok(s) => s,
            Err((name, msg)) => {
                problem_from(r, "telemetry.sample_ratio", name, msg);
                Sampling {
                    ratio: DEFAULT_SAMPLE_RATIO,
                    parent_based: true,
                }
            }
        }
    };
    let record_user = r.bool("telemetry.record_user", false);
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Telemetry {
        otlp: endpoint.filter(|_| !disabled).map(|endpoint| Otlp {
            endpoint,
            protocol,
            service_name,
            sampling,
            record_user,
        }),
    }
}

fn parse_protocol(text: &str) -> Option<OtlpProtocol> {
    match text {
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        "grpc" => Some(OtlpProtocol::Grpc),
        _ => None,
    }
}

/// A problem with `key` whose value came from the standard variable `name`.
fn problem_from(r: &mut Reader, key: &str, name: &str, message: impl Into<String>) {
    r.push(super::Problem {
        key: key.to_owned(),
        env_var: Some(name.to_owned()),
        message: message.into(),
    });
}

/// What an OTLP/HTTP endpoint's path becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the traces URL itself.
    AsIs,
    /// `telemetry.otlp_endpoint`: `/v1/traces` when it has no path.
    IfBare,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL, `/v1/traces` always appended.
    Append,
}

/// The URL spans are sent to. For OTLP/HTTP, a bare origin (no path, or `/`) gets
/// `/v1/traces`; `append` (the general `OTEL_EXPORTER_OTLP_ENDPOINT`) appends it to any
/// path, as the OpenTelemetry spec says.
fn check_endpoint(url: &str, protocol: OtlpProtocol, rule: Path) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{url:?} is not an http(s) URL like http://127.0.0.1:4318"
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "credentials in the URL are not allowed; use OTEL_EXPORTER_OTLP_HEADERS".into(),
        );
    }
    if protocol == OtlpProtocol::Grpc {
        if uri.scheme_str() == Some("https") {
            return Err(format!(
                "{url:?}: OTLP/gRPC is sent without TLS (to a local collector or agent); for https use otlp_protocol = \"http/protobuf\""
            ));
        }
        return Ok(url.to_owned());
    }
    let path = uri.path();
    if rule == Path::Append || (rule == Path::IfBare && (path.is_empty() || path == "/")) {
        let base = url.trim_end_matches('/');
        return Ok(format!("{base}/v1/traces"));
    }
    Ok(url.to_owned())
}

/// `OTEL_TRACES_SAMPLER` and its argument, as the OpenTelemetry spec names them.
fn sampler_from_env(
    sampler: Option<String>,
    arg: Option<String>,
) -> Result<Sampling, (&'static str, String)> {
    let ratio = || -> Result<f64, (&'static str, String)> {
        match &arg {
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
                _ => Err((
                    "OTEL_TRACES_SAMPLER_ARG",
                    format!("must be a number between 0 and 1, not {text:?}"),
                )),
            },
        }
    };
    let (ratio, parent_based) = match sampler.as_deref() {
        None => match &arg {
            // An argument alone: the default sampler, parent-based, at that ratio.
            Some(_) => (ratio()?, true),
            None => (DEFAULT_SAMPLE_RATIO, true),
        },
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("traceidratio") => (ratio()?, false),
        Some("parentbased_always_on") => (1.0, true),
        Some("parentbased_always_off") => (0.0, true),
        Some("parentbased_traceidratio") => (ratio()?, true),
        Some(other) => {
            return Err((
                "OTEL_TRACES_SAMPLER",
                format!(
                    "{other:?} is not supported; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    };
    Ok(Sampling {
        ratio,
        parent_based,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"api://x\"]\n";

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Telemetry, crate::config::ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(&format!("{BASE}{extra}"), &env, &|_| {
            Err(std::io::Error::other("no files"))
        })
        .map(|c| c.telemetry)
    }

    /// The `[telemetry]` of a config that turns tracing on.
    fn on(extra: &str, env: &[(&str, &str)]) -> Otlp {
        load(extra, env).expect("config").otlp.expect("tracing on")
    }

    #[test]
    fn absent_means_off_and_defaults_fill_the_rest() {
        assert_eq!(load("", &[]).expect("config").otlp, None);
        let t = load("[telemetry]\nservice_name = \"gw\"\n", &[]).expect("config");
        assert_eq!(t.otlp, None, "no endpoint: off");
        let otlp = on(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
            &[],
        );
        assert_eq!(otlp.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(otlp.service_name, "entragate");
        assert_eq!(
            otlp.sampling,
            Sampling {
                ratio: 0.05,
                parent_based: true
            }
        );
        assert!(!otlp.record_user);
        // A path is used as given; gRPC takes the origin as it is.
        let otlp = on(
            "[telemetry]\notlp_endpoint = \"https://c.example/otlp/v1/traces\"\n",
            &[],
        );
        assert_eq!(otlp.endpoint, "https://c.example/otlp/v1/traces");
        let otlp = on(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\notlp_protocol = \"grpc\"\n",
            &[],
        );
        assert_eq!(
            (otlp.endpoint.as_str(), otlp.protocol),
            ("http://127.0.0.1:4317", OtlpProtocol::Grpc)
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_variable() {
        let e = load(
            "[telemetry]\notlp_endpoint = \"ftp://x\"\notlp_protocol = \"http/json\"\nsample_ratio = 1.5\n",
            &[],
        )
        .expect_err("bad");
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "telemetry.otlp_protocol",
                "telemetry.otlp_endpoint",
                "telemetry.sample_ratio"
            ]
        );
        let e = load("[telemetry]\nsample_ratio = \"half\"\n", &[]).expect_err("bad");
        assert_eq!(e.problems[0].key, "telemetry.sample_ratio");
        let e = load(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "lots"),
            ],
        )
        .expect_err("bad");
        assert_eq!(e.problems[0].key, "telemetry.sample_ratio");
        assert_eq!(
            e.problems[0].env_var.as_deref(),
            Some("OTEL_TRACES_SAMPLER_ARG")
        );
        let e = load("", &[("OTEL_TRACES_SAMPLER", "jaeger_remote")]).expect_err("bad");
        assert_eq!(
            e.problems[0].env_var.as_deref(),
            Some("OTEL_TRACES_SAMPLER")
        );
        let e = load("", &[("ENTRAGATE_TELEMETRY__SAMPLE_RATIO", "2")]).expect_err("bad");
        assert_eq!(
            e.problems[0].env_var.as_deref(),
            Some("ENTRAGATE_TELEMETRY__SAMPLE_RATIO")
        );
    }

    #[test]
    fn keys_win_over_the_standard_variables() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/base"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ];
        let otlp = on("", &env);
        assert_eq!(otlp.endpoint, "http://collector:4318/base/v1/traces");
        assert_eq!(otlp.service_name, "from-env");
        assert_eq!(
            otlp.sampling,
            Sampling {
                ratio: 0.25,
                parent_based: true
            }
        );
        let otlp = on(
            "[telemetry]\notlp_endpoint = \"http://mine:4318\"\nservice_name = \"gw\"\nsample_ratio = 1\n",
            &env,
        );
        assert_eq!(
            (otlp.endpoint.as_str(), otlp.service_name.as_str()),
            ("http://mine:4318/v1/traces", "gw")
        );
        assert_eq!(
            otlp.sampling,
            Sampling {
                ratio: 1.0,
                parent_based: true
            }
        );
        // The signal's own variable is used as it is.
        let otlp = on(
            "",
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/x")],
        );
        assert_eq!(otlp.endpoint, "http://c:4318/x");
        // Disabled wins.
        let t = load(
            "[telemetry]\notlp_endpoint = \"http://mine:4318\"\n",
            &[("OTEL_SDK_DISABLED", "true")],
        )
        .expect("config");
        assert_eq!(t.otlp, None);
    }

    #[test]
    fn the_standard_samplers() {
        for (name, want) in [
            ("always_on", (1.0, false)),
            ("always_off", (0.0, false)),
            ("traceidratio", (0.5, false)),
            ("parentbased_always_on", (1.0, true)),
            ("parentbased_always_off", (0.0, true)),
            ("parentbased_traceidratio", (0.5, true)),
        ] {
            let s = sampler_from_env(Some(name.into()), Some("0.5".into())).expect(name);
            assert_eq!((s.ratio, s.parent_based), want, "{name}");
        }
        let s = sampler_from_env(None, None).expect("default");
        assert_eq!((s.ratio, s.parent_based), (DEFAULT_SAMPLE_RATIO, true));
    }
}
