//! What the demo shows of the exams it follows. On a terminal: a fixed screen of six lines at
//! the bottom (the NOT FOR CLINICAL USE statement, where to watch, the exam, the clock on a bar
//! of the phases with the key-frame band, what the sonographer should do now, and the last
//! result) with log lines scrolling above it, never through it. Without a terminal: one log
//! line per event.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::timing::{ClockSource, Phase};

/// The live view's lines while it owns the terminal; log lines are printed above them.
static SCREEN: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A log writer for `env_logger`: whole lines to standard error, or above the live view's
/// fixed lines while the view is on screen.
#[derive(Default)]
pub struct LogRoute {
    pending: Vec<u8>,
}

impl Write for LogRoute {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let screen = SCREEN.lock().unwrap_or_else(|e| e.into_inner());
            match screen.as_ref() {
                Some(multi) => {
                    let _ = multi.println(String::from_utf8_lossy(&line).trim_end());
                }
                None => std::io::stderr().write_all(&line)?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Where the phases end and where the key-frame window lies, seconds after injection.
#[derive(Debug, Clone, Copy)]
pub struct Bands {
    pub vascular_end_s: f64,
    pub pancreatic_end_s: f64,
    pub delayed_end_s: f64,
    pub window_start_s: f64,
    pub window_end_s: f64,
}

/// One timing message, as the view needs it.
#[derive(Debug, Clone)]
pub struct Clock {
    pub phase: Phase,
    pub elapsed_s: Option<f64>,
    pub source: Option<ClockSource>,
    pub estimated: bool,
    /// Seconds until the window opens (negative once open).
    pub countdown_s: Option<f64>,
    pub window_open: bool,
    pub frames_kept: u64,
    pub bands: Bands,
}

/// What to tell the sonographer now.
pub fn instruction(clock: &Clock, scored: bool) -> String {
    let b = clock.bands;
    match (clock.elapsed_s, clock.countdown_s) {
        (None, _) => "waiting for the contrast injection".into(),
        _ if scored => "result shown below; the exam goes on".into(),
        (Some(_), Some(c)) if c > 0.0 => format!(
            "hold the probe still in {c:4.1} s (key-frame window {:.0}–{:.0} s)",
            b.window_start_s, b.window_end_s
        ),
        (Some(e), _) if clock.window_open => format!(
            "KEY-FRAME WINDOW: hold still for {:4.1} s ({} frames kept)",
            (b.window_end_s - e).max(0.0),
            clock.frames_kept
        ),
        (Some(e), _) if e >= b.window_end_s => "scoring the key-frame window…".into(),
        (Some(_), _) => String::new(),
    }
}

/// The clock in words: "36.2 s since injection (recorded by the scanner), pancreatic phase".
pub fn clock_words(clock: &Clock) -> String {
    match (clock.elapsed_s, clock.source) {
        (Some(e), Some(source)) => format!(
            "{e:5.1} s since injection ({source}{}), {}",
            if clock.estimated && source != ClockSource::Automatic {
                ", estimated"
            } else {
                ""
            },
            clock.phase
        ),
        _ => format!("{}", clock.phase),
    }
}

/// The phases from injection to the end of the delayed phase as a bar of `cells` characters:
/// elapsed time filled, the key-frame window shaded, a mark where each phase ends.
pub fn phase_bar(elapsed_s: Option<f64>, bands: &Bands, cells: usize) -> String {
    let per_cell = bands.delayed_end_s / cells as f64;
    let mut bar = String::with_capacity(cells * 3 + 2);
    bar.push('[');
    for i in 0..cells {
        let (from, to) = (i as f64 * per_cell, (i + 1) as f64 * per_cell);
        let ends_phase = [bands.vascular_end_s, bands.pancreatic_end_s]
            .iter()
            .any(|end| (from..to).contains(end) && i > 0);
        let c = if elapsed_s.is_some_and(|e| e >= to) {
            '█'
        } else if to > bands.window_start_s && from < bands.window_end_s {
            '▒'
        } else if ends_phase {
            '|'
        } else {
            '·'
        };
        bar.push(c);
    }
    bar.push(']');
    bar
}

/// The view: a fixed screen on a terminal, or log lines.
pub enum View {
    Screen(Screen),
    Log,
}

pub struct Screen {
    multi: MultiProgress,
    header: ProgressBar,
    watch: ProgressBar,
    exam: ProgressBar,
    clock: ProgressBar,
    todo: ProgressBar,
    result: ProgressBar,
    scoring: bool,
}

impl View {
    /// The fixed screen when `terminal` is true (log lines then scroll above it).
    pub fn new(terminal: bool) -> Self {
        if !terminal {
            return View::Log;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let line = |multi: &MultiProgress| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        };
        let screen = Screen {
            header: line(&multi),
            watch: line(&multi),
            exam: line(&multi),
            clock: line(&multi),
            todo: line(&multi),
            result: line(&multi),
            multi,
            scoring: false,
        };
        screen.result.set_message("last result: none yet");
        *SCREEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(screen.multi.clone());
        View::Screen(screen)
    }

    /// The statement and the device; where to watch (the page, the topics).
    pub fn header(&self, header: &str, watch: &str) {
        match self {
            View::Screen(s) => {
                s.header.set_message(header.to_string());
                s.watch.set_message(watch.to_string());
            }
            View::Log => {
                log::info!("{header}");
                log::info!("{watch}");
            }
        }
    }

    /// A new exam: its id, the lesion and the ROI the operator drew.
    pub fn exam(&mut self, line: &str) {
        match self {
            View::Screen(s) => {
                s.exam.set_message(line.to_string());
                s.clock.set_message(String::new());
                s.todo.set_message(String::new());
                s.set_scoring(false);
            }
            View::Log => log::info!("{line}"),
        }
    }

    /// A timing message; `scored`: this exam's result is in.
    pub fn clock(&mut self, clock: &Clock, scored: bool) {
        let todo = instruction(clock, scored);
        match self {
            View::Screen(s) => {
                s.clock.set_message(format!(
                    "{} {}",
                    phase_bar(clock.elapsed_s, &clock.bands, 48),
                    clock_words(clock)
                ));
                let scoring = !scored
                    && clock
                        .elapsed_s
                        .is_some_and(|e| e >= clock.bands.window_end_s);
                s.set_scoring(scoring);
                s.todo.set_message(todo);
            }
            View::Log => {}
        }
    }

    /// A phase change or another event worth a line of its own (log lines only; the screen
    /// shows the clock continuously).
    pub fn event(&self, line: &str) {
        if let View::Log = self {
            log::info!("{line}");
        }
    }

    /// The exam's result: stays on screen until the next result replaces it.
    pub fn result(&mut self, line: &str) {
        match self {
            View::Screen(s) => {
                s.set_scoring(false);
                s.result.set_message(format!("last result: {line}"));
                s.todo
                    .set_message("result shown below; the exam goes on".to_string());
            }
            View::Log => log::info!("RESULT {line}"),
        }
    }

    /// A line above the screen (or in the log).
    pub fn note(&self, line: &str) {
        match self {
            View::Screen(s) => {
                let _ = s.multi.println(line);
            }
            View::Log => log::info!("{line}"),
        }
    }

    /// Leaves the screen's last state on the terminal and hands standard error back to the
    /// log.
    pub fn close(&mut self) {
        if let View::Screen(s) = self {
            s.set_scoring(false);
            for bar in [&s.header, &s.watch, &s.exam, &s.clock, &s.todo, &s.result] {
                bar.finish();
            }
            *SCREEN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Screen {
    fn set_scoring(&mut self, on: bool) {
        if on == self.scoring {
            return;
        }
        self.scoring = on;
        if on {
            self.todo.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            self.todo.enable_steady_tick(Duration::from_millis(120));
        } else {
            self.todo.disable_steady_tick();
            self.todo.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANDS: Bands = Bands {
        vascular_end_s: 30.0,
        pancreatic_end_s: 60.0,
        delayed_end_s: 120.0,
        window_start_s: 30.0,
        window_end_s: 40.0,
    };

    fn clock(elapsed_s: Option<f64>, countdown_s: Option<f64>, open: bool) -> Clock {
        Clock {
            phase: Phase::Pancreatic,
            elapsed_s,
            source: Some(ClockSource::Recorded),
            estimated: false,
            countdown_s,
            window_open: open,
            frames_kept: 3,
            bands: BANDS,
        }
    }

    #[test]
    fn the_bar_fills_with_time_and_shades_the_window() {
        let bar = phase_bar(Some(36.0), &BANDS, 12);
        // 10 s per cell: three cells elapsed, the window (30–40 s) in the fourth.
        assert_eq!(bar, "[███▒··|·····]");
        assert_eq!(phase_bar(None, &BANDS, 12), "[···▒··|·····]");
    }

    #[test]
    fn the_instruction_follows_the_window() {
        assert_eq!(
            instruction(&clock(None, None, false), false),
            "waiting for the contrast injection"
        );
        assert!(instruction(&clock(Some(25.0), Some(5.0), false), false)
            .starts_with("hold the probe still in  5.0 s"));
        assert!(instruction(&clock(Some(33.0), Some(-3.0), true), false)
            .starts_with("KEY-FRAME WINDOW: hold still for  7.0 s"));
        assert_eq!(
            instruction(&clock(Some(41.0), Some(-11.0), false), false),
            "scoring the key-frame window…"
        );
        assert_eq!(
            instruction(&clock(Some(41.0), Some(-11.0), false), true),
            "result shown below; the exam goes on"
        );
    }

    #[test]
    fn the_clock_is_said_in_words() {
        assert_eq!(
            clock_words(&clock(Some(36.31), None, true)),
            " 36.3 s since injection (recorded by the scanner), pancreatic phase"
        );
    }
}
