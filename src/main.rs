//! `entragate`: arguments -> config -> telemetry -> app, or an operator command; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;
use entragate::cli::{Cli, Command, LogFormatArg};
use entragate::config::{CONFIG_ENV, Config, LogFormat, config_path};
use entragate::ops::{check, explain, import_apim, init, revoke};
use entragate::{app, dev, reload, telemetry};

/// The static (musl) image's allocator: musl's own malloc takes a lock per call and returns
/// memory slowly (docs/performance.md, "The image's allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let _log = telemetry::init(format == LogFormat::Json);
            app::raise_open_files_limit(&config);
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
                        ExitCode::from(if e.is_config() {
                            BAD_CONFIG
                        } else {
                            RUNTIME_FAILURE
                        })
                    }
                }
            })
        }
        Command::Dev {
            listen,
            admin_listen,
            once,
            config,
        } => runtime.block_on(async {
            match dev::run(dev::DevOptions {
                listen,
                admin_listen,
                once,
                config,
            })
            .await
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(RUNTIME_FAILURE),
                Err(e) => {
                    eprintln!("entragate dev: {e}");
                    if e.is::<entragate::config::ConfigError>() {
                        ExitCode::from(BAD_CONFIG)
                    } else {
                        ExitCode::from(RUNTIME_FAILURE)
                    }
                }
            }
        }),
        Command::Init {
            url,
            tenant,
            clients,
            out,
            force,
        } => ExitCode::from(init::command(&init::Args {
            url,
            tenant,
            clients,
            out,
            force,
        })),
        Command::Check {
            config,
            app,
            format,
        } => ExitCode::from(runtime.block_on(check::command(
            &path_of(config),
            app.as_deref(),
            format,
        ))),
        Command::Explain {
            config,
            offline,
            method,
            path,
            format,
            token,
        } => {
            let args = explain::Args {
                config: path_of(config),
                token,
                offline,
                method,
                path,
                format,
            };
            ExitCode::from(runtime.block_on(explain::command(args)))
        }
        Command::ImportApim { policy } => ExitCode::from(import_apim::command(&policy)),
        Command::Revoke {
            config,
            subject,
            issued_before,
            until,
        } => ExitCode::from(runtime.block_on(revoke::revoke(
            &path_of(config),
            &subject,
            issued_before.as_deref(),
            until.as_deref(),
        ))),
        Command::Unrevoke { config, subject } => {
            ExitCode::from(runtime.block_on(revoke::unrevoke(&path_of(config), &subject)))
        }
        Command::Revoked { config } => {
            ExitCode::from(runtime.block_on(revoke::list(&path_of(config))))
        }
    }
}

fn path_of(flag: Option<PathBuf>) -> PathBuf {
    config_path(flag, std::env::var(CONFIG_ENV).ok())
}
