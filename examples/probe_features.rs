use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::model::preprocess::resize_gray;
use ceusd::model::DlrModel;
fn main() {
    let dev = candle_core::Device::Cpu;
    let model = DlrModel::seeded(7, 3, &dev).unwrap();
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    for seed in 0..n {
        for kind in [LesionKind::Pdac, LesionKind::Cp] {
            let cfg = SyntheticConfig::new(kind, 1000 + seed);
            let mut s = SyntheticScanner::new(cfg.clone(), Pacing::AsFastAsPossible).unwrap();
            let idx = ((cfg.injection_s + 35.0) * cfg.fps) as u64;
            let f = s.frame(idx);
            let roi = s.truth().lesion_ceus;
            let gray = f
                .gray_region(&roi, ceusd::capture::frame::LumaRange::Full)
                .unwrap();
            let img = resize_gray(&gray, 224, model.metadata.resize_filter).unwrap();
            let out = model.forward_images(&[img]).unwrap();
            let v: Vec<f32> = out.pooled.flatten_all().unwrap().to_vec1().unwrap();
            let s: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            println!(
                "{},{}",
                if kind == LesionKind::Pdac { 1 } else { 0 },
                s.join(",")
            );
        }
    }
}
