//! Newline-delimited JSON events, for machines (the panel streams them).
use parking_lot::Mutex;
use std::io::Write;

use super::{Event, Sink};

pub struct JsonSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonSink {
    pub fn new(out: Box<dyn Write + Send>) -> JsonSink {
        JsonSink {
            out: Mutex::new(out),
        }
    }
}

impl Sink for JsonSink {
    fn emit(&self, event: &Event) {
        let mut out = self.out.lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}
