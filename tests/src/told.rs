//! A `ProgressPort` that records what a checkpointed transfer said about
//! resuming (shared by the resume suite and the acceptance steps).

use std::sync::Mutex;

use ferry_domain::ports::ProgressPort;

#[derive(Debug, Default)]
pub struct Told {
    pub resumed: Mutex<Vec<u64>>,
    pub restarted: Mutex<Vec<String>>,
}

impl Told {
    pub fn resumed(&self) -> Vec<u64> {
        self.resumed.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn restarted(&self) -> Vec<String> {
        self.restarted.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl ProgressPort for Told {
    fn started(&self, _total: Option<u64>) {}
    fn advanced(&self, _done: u64) {}
    fn finished(&self, _ok: bool) {}
    fn resumed(&self, offset: u64) {
        if let Ok(mut v) = self.resumed.lock() {
            v.push(offset);
        }
    }
    fn restarted(&self, reason: &str) {
        if let Ok(mut v) = self.restarted.lock() {
            v.push(reason.to_owned());
        }
    }
}
