//! Progress behind the domain's `ProgressPort`: a terminal bar (indicatif),
//! or short lines for logs that are not a terminal (CI, Kubernetes).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use ferry_domain::ByteSize;
use ferry_domain::ports::ProgressPort;

/// Bytes, rate and ETA when the size is known; a spinner with bytes otherwise.
#[derive(Debug)]
pub struct TerminalProgress {
    bar: ProgressBar,
    label: String,
}

impl TerminalProgress {
    /// One bar among those of `group` (one per concurrent transfer).
    pub fn in_group(label: String, group: &MultiProgress) -> Self {
        group.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let bar = group.add(ProgressBar::new_spinner());
        Self { bar, label }
    }
}

impl ProgressPort for TerminalProgress {
    fn started(&self, total: Option<u64>) {
        let style = match total {
            Some(len) => {
                self.bar.set_length(len);
                ProgressStyle::with_template(
                    "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
            }
            None => ProgressStyle::with_template(
                "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
            ),
        };
        if let Ok(style) = style {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(self.label.clone());
        self.bar.set_position(0);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advanced(&self, done: u64) {
        self.bar.set_position(done);
    }

    fn finished(&self, _ok: bool) {
        self.bar.finish_and_clear();
    }
}

/// One line on stderr at most every `every` per file: bytes, percent, rate
/// and ETA (when the size is known). Nothing for a copy shorter than
/// `every`.
#[derive(Debug)]
pub struct LineProgress {
    label: String,
    every: Duration,
    state: Mutex<LineState>,
}

#[derive(Debug)]
struct LineState {
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl LineProgress {
    pub fn new(label: String, every: Duration) -> Self {
        let now = Instant::now();
        Self {
            label,
            every,
            state: Mutex::new(LineState {
                started: now,
                last: now,
                total: None,
            }),
        }
    }

    fn line(&self, done: u64, st: &LineState) -> String {
        let secs = st.started.elapsed().as_secs_f64();
        // Display only: precision loss is irrelevant for a rate.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rate = if secs > 0.0 {
            (done as f64 / secs) as u64
        } else {
            0
        };
        let mut line = format!("ferry: {}: {}", self.label, ByteSize::new(done));
        if let Some(total) = st.total.filter(|t| *t > 0) {
            let percent = done.saturating_mul(100) / total;
            line.push_str(&format!(" of {} ({percent}%)", ByteSize::new(total)));
        }
        line.push_str(&format!(" at {}/s", ByteSize::new(rate)));
        if let Some(total) = st.total
            && rate > 0
        {
            let left = total.saturating_sub(done) / rate;
            line.push_str(&format!(", ETA {left} s"));
        }
        line
    }
}

impl ProgressPort for LineProgress {
    fn started(&self, total: Option<u64>) {
        if let Ok(mut st) = self.state.lock() {
            st.total = total;
        }
    }

    fn advanced(&self, done: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.last.elapsed() < self.every {
            return;
        }
        st.last = Instant::now();
        eprintln!("{}", self.line(done, &st));
    }

    fn finished(&self, _ok: bool) {}
}
