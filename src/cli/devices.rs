//! `ceusd devices`: lists the video capture devices on this machine with the formats, frame
//! sizes and rates each offers, as text or JSON.

use anyhow::Result;
use clap::Args;
use std::fmt;
use std::io::Write;

use ceusd::capture::v4l2::{list_devices, DeviceInfo};

#[derive(Args)]
pub struct DevicesArgs {
    #[arg(long)]
    json: bool,
}

pub fn run(a: DevicesArgs, out: &mut impl Write) -> Result<()> {
    let devices = list_devices();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&devices)?)?;
    } else {
        write!(out, "{}", DeviceList(&devices))?;
    }
    Ok(())
}

/// The text listing: each device, then its formats, each format's sizes beneath it.
struct DeviceList<'a>(&'a [DeviceInfo]);

impl fmt::Display for DeviceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no video capture devices found (looked at /dev/video*)");
        }
        for d in self.0 {
            writeln!(f, "{} — {} ({})", d.path.display(), d.card, d.driver)?;
            match &d.offers {
                Ok(offers) => {
                    for o in offers {
                        let mark = if o.supported {
                            ""
                        } else {
                            " (not supported by ceusd)"
                        };
                        writeln!(f, "  {} {}{mark}", o.fourcc, o.description)?;
                        for size in &o.sizes {
                            writeln!(f, "    {size}")?;
                        }
                    }
                }
                Err(e) => writeln!(f, "  {e}")?,
            }
        }
        Ok(())
    }
}
