//! Fuzz target: host patterns (`web:&prod:!db[0:2]`, `~regex`, ranges) against
//! a fixed inventory, plus the address and `[a:b]` range parsers the
//! inventories use for host names.
#![no_main]

use std::sync::OnceLock;

use keel::inventory::{expand_host_pattern, parse_address, Inventory};
use libfuzzer_sys::fuzz_target;

fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| {
        let data = serde_json::json!({
            "web": {"hosts": ["web1", "web2", "web3"], "vars": {"tier": "front"}},
            "db": {"hosts": ["db1", "db2"]},
            "prod": {"children": ["web", "db"]},
            "staging": {"hosts": ["web3", "10.0.0.5", "[::1]"]},
            "_meta": {"hostvars": {"web1": {"x": 1}}}
        });
        Inventory::from_json(data).expect("fixed inventory")
    })
}

fuzz_target!(|text: &str| {
    let _ = inventory().select_detailed(text);
    let _ = parse_address(text, true);
    let _ = parse_address(text, false);
    let _ = expand_host_pattern(text);
});
