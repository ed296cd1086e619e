//! Fuzz target: the playbook resolver, a whole playbook as input (YAML load,
//! keyword validation, blocks, handlers, static imports, role lookups), written
//! to a scratch directory. Nothing is run and nothing connects anywhere.
#![no_main]

use keel::playbook::{load_playbook, ResolveOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if keel_fuzz::has_side_effects(text) {
        return;
    }
    let path = keel_fuzz::write_scratch("site.yml", text);
    let _ = load_playbook(&path, &ResolveOptions::default());
});
