//! `ceusd check`: checks an installation (configuration, model and hash, capture source, state
//! directory, broker) and prints one PASS or FAIL line per check; exit status 1 if any fails.

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use super::OverrideArgs;

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long, default_value = "/etc/ceusd/ceusd.toml")]
    config: PathBuf,
    #[command(flatten)]
    overrides: OverrideArgs,
    /// How long to wait for a frame and for the broker.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Run only these checks after the configuration's (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(ceusd::check::CHECKS))]
    only: Vec<String>,
}

pub fn run(a: CheckArgs, out: &mut impl Write) -> Result<()> {
    let lines = ceusd::check::run_checks(
        &a.config,
        &a.overrides.overrides(),
        std::time::Duration::from_secs_f64(a.timeout.clamp(0.5, 600.0)),
        &a.only,
    );
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    // A configuration that fails ends the list with its own FAIL line.
    if lines.iter().any(|l| !l.passed) {
        out.flush()?;
        std::process::exit(1);
    }
    Ok(())
}
