//! Fuzz target: the YAML loader (saphyr events to `Node`s, anchors and alias
//! expansion, duplicate-key warnings) and the YAML 1.1 plain-scalar resolver.
//! Any input must give documents or a `YamlError`, never a panic.
#![no_main]

use keel::yaml::{load_str_with_warnings, resolve_plain, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = load_str_with_warnings("fuzz.yml", text, &LoadOptions::default());
    // The resolver sees single plain scalars: feed it each line as one.
    for line in text.lines().take(64) {
        let _ = resolve_plain(line);
    }
    let _ = resolve_plain(text);
});
