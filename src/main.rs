//! `entragate`: arguments -> config -> telemetry -> app; nothing else.

use std::process::ExitCode;

use clap::Parser as _;
use entragate::cli::{Cli, Command};
use entragate::config::{CONFIG_ENV, Config, config_path};
use entragate::{app, dev, telemetry};

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
        Command::Serve { config } => {
            let path = config_path(config, std::env::var(CONFIG_ENV).ok());
            let config = match Config::load_file(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("entragate: {}: {e}", path.display());
                    return ExitCode::from(BAD_CONFIG);
                }
            };
            telemetry::init(config.server.log_format);
            runtime.block_on(async {
                match app::start(&config).await {
                    Ok(running) => {
                        running.run_until_signal(config.server.shutdown_grace).await;
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
    }
}
