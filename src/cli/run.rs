//! `ceusd run`: the service that systemd starts. Loads the configuration and the model, then
//! serves capture, exam timing, scoring and MQTT until SIGTERM or SIGINT.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

use super::{OverrideArgs, LOG_TARGET};

/// sysexits' EX_CONFIG: `ceusd run` cannot start with this configuration or model.
const EXIT_CONFIG: i32 = 78;

#[derive(Args)]
pub struct RunArgs {
    /// The configuration file (see systemd/ceusd.example.toml).
    #[arg(long, default_value = "/etc/ceusd/ceusd.toml")]
    config: PathBuf,
    #[command(flatten)]
    overrides: OverrideArgs,
}

pub fn run(a: RunArgs) -> Result<()> {
    log::info!(
            target: LOG_TARGET,
        "ceusd {} starting, configuration {}",
        env!("CARGO_PKG_VERSION"),
        a.config.display()
    );
    // Without a valid configuration and model, restarting cannot help: say so with EX_CONFIG,
    // which the unit's RestartPreventExitStatus= names.
    let unusable = |e: anyhow::Error| -> ! {
        log::error!(target: LOG_TARGET, "{e:#}");
        log::error!(target: LOG_TARGET, "not starting: fix the configuration, then `ceusd check`");
        std::process::exit(EXIT_CONFIG)
    };
    let config = ceusd::config::Config::load(&a.config, &a.overrides.overrides())
        .unwrap_or_else(|e| unusable(e.into()));
    let model = ceusd::daemon::load_model(&config)
        .with_context(|| format!("loading model {}", config.model.path))
        .unwrap_or_else(|e| unusable(e));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                log::error!(target: LOG_TARGET, "cannot listen for SIGTERM/SIGINT");
                return;
            };
            tokio::select! {
                _ = term.recv() => log::info!(target: LOG_TARGET, "SIGTERM"),
                _ = int.recv() => log::info!(target: LOG_TARGET, "SIGINT"),
            }
            let _ = stop_tx.send(true);
        });
        ceusd::daemon::serve(config, std::sync::Arc::new(model), stop_rx).await
    })?;
    // Threads stuck in a driver call must not hold the exit.
    std::process::exit(0)
}
