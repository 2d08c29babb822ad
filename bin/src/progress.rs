//! A terminal progress bar (indicatif) behind the domain's `ProgressPort`.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
