//! ceusd: contrast-enhanced ultrasound (CEUS) key-frame scoring for pancreatic lesions.
//!
//! A frame's region of interest is preprocessed as the model file says, scored by a ResNet-50
//! deep-learning-radiomics model (PDAC vs chronic pancreatitis, after Tong et al., BMC Medicine
//! 2022) and explained with a Grad-CAM heatmap.

// Every unsafe operation sits in its own block with the reason it is sound, even inside an
// unsafe fn (the int8 kernels).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod analyze;
pub mod atomic_file;
pub mod capture;
pub mod check;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod draw;
pub mod eval;
pub mod exam;
pub mod exam_lifecycle;
pub mod health;
pub mod layout;
pub mod median;
pub mod model;
pub mod pacs;
pub mod pixels;
pub mod publish;
pub mod quality;
pub mod rng;
pub mod roi;
pub mod timing;
pub mod train;
pub mod web_display;
