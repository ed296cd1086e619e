//! Fuzz target: the YAML inventory parser, through `Inventory::load` on a
//! `.yml` file.
#![no_main]

use keel::inventory::Inventory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if keel_fuzz::has_side_effects(text)
        || keel_fuzz::names_too_many_hosts(text, keel_fuzz::HOST_BUDGET)
    {
        return;
    }
    let path = keel_fuzz::write_scratch("hosts.yml", text);
    let _ = Inventory::load(&[path.display().to_string()]);
});
