//! Exam timing: the contrast clock (seconds since injection, from the best source at hand),
//! automatic detection of contrast arrival, the phases of the exam, and the key-frame window.

pub mod arrival;
pub mod clock;
pub mod phase;
pub mod window;

pub use arrival::{Arrival, ArrivalDetector, ArrivalSettings};
pub use clock::{ClockSource, ClockSwitch, ContrastClock, Injection};
pub use phase::{Phase, PhaseBoundaries, PhaseMachine, TimingStatus};
pub use window::{Candidate, KeyFrameWindow};
