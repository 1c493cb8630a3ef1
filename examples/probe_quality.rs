use ceusd::capture::frame::LumaRange;
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{parse_spec, SyntheticScanner};
use ceusd::quality::QualityTracker;
fn main() {
    let spec = std::env::args().nth(1).unwrap();
    let cfg = parse_spec(&spec).unwrap();
    let fps = cfg.fps;
    let mut s = SyntheticScanner::new(cfg.clone(), Pacing::AsFastAsPossible).unwrap();
    let (cp, bp) = (s.truth().ceus_pane, s.truth().bmode_pane);
    println!("arrival {}", s.truth().arrival_s);
    let mut q = QualityTracker::default();
    for i in 0..s.frame_count() {
        let f = s.frame(i);
        let c = f.gray_region(&cp, LumaRange::Full).unwrap();
        let b = f.gray_region(&bp, LumaRange::Full).unwrap();
        let t = i as f64 / fps;
        let r = q.assess(t, &c, &b);
        if i % 5 == 0 {
            println!(
                "t={t:.1} mean={:.2} speed={:?} clean={}",
                r.mean,
                r.motion_speed,
                r.clean()
            );
        }
    }
}
