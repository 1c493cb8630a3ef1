//! Speed of the scoring path: the f32 and int8 ResNet-50 forward passes on one 224x224 ROI,
//! preprocessing of a 1920x1080 frame's ROI, and Grad-CAM. After criterion's groups, the
//! forward passes (f32 and int8, batch 1 and 8) are timed once more with the same protocol as
//! `tools/reference_resnet.py bench` (5 warm-up + 30 timed runs, median) and, when Python with
//! ONNX Runtime is available, ONNX Runtime fp32 and static int8 are timed on the same weights
//! in the same run, so each is reported as a ratio.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench scoring`

use candle_core::Device;
use ceusd::capture::Picture;
use ceusd::model::convert::{quantize_model, Target};
use ceusd::model::file::{write_model, StoredType};
use ceusd::model::gradcam::upsample_normalised;
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::preprocess::{batch_tensor, resize_gray};
use ceusd::model::DlrModel;
use ceusd::roi::Roi;
use criterion::{criterion_group, Criterion};
use image::{GrayImage, RgbImage};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

const SEED: u64 = 7;

fn roi_image() -> GrayImage {
    GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([((x * 13 + y * 7) % 251) as u8])
    })
}

/// A 1080p dual-pane frame: B-mode left, CEUS right.
fn frame_1080p() -> Picture {
    Picture::Rgb(RgbImage::from_fn(1920, 1080, |x, y| {
        let v = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7) as u8;
        image::Rgb([v, v.wrapping_add(3), v.wrapping_sub(2)])
    }))
}

/// The seeded model written to a file and quantized to q8 by `model quantize`'s code; both
/// files live as long as this.
struct SeededFiles {
    _dir: tempfile::TempDir,
    f32_path: std::path::PathBuf,
    q8_path: std::path::PathBuf,
}

impl SeededFiles {
    fn write() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (f32_path, q8_path) = (dir.path().join("m.gguf"), dir.path().join("m-q8.gguf"));
        let meta = seeded_metadata(SEED, 3);
        write_model(
            &f32_path,
            &meta,
            seeded_tensors(&meta, SEED).unwrap(),
            StoredType::F32,
        )
        .unwrap();
        quantize_model(&f32_path, Target::Q8, &q8_path, None).unwrap();
        Self {
            _dir: dir,
            f32_path,
            q8_path,
        }
    }
}

fn benches(c: &mut Criterion) {
    let model = DlrModel::seeded(SEED, 3, &Device::Cpu).expect("seeded model");
    let img = roi_image();
    let mut g = c.benchmark_group("scoring");
    g.sample_size(20);
    g.bench_function("forward_f32_224", |b| {
        b.iter(|| black_box(model.forward_images(std::slice::from_ref(&img)).unwrap()))
    });
    let int8 = DlrModel::load(&SeededFiles::write().q8_path, None, &Device::Cpu).expect("int8");
    g.bench_function("forward_int8_224", |b| {
        b.iter(|| black_box(int8.forward_images(std::slice::from_ref(&img)).unwrap()))
    });
    let frame = frame_1080p();
    let roi = Roi {
        x: 1200,
        y: 300,
        width: 420,
        height: 360,
    };
    g.bench_function("preprocess_roi_of_1080p", |b| {
        b.iter(|| {
            let gray = frame.gray_roi(&roi).unwrap();
            let resized = resize_gray(&gray, 224, model.metadata.resize_filter).unwrap();
            black_box(batch_tensor(&[resized], &model.metadata, &Device::Cpu).unwrap())
        })
    });
    let out = model.forward_images(std::slice::from_ref(&img)).unwrap();
    g.bench_function("gradcam_to_roi", |b| {
        b.iter(|| {
            let cam = model.gradcam(&out).unwrap().squeeze(0).unwrap();
            black_box(upsample_normalised(&cam, roi.width, roi.height).unwrap())
        })
    });
    g.finish();
}

criterion_group!(scoring, benches);

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median of 30 timed runs after 5 warm-up runs (the protocol of
/// `tools/reference_resnet.py bench`), in ms.
fn time_forward(model: &DlrModel, images: &[GrayImage]) -> f64 {
    for _ in 0..5 {
        model.forward_images(images).unwrap();
    }
    median_ms(
        (0..30)
            .map(|_| {
                let t = Instant::now();
                model.forward_images(images).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// ONNX Runtime on the same weights: (version, median ms), or why it was not measured.
fn onnxruntime_ms(
    model: &Path,
    threads: &str,
    batch: usize,
    int8: bool,
) -> Result<(String, f64), String> {
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/reference_resnet.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.args([tool, "bench", "--model"]).arg(model).args([
        "--threads",
        threads,
        "--batch",
        &batch.to_string(),
        "--json",
    ]);
    if int8 {
        cmd.arg("--int8-static");
    }
    let o = cmd.output().map_err(|e| format!("python3: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{} (pip install -r tools/requirements.txt)",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("unreadable output ({e}): {text}"))?;
    Ok((
        v["ort_version"].as_str().unwrap_or("?").to_string(),
        v["median_ms"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// ONNX Runtime kept open in a child process (`reference_resnet.py bench --serve`), timed on
/// request, so its rounds can alternate with ours.
struct OrtServer {
    child: std::process::Child,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    version: String,
}

impl OrtServer {
    fn start(model: &Path, threads: &str, int8: bool) -> Result<Self, String> {
        use std::io::BufRead;
        use std::process::Stdio;
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/reference_resnet.py");
        let mut cmd = std::process::Command::new("python3");
        cmd.args([tool, "bench", "--serve", "--model"])
            .arg(model)
            .args(["--threads", threads])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if int8 {
            cmd.arg("--int8-static");
        }
        let mut child = cmd.spawn().map_err(|e| format!("python3: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut answers = std::io::BufReader::new(stdout).lines();
        let ready = Self::answer(&mut answers)?;
        let version = ready["ort_version"].as_str().unwrap_or("?").to_string();
        Ok(Self {
            child,
            answers,
            version,
        })
    }

    fn answer(
        answers: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    ) -> Result<serde_json::Value, String> {
        let line = answers
            .next()
            .ok_or("onnxruntime stopped (pip install -r tools/requirements.txt)")?
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("unreadable answer ({e}): {line}"))
    }

    /// Median ms of `runs` runs.
    fn time(&mut self, runs: usize) -> Result<f64, String> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{runs}").map_err(|e| e.to_string())?;
        let v = Self::answer(&mut self.answers)?;
        v["median_ms"]
            .as_f64()
            .ok_or_else(|| format!("no median in {v}"))
    }
}

impl Drop for OrtServer {
    fn drop(&mut self) {
        // Closing stdin ends the server's loop.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Our forward passes (f32 and int8) and ONNX Runtime's (fp32 and static int8) on the same
/// weights, batch 1, timed in interleaved rounds (each round: 7 runs of each, medians) so that
/// every runtime sees the same machine load; the ratios are per round, and their median and
/// range are reported. Then batch 8 (frames per second), one measurement each.
fn compare_with_onnxruntime() {
    const ROUNDS: usize = 8;
    const RUNS: usize = 7;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "2".into());
    let files = SeededFiles::write();
    let (f32_path, q8_path) = (&files.f32_path, &files.q8_path);
    let f32_model = DlrModel::load(f32_path, None, &Device::Cpu).expect("f32 model");
    let int8_model = DlrModel::load(q8_path, None, &Device::Cpu).expect("int8 model");
    let (kernel, _, resident) = int8_model.network.int8_summary().expect("int8 layers");
    let one = [roi_image()];
    let eight: Vec<GrayImage> = (0..8).map(|_| roi_image()).collect();
    let mut servers: Vec<(&str, Result<OrtServer, String>)> = vec![
        ("fp32", OrtServer::start(f32_path, &threads, false)),
        ("int8 static", OrtServer::start(f32_path, &threads, true)),
    ];
    let ours = |model: &DlrModel| {
        model.forward_images(&one).unwrap();
        median_ms(
            (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    model.forward_images(&one).unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    // Idle threads of one runtime (rayon's, ONNX Runtime's) spin for a moment after work;
    // a pause keeps them from competing with the next runtime's runs.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(200));
    for model in [&f32_model, &int8_model] {
        time_forward(model, &one);
    }
    let (mut f32_ms, mut int8_ms) = (vec![], vec![]);
    let mut theirs: Vec<Vec<f64>> = vec![vec![]; servers.len()];
    for _ in 0..ROUNDS {
        pause();
        f32_ms.push(ours(&f32_model));
        pause();
        int8_ms.push(ours(&int8_model));
        for (i, (_, server)) in servers.iter_mut().enumerate() {
            pause();
            if let Ok(s) = server {
                match s.time(RUNS) {
                    Ok(ms) => theirs[i].push(ms),
                    Err(why) => *server = Err(why),
                }
            }
        }
    }
    println!(
        "batch 1, 224x224, {threads} threads, {ROUNDS} interleaved rounds of {RUNS} runs \
         (medians over rounds; ratios per round, median and range):"
    );
    println!("  ceusd f32 forward: {:.1} ms", median_ms(f32_ms.clone()));
    println!(
        "  ceusd int8 forward ({} kernel, {:.1} MB of packed int8 layers): {:.1} ms",
        kernel.name(),
        resident as f64 / 1e6,
        median_ms(int8_ms.clone())
    );
    for ((what, server), ms) in servers.iter().zip(&theirs) {
        match server {
            Ok(s) => {
                println!(
                    "  onnxruntime {} {what}: {:.1} ms",
                    s.version,
                    median_ms(ms.clone())
                );
                for (ours_name, ours_ms) in [("f32", &f32_ms), ("int8", &int8_ms)] {
                    let ratios: Vec<f64> = ours_ms.iter().zip(ms).map(|(a, b)| a / b).collect();
                    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = ratios.iter().copied().fold(0f64, f64::max);
                    println!(
                        "    ratio ceusd {ours_name} / it: {:.2} (rounds {lo:.2}..{hi:.2})",
                        median_ms(ratios.clone())
                    );
                }
            }
            Err(why) => println!("  onnxruntime {what} not measured: {why}"),
        }
    }
    drop(servers);
    println!("batch 8 (the key-frame window), frames per second:");
    let f32_8 = time_forward(&f32_model, &eight);
    let int8_8 = time_forward(&int8_model, &eight);
    println!(
        "  ceusd f32: {:.1} frames/s ({f32_8:.1} ms per batch)",
        8e3 / f32_8
    );
    println!(
        "  ceusd int8: {:.1} frames/s ({int8_8:.1} ms per batch)",
        8e3 / int8_8
    );
    match onnxruntime_ms(f32_path, &threads, 8, false) {
        Ok((_, ms)) => println!(
            "  onnxruntime fp32: {:.1} frames/s ({ms:.1} ms per batch)",
            8e3 / ms
        ),
        Err(why) => println!("  onnxruntime fp32 not measured: {why}"),
    }
}

/// Median milliseconds of `runs` calls of `f` after two warm-up calls.
fn time_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    median_ms(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Where the int8 forward pass spends its time: per int8 convolution, the whole layer as the
/// forward pass runs it (each task quantizes and packs its rows of the input, im2col included,
/// then multiplies them, with the epilogue) and, for comparison, the quantization and packing
/// alone; each the median of 10 runs on a non-negative input of the layer's shape (batch 1,
/// 224x224 network input). Every layer but the first is given its input's pixel maxima, as in
/// the forward pass (the previous layer's epilogue finds them).
fn profile_int8_layers() {
    let files = SeededFiles::write();
    let model = DlrModel::load(&files.q8_path, None, &Device::Cpu).expect("int8 model");
    println!("int8 layers, batch 1, 224x224 input; median of 10 runs each:");
    println!(
        "  {:<22} {:>14} {:>5} {:>9} {:>8} {:>9} {:>9}",
        "layer", "input", "k/s", "MMAC", "pack ms", "layer ms", "GOP/s"
    );
    let (mut pack_total, mut layer_total, mut macs_total) = (0.0, 0.0, 0usize);
    for site in model.network.convolution_sites(224, 224) {
        let Some(layer) = site.conv.as_int8() else {
            continue;
        };
        let (h, w) = site.input;
        let c = layer.in_channels();
        // Post-ReLU-like values: zeros and a spread of positive values.
        let input: Vec<f32> = (0..h * w * c)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 97) as f32 / 24.0 - 1.0)
            .map(|v| v.max(0.0))
            .collect();
        let dims = (1, h, w, c);
        let maxima: Vec<f32> = input
            .chunks(c)
            .map(|p| p.iter().fold(0f32, |a, &v| a.max(v)))
            .collect();
        // The first block reads the max-pool's output, whose maxima nobody found.
        let first_block = site.name == "layer1.0.conv1" || site.name == "layer1.0.downsample.0";
        let given = (!first_block).then_some(&maxima[..]);
        let pack_ms = time_ms(10, || {
            black_box(layer.pack_input(&input, dims, given).unwrap());
        });
        let layer_ms = time_ms(10, || {
            black_box(layer.run(&input, dims, given, None, true).unwrap());
        });
        let macs = layer.macs(h, w);
        println!(
            "  {:<22} {:>14} {:>5} {:>9.1} {:>8.2} {:>9.2} {:>9.1}",
            site.name,
            format!("{h}x{w}x{c}"),
            format!("{}/{}", layer.kernel_size(), layer.stride()),
            macs as f64 / 1e6,
            pack_ms,
            layer_ms,
            2.0 * macs as f64 / (layer_ms * 1e6)
        );
        pack_total += pack_ms;
        layer_total += layer_ms;
        macs_total += macs;
    }
    println!(
        "  all int8 layers: {:.0} MMAC, {layer_total:.1} ms ({:.1} GOP/s); quantizing and \
         packing alone {pack_total:.1} ms",
        macs_total as f64 / 1e6,
        2.0 * macs_total as f64 / (layer_total * 1e6)
    );
}

/// Whether the benchmark's filter (its first free argument, as criterion reads it) selects
/// the section `name`; no filter selects everything.
/// A key-frame window's close to its result, as the daemon's inference worker computes it
/// (`score_job`: the window's kept frames scored in one batch, Grad-CAM on the key frame, the
/// heatmap PNG), on the demo's exam (1280x720 synthetic PDAC-like exam, the ROI on the lesion)
/// with the demo model and its int8 form. Twice each: on a quiet machine, and with a synthetic
/// scanner rendering 60 frames/s of the same size on another thread, as `ceusd demo` does at
/// its default speed (15 fps x 4). Medians of 5 runs after one warm-up.
fn window_latency() {
    use ceusd::capture::source::{FrameSource, Pacing};
    use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
    use ceusd::daemon::inference::score_job;
    use ceusd::exam::ExamSettings;
    use ceusd::exam_lifecycle::{run_offline, InjectionHint, ScoreRequest};
    use ceusd::layout::{Layout, Presets};
    use ceusd::publish::messages::Topics;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let exam_config = || {
        let mut c = SyntheticConfig::new(LesionKind::Pdac, 11);
        (c.width, c.height, c.fps, c.duration_s, c.injection_s) = (1280, 720, 15.0, 46.0, 5.0);
        c
    };
    let mut scanner = SyntheticScanner::new(exam_config(), Pacing::AsFastAsPossible).unwrap();
    let truth = scanner.truth().clone();
    let layout = Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    };
    let exam = run_offline(
        &mut scanner,
        ExamSettings::default(),
        Some(layout),
        &Presets::default(),
        InjectionHint::default(),
        Some(truth.lesion_ceus),
        |_| {},
    )
    .unwrap();
    let kept = exam.window.kept().len();
    let demo = ceusd::model::demo::demo_model(&Device::Cpu).unwrap();
    let files = SeededFiles::write();
    let q8_path = files.q8_path.with_file_name("demo-q8.gguf");
    let demo_path = files.f32_path.with_file_name("demo.gguf");
    ceusd::model::demo::write_demo_model(&demo_path).unwrap();
    quantize_model(&demo_path, Target::Q8, &q8_path, None).unwrap();
    let demo_q8 = DlrModel::load(&q8_path, None, &Device::Cpu).unwrap();
    let topics = Topics::new("ceus", "bench");
    println!(
        "\nwindow_latency: window close to result ({kept} kept frames of a 1280x720 exam; ms, median of 5)"
    );
    let mut breakdown = Vec::new();
    println!("| model | quiet machine | beside a 60 frames/s synthetic scanner | ratio |");
    println!("| --- | --- | --- | --- |");
    for (name, model) in [("demo f32", &demo), ("demo int8", &demo_q8)] {
        let time = || {
            let requested = Instant::now();
            let job = ScoreRequest {
                exam_id: "bench".into(),
                result_id: "bench-r1".into(),
                revision: 1,
                exam: Some(Box::new(exam.clone())),
                roi: Some(truth.lesion_ceus),
                rescore: false,
                order: Default::default(),
            };
            let (message, heatmap) = score_job(model, &topics, &job);
            assert!(
                message.result.score.is_some() && heatmap.is_some(),
                "{:?}",
                message.result.reason
            );
            requested.elapsed().as_secs_f64() * 1000.0
        };
        time();
        let quiet = median_ms((0..5).map(|_| time()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let source = {
            let stop = stop.clone();
            let mut c = exam_config();
            c.duration_s = 3600.0;
            std::thread::spawn(move || {
                let mut s = SyntheticScanner::new(c, Pacing::real_time(4.0).unwrap()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    black_box(s.next_event().unwrap());
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        let loaded = median_ms((0..5).map(|_| time()).collect());
        stop.store(true, Ordering::Relaxed);
        source.join().unwrap();
        println!(
            "| {name} | {quiet:.0} | {loaded:.0} | {:.2} |",
            loaded / quiet
        );
        // Where the quiet time goes: the window's frames in one batch, then Grad-CAM on the
        // key frame (its own forward and backward pass); the rest is the PNG and the message.
        let roi = truth.lesion_ceus;
        let timed = |f: &dyn Fn()| {
            median_ms(
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect(),
            )
        };
        let scores = timed(&|| {
            black_box(exam.result(model, &roi).unwrap());
        });
        let heatmap = timed(&|| {
            black_box(exam.key_frame_heatmap(model, &roi).unwrap());
        });
        breakdown.push(format!(
            "{name}: {kept} frames scored {scores:.0} ms, key-frame Grad-CAM {heatmap:.0} ms, the rest (by difference) {:.0} ms",
            quiet - scores - heatmap
        ));
    }
    for line in breakdown {
        println!("{line}");
    }
}

fn selected(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_none_or(|filter| name.contains(&filter))
}

fn main() {
    scoring();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; the profile and the
    // comparison are only worth their minutes under `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        if selected("int8_layers") {
            profile_int8_layers();
        }
        if selected("compare_with_onnxruntime") {
            compare_with_onnxruntime();
        }
        if selected("window_latency") {
            window_latency();
        }
    }
}
