//! `ceusd demo`: everything on this machine with no setup. An embedded broker, the synthetic
//! scanner playing PDAC-like and CP-like exams, the demo model, the bedside page and a live
//! view in the terminal; prints a summary of the exams at the end.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Time runs N times faster than a real exam.
    #[arg(long, default_value_t = 4.0)]
    speed: f64,
    /// Use this broker instead of the embedded one.
    #[arg(long)]
    broker: Option<String>,
    /// Port of the embedded broker (default 1883, or a free port when it is taken).
    #[arg(long)]
    port: Option<u16>,
    /// Stop after N exams (alternating PDAC-like and CP-like); without it, exams go on until
    /// Ctrl-C.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    exams: Option<u32>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log lines instead of the live view.
    #[arg(long)]
    no_view: bool,
    /// Frame size of the synthetic scanner, WxH.
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// Frame rate of the synthetic scanner.
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    /// Port of the bedside display's page (default 8080, or a free port when it is taken).
    #[arg(long)]
    web_port: Option<u16>,
    /// Port of the embedded broker's MQTT-over-WebSockets listener, for the page (default
    /// 9001, or a free port when it is taken).
    #[arg(long)]
    ws_port: Option<u16>,
    /// Serve no display page (and open no WebSockets listener).
    #[arg(long)]
    no_web: bool,
}

pub fn run(a: DemoArgs, out: &mut impl Write) -> Result<()> {
    let summary = ceusd::demo::run(
        ceusd::demo::DemoOptions {
            speed: a.speed,
            broker: a.broker,
            port: a.port,
            exams: a.exams,
            hold: ceusd::demo::RESULT_HOLD,
            state_dir: a.state_dir,
            view: !a.no_view,
            seed: 11,
            size: ceusd::capture::source::parse_frame_size(&a.size)
                .with_context(|| format!("--size {}: expected WxH", a.size))?,
            fps: a.fps,
            web: (!a.no_web).then_some((a.web_port, a.ws_port)),
        },
        out,
    )?;
    write!(out, "\n{summary}")?;
    out.flush()?;
    std::process::exit(0);
}
