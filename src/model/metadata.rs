//! What a model file says about itself, and what the daemon obeys.
//!
//! Every field here is stored as a GGUF key/value under `ceusd.*` (plus the conventional
//! `general.architecture` and `general.name`). Preprocessing, class order, the decision threshold
//! and the head layout are read from the file, never assumed, so a model trained with another
//! normalisation or class order scores correctly or is refused.

use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::error::ModelError;

/// The only architecture this crate implements: torchvision ResNet-50 (v1.5) + the DLR head of
/// Tong et al. (FC 2048→hidden → activation → dropout → FC hidden→2 → softmax).
pub const ARCHITECTURE: &str = "ceus-dlr-resnet50";
/// Bumped when the meaning of a key changes.
pub const FORMAT_VERSION: u32 = 1;

/// How the ROI is resized to the network's input, named as Pillow names its filters, since
/// training pipelines resize with Pillow (torchvision's `Resize` on PIL images). Only filters
/// whose output is checked against Pillow's are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    Bilinear,
    Bicubic,
}

impl ResizeFilter {
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::Bicubic => "bicubic",
        }
    }
}

impl std::str::FromStr for ResizeFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            other => Err(format!(
                "unknown resize filter '{other}' (expected bilinear or bicubic)"
            )),
        }
    }
}

/// Activation between the head's two fully connected layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadActivation {
    None,
    Relu,
}

impl HeadActivation {
    pub fn name(self) -> &'static str {
        match self {
            HeadActivation::None => "none",
            HeadActivation::Relu => "relu",
        }
    }
}

impl std::str::FromStr for HeadActivation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "relu" => Ok(Self::Relu),
            other => Err(format!(
                "unknown head activation '{other}' (expected none or relu)"
            )),
        }
    }
}

/// How the file stores the convolutions, and so which engine can run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// torchvision's tensors: every convolution with its BatchNorm, f32 or f16.
    #[default]
    Torchvision,
    /// Each BatchNorm folded into its convolution: `<conv>.weight` [cout, kh·kw·cin] in
    /// (ky, kx, ci) order and `<conv>.bias` [cout]; weights f16, biases f32.
    FoldedF16,
    /// Folded as above; convolution weights int8 with one scale per output channel (Q8_0
    /// blocks that share their channel's scale), the stem f32; activations quantized at run
    /// time (u8, one scale = max / 255 per output pixel's input patch), so no calibration set
    /// is baked in.
    FoldedInt8Dynamic,
    /// As `FoldedInt8Dynamic`, but every int8 convolution's input has one fixed scale, found
    /// by `ceusd model quantize --calibrate` on a set of images and stored as
    /// `<conv>.input_scale` [1] (f32, the value of one u8 step; larger inputs saturate).
    FoldedInt8Static,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Torchvision => "torchvision",
            WeightFormat::FoldedF16 => "folded-f16",
            WeightFormat::FoldedInt8Dynamic => "folded-int8-dynamic",
            WeightFormat::FoldedInt8Static => "folded-int8-static",
        }
    }

    /// The arithmetic of the convolutions, as a display and the result messages say it:
    /// "f32", "f16", "int8 dynamic" or "int8 static" (activation scales found at run time or
    /// calibrated into the file).
    pub fn quantization(self) -> &'static str {
        match self {
            WeightFormat::Torchvision => "f32",
            WeightFormat::FoldedF16 => "f16",
            WeightFormat::FoldedInt8Dynamic => "int8 dynamic",
            WeightFormat::FoldedInt8Static => "int8 static",
        }
    }

    /// What the format stores, in words, as `ceusd model inspect` says it.
    pub fn describe(self) -> &'static str {
        match self {
            WeightFormat::Torchvision => "torchvision layout, each BatchNorm separate",
            WeightFormat::FoldedF16 => {
                "BatchNorm folded into each convolution; f16 weights, f32 biases"
            }
            WeightFormat::FoldedInt8Dynamic => {
                "BatchNorm folded; convolutions int8 with one scale per output channel (Q8_0), \
                 stem, biases and head f32; activations u8 with a scale per output pixel's \
                 patch, found at run time"
            }
            WeightFormat::FoldedInt8Static => {
                "BatchNorm folded; convolutions int8 with one scale per output channel (Q8_0), \
                 stem, biases and head f32; activations u8 with one calibrated scale per \
                 convolution input (<conv>.input_scale)"
            }
        }
    }

    /// Whether convolution weights are stored as int8 (`Q8_0`).
    pub fn is_int8(self) -> bool {
        matches!(
            self,
            WeightFormat::FoldedInt8Dynamic | WeightFormat::FoldedInt8Static
        )
    }

    pub fn is_folded(self) -> bool {
        self != WeightFormat::Torchvision
    }

    fn is_torchvision(&self) -> bool {
        *self == WeightFormat::Torchvision
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "torchvision" => Ok(Self::Torchvision),
            "folded-f16" => Ok(Self::FoldedF16),
            "folded-int8-dynamic" => Ok(Self::FoldedInt8Dynamic),
            "folded-int8-static" => Ok(Self::FoldedInt8Static),
            other => Err(format!(
                "unknown weight format '{other}' (expected torchvision, folded-f16, \
                 folded-int8-dynamic or folded-int8-static)"
            )),
        }
    }
}

/// How far a model's weights are trained for the task, as `model inspect`, `analyze` and every
/// result say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Training {
    /// Trained for the task (imported from a trained DLR checkpoint, or `ceusd train`).
    #[serde(rename = "trained")]
    Trained,
    /// Seeded random weights throughout (`ceusd model init`).
    #[serde(rename = "untrained")]
    Untrained,
    /// A pretrained backbone (e.g. ImageNet) under a seeded DLR head
    /// (`ceusd model import --backbone-only`), waiting for `ceusd train`.
    #[serde(rename = "head untrained")]
    HeadUntrained,
}

impl Training {
    pub fn name(self) -> &'static str {
        match self {
            Training::Trained => "trained",
            Training::Untrained => "untrained",
            Training::HeadUntrained => "head untrained",
        }
    }

    /// Why a score of such a model means nothing, as warnings say it; `None` when trained.
    pub fn untrained_reason(self) -> Option<&'static str> {
        match self {
            Training::Trained => None,
            Training::Untrained => Some("is untrained"),
            Training::HeadUntrained => Some(
                "has an untrained head (backbone imported, DLR head seeded; run `ceusd train`)",
            ),
        }
    }
}

/// Where the weights came from. Kept with the weights so a result can always be traced back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// False for seeded random models: their scores mean nothing.
    pub trained: bool,
    /// What the weights were trained on (cohort, scanners, dates), in words.
    pub training_data: String,
    /// When these weights were made (RFC 3339, UTC): by training or import, or
    /// `SOURCE_DATE_EPOCH` when set (see [`creation_time`]). A quantized or converted file keeps
    /// its input's time, so the same input always gives the same bytes and content hash.
    pub created: String,
    /// The software that wrote this file.
    pub software: String,
    /// How this file was produced: `init --seed 7`, `import <file> (sha256 …)`, ….
    pub source: String,
    /// Intended use statement shown with every score, e.g. "not for clinical use".
    pub intended_use: String,
}

/// The creation time a newly made model file records: `SOURCE_DATE_EPOCH` (whole seconds since
/// 1970, the reproducible-builds convention) when it is set, so that a site can re-derive a
/// pinned content hash by making the file again; otherwise now.
pub fn creation_time() -> Result<String, ModelError> {
    let at = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => {
            let seconds: u64 = value.trim().parse().map_err(|_| {
                ModelError::Input(format!(
                    "SOURCE_DATE_EPOCH '{value}' is not a whole number of seconds since 1970"
                ))
            })?;
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)
        }
        Err(_) => std::time::SystemTime::now(),
    };
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

/// Everything a model file declares besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub architecture: String,
    pub format_version: u32,
    /// 1: the gray ROI is the input; 3: the gray ROI is replicated into three channels.
    pub input_channels: u32,
    /// Side of the square network input, in pixels.
    pub input_size: u32,
    pub resize_filter: ResizeFilter,
    /// Per channel, applied to pixel/255.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Class names in the order of the last layer's outputs.
    pub classes: Vec<String>,
    /// The class whose probability is the AI score (PDAC).
    pub positive_class: String,
    /// A score at or above this is labelled the positive class.
    pub threshold: f32,
    pub head_hidden: u32,
    pub head_activation: HeadActivation,
    /// True while the head is seeded and the backbone pretrained (`model import
    /// --backbone-only`); `ceusd train` clears it. Stored (`ceusd.head.untrained`) only when
    /// true, so the files and content hashes of every other model stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_untrained: bool,
    pub provenance: Provenance,
    /// Absent from files (and from the content hash) while it is the default, so the hashes of
    /// torchvision-format files do not depend on this field's existence.
    #[serde(default, skip_serializing_if = "WeightFormat::is_torchvision")]
    pub weight_format: WeightFormat,
}

impl ModelMetadata {
    /// The defaults of the paper's method for a 3-channel ImageNet-style ResNet-50.
    pub fn paper_defaults(name: &str, provenance: Provenance) -> Self {
        Self {
            name: name.to_string(),
            architecture: ARCHITECTURE.to_string(),
            format_version: FORMAT_VERSION,
            input_channels: 3,
            input_size: 224,
            resize_filter: ResizeFilter::Bilinear,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            // torchvision's ImageFolder sorts class folders: "CP" < "PDAC".
            classes: vec!["CP".to_string(), "PDAC".to_string()],
            positive_class: "PDAC".to_string(),
            threshold: 0.5,
            head_hidden: 512,
            head_activation: HeadActivation::Relu,
            head_untrained: false,
            provenance,
            weight_format: WeightFormat::Torchvision,
        }
    }

    /// Index of the positive class in the network's output.
    pub fn positive_index(&self) -> usize {
        self.classes
            .iter()
            .position(|c| c == &self.positive_class)
            .unwrap_or(0)
    }

    /// How far the weights are trained for the task.
    pub fn training(&self) -> Training {
        if self.head_untrained {
            Training::HeadUntrained
        } else if self.provenance.trained {
            Training::Trained
        } else {
            Training::Untrained
        }
    }

    /// Checks that the declared values are usable; names the first field that is not.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key: &str, why: String| ModelError::BadMetadata {
            key: key.to_string(),
            reason: why,
        };
        if self.architecture != ARCHITECTURE {
            return Err(bad(
                "general.architecture",
                format!("'{}' is not '{ARCHITECTURE}'", self.architecture),
            ));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(bad(
                "ceusd.format_version",
                format!(
                    "version {} is not supported (this build reads {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if self.input_channels != 1 && self.input_channels != 3 {
            return Err(bad(
                "ceusd.input.channels",
                format!("{} (expected 1 or 3)", self.input_channels),
            ));
        }
        // The stem halves the size five times; the last stage must keep at least one cell.
        if self.input_size < 32 || self.input_size > 1024 {
            return Err(bad(
                "ceusd.input.size",
                format!("{} (expected 32 to 1024)", self.input_size),
            ));
        }
        for (key, values) in [
            ("ceusd.input.mean", &self.mean),
            ("ceusd.input.std", &self.std),
        ] {
            if values.len() != self.input_channels as usize {
                return Err(bad(
                    key,
                    format!(
                        "{} values for {} input channels",
                        values.len(),
                        self.input_channels
                    ),
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(key, "a value is not finite".to_string()));
            }
        }
        if self.std.iter().any(|v| *v <= 0.0) {
            return Err(bad(
                "ceusd.input.std",
                "a value is not positive".to_string(),
            ));
        }
        if self.classes.len() != 2 {
            return Err(bad(
                "ceusd.classes",
                format!("{} classes (the DLR head has 2)", self.classes.len()),
            ));
        }
        if self.classes[0] == self.classes[1] {
            return Err(bad(
                "ceusd.classes",
                "the two class names are the same".into(),
            ));
        }
        if !self.classes.contains(&self.positive_class) {
            return Err(bad(
                "ceusd.positive_class",
                format!(
                    "'{}' is not one of the classes {:?}",
                    self.positive_class, self.classes
                ),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(bad(
                "ceusd.threshold",
                format!("{} (expected strictly between 0 and 1)", self.threshold),
            ));
        }
        self.validate_head()
    }

    /// The head's width, and that a head marked untrained is not in a model called trained.
    fn validate_head(&self) -> Result<(), ModelError> {
        let bad = |key: &str, reason: &str| ModelError::BadMetadata {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if self.head_hidden == 0 {
            return Err(bad("ceusd.head.hidden", "0"));
        }
        if self.head_untrained && self.provenance.trained {
            return Err(bad(
                "ceusd.head.untrained",
                "true, but ceusd.provenance.trained says the model is trained",
            ));
        }
        Ok(())
    }

    /// The GGUF key/values that store this metadata (without the content hash).
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let s = |v: &str| Value::String(v.to_string());
        let floats = |v: &[f32]| Value::Array(v.iter().map(|x| Value::F32(*x)).collect());
        let p = &self.provenance;
        let mut kv = vec![
            ("general.architecture".into(), s(&self.architecture)),
            ("general.name".into(), s(&self.name)),
            (
                "ceusd.format_version".into(),
                Value::U32(self.format_version),
            ),
            (
                "ceusd.input.channels".into(),
                Value::U32(self.input_channels),
            ),
            ("ceusd.input.size".into(), Value::U32(self.input_size)),
            (
                "ceusd.input.resize_filter".into(),
                s(self.resize_filter.name()),
            ),
            ("ceusd.input.mean".into(), floats(&self.mean)),
            ("ceusd.input.std".into(), floats(&self.std)),
            (
                "ceusd.classes".into(),
                Value::Array(self.classes.iter().map(|c| s(c)).collect()),
            ),
            ("ceusd.positive_class".into(), s(&self.positive_class)),
            ("ceusd.threshold".into(), Value::F32(self.threshold)),
            ("ceusd.head.hidden".into(), Value::U32(self.head_hidden)),
            (
                "ceusd.head.activation".into(),
                s(self.head_activation.name()),
            ),
            ("ceusd.provenance.trained".into(), Value::Bool(p.trained)),
            ("ceusd.provenance.training_data".into(), s(&p.training_data)),
            ("ceusd.provenance.created".into(), s(&p.created)),
            ("ceusd.provenance.software".into(), s(&p.software)),
            ("ceusd.provenance.source".into(), s(&p.source)),
            ("ceusd.provenance.intended_use".into(), s(&p.intended_use)),
        ];
        if self.head_untrained {
            kv.push(("ceusd.head.untrained".into(), Value::Bool(true)));
        }
        if self.weight_format.is_folded() {
            kv.push(("ceusd.weights.format".into(), s(self.weight_format.name())));
        }
        kv
    }

    /// Reads the metadata from a GGUF key/value map; a missing key or a wrong type names the key.
    pub fn from_gguf(kv: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let f = GgufFields(kv);
        let resize_filter = f.parsed("ceusd.input.resize_filter")?;
        let head_activation = f.parsed("ceusd.head.activation")?;
        let weight_format = match kv.get("ceusd.weights.format") {
            None => WeightFormat::Torchvision,
            Some(_) => f.parsed("ceusd.weights.format")?,
        };
        let head_untrained = match kv.get("ceusd.head.untrained") {
            None => false,
            Some(_) => f.boolean("ceusd.head.untrained")?,
        };
        let meta = Self {
            weight_format,
            head_untrained,
            architecture: f.string("general.architecture")?,
            name: f.string("general.name")?,
            format_version: f.uint("ceusd.format_version")?,
            input_channels: f.uint("ceusd.input.channels")?,
            input_size: f.uint("ceusd.input.size")?,
            resize_filter,
            mean: f.floats("ceusd.input.mean")?,
            std: f.floats("ceusd.input.std")?,
            classes: f.strings("ceusd.classes")?,
            positive_class: f.string("ceusd.positive_class")?,
            threshold: f.float("ceusd.threshold")?,
            head_hidden: f.uint("ceusd.head.hidden")?,
            head_activation,
            provenance: Provenance {
                trained: f.boolean("ceusd.provenance.trained")?,
                training_data: f.string("ceusd.provenance.training_data")?,
                created: f.string("ceusd.provenance.created")?,
                software: f.string("ceusd.provenance.software")?,
                source: f.string("ceusd.provenance.source")?,
                intended_use: f.string("ceusd.provenance.intended_use")?,
            },
        };
        meta.validate()?;
        Ok(meta)
    }
}

/// A GGUF key/value map read one typed key at a time: a missing key or a wrong type is a
/// `BadMetadata` error that names the key.
struct GgufFields<'a>(&'a HashMap<String, Value>);

impl GgufFields<'_> {
    fn get(&self, key: &str) -> Result<&Value, ModelError> {
        self.0.get(key).ok_or_else(|| ModelError::BadMetadata {
            key: key.to_string(),
            reason: "missing".to_string(),
        })
    }

    fn wrong(key: &str, want: &str, v: &Value) -> ModelError {
        ModelError::BadMetadata {
            key: key.to_string(),
            reason: format!("expected {want}, found {:?}", v.value_type()),
        }
    }

    fn string(&self, key: &str) -> Result<String, ModelError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(Self::wrong(key, "a string", v)),
        }
    }

    fn uint(&self, key: &str) -> Result<u32, ModelError> {
        match self.get(key)? {
            Value::U32(x) => Ok(*x),
            v => Err(Self::wrong(key, "a u32", v)),
        }
    }

    fn float(&self, key: &str) -> Result<f32, ModelError> {
        match self.get(key)? {
            Value::F32(x) => Ok(*x),
            v => Err(Self::wrong(key, "an f32", v)),
        }
    }

    fn floats(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    v => Err(Self::wrong(key, "an array of f32", v)),
                })
                .collect(),
            v => Err(Self::wrong(key, "an array of f32", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(x) => Ok(x.clone()),
                    v => Err(Self::wrong(key, "an array of strings", v)),
                })
                .collect(),
            v => Err(Self::wrong(key, "an array of strings", v)),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, ModelError> {
        match self.get(key)? {
            Value::Bool(x) => Ok(*x),
            v => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// A string key that names one value of an enumeration (`ResizeFilter`, ...).
    fn parsed<T: std::str::FromStr<Err = String>>(&self, key: &str) -> Result<T, ModelError> {
        let text = self.string(key)?;
        text.parse::<T>().map_err(|reason| ModelError::BadMetadata {
            key: key.to_string(),
            reason: format!("'{text}': {reason}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(trained: bool, head_untrained: bool) -> ModelMetadata {
        let provenance = Provenance {
            trained,
            training_data: "none".into(),
            created: "1970-01-01T00:00:00Z".into(),
            software: "ceusd".into(),
            source: "test".into(),
            intended_use: "tests".into(),
        };
        ModelMetadata {
            head_untrained,
            ..ModelMetadata::paper_defaults("m", provenance)
        }
    }

    fn round_trip(meta: &ModelMetadata) -> (HashMap<String, Value>, ModelMetadata) {
        let kv: HashMap<String, Value> = meta.to_gguf().into_iter().collect();
        let read = ModelMetadata::from_gguf(&kv).expect("valid metadata reads back");
        (kv, read)
    }

    #[test]
    fn the_head_untrained_mark_is_stored_only_when_set_and_reads_back() {
        let (kv, read) = round_trip(&metadata(false, true));
        assert!(matches!(
            kv.get("ceusd.head.untrained"),
            Some(Value::Bool(true))
        ));
        assert_eq!(read.training(), Training::HeadUntrained);
        let (kv, read) = round_trip(&metadata(true, false));
        assert!(!kv.contains_key("ceusd.head.untrained"));
        assert_eq!(read.training(), Training::Trained);
        assert_eq!(
            round_trip(&metadata(false, false)).1.training(),
            Training::Untrained
        );
    }

    #[test]
    fn a_trained_model_with_an_untrained_head_is_refused() {
        let e = metadata(true, true).validate().unwrap_err().to_string();
        assert!(
            e.contains("ceusd.head.untrained") && e.contains("ceusd.provenance.trained"),
            "{e}"
        );
    }
}
