//! `ceusd model inspect`: shows a model file's (or the embedded demo model's) metadata,
//! parameter count, stored tensor types, int8 scales, provenance and content hash, as text or
//! JSON.

use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use ceusd::model::file::{read_model, ModelFile};
use ceusd::model::Training;

use super::scales::span;

#[derive(Args)]
pub struct InspectArgs {
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs, out: &mut impl Write) -> Result<()> {
    let m = if a.file.as_os_str() == "demo" {
        inspect_demo_model()?
    } else {
        read_model(&a.file, None)?
    };
    let inspection = Inspection::of(m);
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&inspection.json())?)?;
    } else {
        write!(out, "{inspection}")?;
    }
    Ok(())
}

/// The embedded demo model as `model inspect` shows a file: written to a scratch file exactly
/// as `model export-demo` would write it, read back, and the scratch file removed.
fn inspect_demo_model() -> Result<ModelFile> {
    let scratch =
        std::env::temp_dir().join(format!("ceusd-inspect-demo-{}.gguf", std::process::id()));
    let written =
        ceusd::model::demo::write_demo_model(&scratch).and_then(|_| read_model(&scratch, None));
    let _ = std::fs::remove_file(&scratch);
    let mut m = written?;
    m.path = PathBuf::from("demo (the embedded demo model)");
    Ok(m)
}

/// A model file with the counts the report shows.
struct Inspection {
    file: ModelFile,
    parameters: usize,
    /// How many tensors are stored as each type.
    type_counts: BTreeMap<String, usize>,
    /// The calibrated input scale of each convolution that has one (folded-int8-static).
    input_scales: BTreeMap<String, f32>,
}

impl Inspection {
    fn of(file: ModelFile) -> Self {
        let mut type_counts = BTreeMap::<String, usize>::new();
        for t in file.stored_types.values() {
            *type_counts.entry(t.clone()).or_default() += 1;
        }
        let input_scales = file
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let conv = name.strip_suffix(".input_scale")?;
                let v = t.flatten_all().ok()?.to_vec1::<f32>().ok()?;
                Some((conv.to_string(), *v.first()?))
            })
            .collect();
        Self {
            parameters: file.parameter_count(),
            file,
            type_counts,
            input_scales,
        }
    }

    fn json(&self) -> serde_json::Value {
        let m = &self.file;
        serde_json::json!({
            "path": m.path,
            "file_bytes": m.file_bytes,
            "content_hash": m.content_hash,
            "parameters": self.parameters,
            "tensors": m.tensors.len(),
            "stored_types": m.stored_types,
            "input_scales": self.input_scales,
            "training": m.metadata.training(),
            "metadata": m.metadata,
        })
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_network(f)?;
        self.write_scales(f)?;
        let p = &self.file.metadata.provenance;
        match self.file.metadata.training() {
            Training::Trained => writeln!(f, "trained       true")?,
            Training::Untrained => writeln!(f, "trained       false (seeded random weights)")?,
            Training::HeadUntrained => writeln!(
                f,
                "trained       false: head untrained (pretrained backbone, seeded DLR head; \
                 run `ceusd train` before scoring)"
            )?,
        }
        writeln!(f, "training data {}", p.training_data)?;
        writeln!(f, "created       {} by {}", p.created, p.software)?;
        writeln!(f, "source        {}", p.source)?;
        writeln!(f, "intended use  {}", p.intended_use)
    }
}

impl Inspection {
    /// The file, its hash, and the network it holds: input, classes, head, tensors, format.
    fn write_network(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.file;
        let md = &m.metadata;
        writeln!(
            f,
            "file          {} ({} bytes)",
            m.path.display(),
            m.file_bytes
        )?;
        writeln!(f, "content hash  {}", m.content_hash)?;
        writeln!(f, "name          {}", md.name)?;
        writeln!(
            f,
            "architecture  {} (format {})",
            md.architecture, md.format_version
        )?;
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "input         {} channel(s), {}x{}, resize {}, mean {}, std {}",
            md.input_channels,
            md.input_size,
            md.input_size,
            md.resize_filter.name(),
            list(&md.mean),
            list(&md.std)
        )?;
        writeln!(
            f,
            "classes       {}; positive {}, threshold {}",
            md.classes.join(", "),
            md.positive_class,
            md.threshold
        )?;
        writeln!(
            f,
            "head          2048 -> {} -> {} -> 2",
            md.head_hidden,
            md.head_activation.name()
        )?;
        writeln!(
            f,
            "parameters    {} in {} tensors; stored as {}",
            self.parameters,
            m.tensors.len(),
            self.type_counts
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(f, "weights       {}", md.weight_format.describe())
    }

    /// The range of the int8 weight scales and of the calibrated input steps, where the file
    /// has them.
    fn write_scales(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int8 = &self.file.int8;
        if !int8.is_empty() {
            let scales: Vec<f32> = int8
                .values()
                .flat_map(|q| q.scales.iter().copied())
                .collect();
            let (lo, hi) = span(scales.iter().copied());
            writeln!(
                f,
                "int8          {} convolutions, {} channels, weight scales {lo:.3e}..{hi:.3e}",
                int8.len(),
                scales.len()
            )?;
        }
        if !self.input_scales.is_empty() {
            let (lo, hi) = span(self.input_scales.values().copied());
            writeln!(
                f,
                "input steps   {} convolutions, calibrated, {lo:.3e}..{hi:.3e} per u8 step",
                self.input_scales.len()
            )?;
        }
        Ok(())
    }
}
