//! `entragate`: arguments -> config -> telemetry -> app (or an operator command); nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser as _;
use entragate::cli::{Cli, Command, Format, LogFormatArg};
use entragate::config::{CONFIG_ENV, Config, LogFormat, config_path};
use entragate::ops::{check, explain, import_apim};
use entragate::{app, dev, reload, telemetry};

/// Exit codes (SPEC §2): 0 ok, 1 runtime failure, 2 bad usage or bad config.
const RUNTIME_FAILURE: u8 = 1;
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("entragate: cannot start the async runtime: {e}");
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    match cli.command {
        Command::Serve { config, log_format } => {
            let path = path_of(config);
            let config = match Config::load_file(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("entragate: {}: {e}", path.display());
                    return ExitCode::from(BAD_CONFIG);
                }
            };
            let format = match log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Text) => LogFormat::Text,
                None => config.server.log_format,
            };
            telemetry::init(format);
            runtime.block_on(async {
                let mut config = config;
                // What is in force; a reload compares against it, so --log-format is no change.
                config.server.log_format = format;
                match app::start(&config).await {
                    Ok(running) => {
                        reload::serve(running, &path).await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start");
                        eprintln!("entragate: {e}");
                        ExitCode::from(RUNTIME_FAILURE)
                    }
                }
            })
        }
        Command::Dev {
            listen,
            admin_listen,
            once,
        } => runtime.block_on(async {
            match dev::run(dev::DevOptions {
                listen,
                admin_listen,
                once,
            })
            .await
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(RUNTIME_FAILURE),
                Err(e) => {
                    eprintln!("entragate dev: {e}");
                    ExitCode::from(RUNTIME_FAILURE)
                }
            }
        }),
        Command::Check { config, format } => {
            let path = path_of(config);
            runtime.block_on(run_check(&path, format))
        }
        Command::Explain {
            config,
            offline,
            method,
            path,
            format,
            token,
        } => {
            let config_file = path_of(config);
            runtime.block_on(run_explain(
                &config_file,
                &token,
                offline,
                &method,
                path,
                format,
            ))
        }
        Command::ImportApim { policy } => run_import(&policy),
    }
}

fn path_of(flag: Option<PathBuf>) -> PathBuf {
    config_path(flag, std::env::var(CONFIG_ENV).ok())
}

async fn run_check(path: &Path, format: Format) -> ExitCode {
    let shown = path.display().to_string();
    let (report, code) = match Config::load_file(path) {
        Err(e) => (check::Report::bad_config(&shown, &e), BAD_CONFIG),
        Ok(config) => match check::run(&config, &shown, &mut std::io::stderr()).await {
            Ok(report) => {
                let code = if report.ok { 0 } else { RUNTIME_FAILURE };
                (report, code)
            }
            Err(e) => {
                eprintln!("entragate check: {e}");
                return ExitCode::from(RUNTIME_FAILURE);
            }
        },
    };
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    ExitCode::from(code)
}

async fn run_explain(
    config_file: &Path,
    token: &str,
    offline: bool,
    method: &str,
    path: String,
    format: Format,
) -> ExitCode {
    let config = match Config::load_file(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprint!("entragate explain: {}: {e}", config_file.display());
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("entragate explain: --method {method:?} is not an HTTP method");
        return ExitCode::from(BAD_CONFIG);
    };
    let token = match explain::read_token(token, std::io::stdin().lock()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("entragate explain: {e}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let opts = explain::Options {
        offline,
        method,
        path,
    };
    match explain::explain(&config, &token, &opts, &mut std::io::stderr()).await {
        Ok(x) => {
            match format {
                Format::Text => print!("{}", x.to_text()),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&x).unwrap_or_default())
                }
            }
            ExitCode::from(if x.accepted { 0 } else { RUNTIME_FAILURE })
        }
        Err(e @ explain::ExplainError::Client(_)) => {
            eprintln!("entragate explain: {e}");
            ExitCode::from(RUNTIME_FAILURE)
        }
        Err(e) => {
            eprintln!("entragate explain: {e}");
            ExitCode::from(BAD_CONFIG)
        }
    }
}

fn run_import(policy: &Path) -> ExitCode {
    let (xml, source) = if policy.as_os_str() == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            eprintln!("entragate import-apim: cannot read standard input: {e}");
            return ExitCode::from(BAD_CONFIG);
        }
        (text, "standard input".to_owned())
    } else {
        match std::fs::read_to_string(policy) {
            Ok(t) => (t, policy.display().to_string()),
            Err(e) => {
                eprintln!(
                    "entragate import-apim: cannot read {}: {e}",
                    policy.display()
                );
                return ExitCode::from(BAD_CONFIG);
            }
        }
    };
    match import_apim::convert(&xml, &source) {
        Ok(c) => {
            print!("{}", c.toml);
            for w in &c.warnings {
                eprintln!("entragate import-apim: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("entragate import-apim: {}: {e}", source);
            ExitCode::from(BAD_CONFIG)
        }
    }
}
