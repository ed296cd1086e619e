//! Fuzz target: the address-pool import (`admin import-pool`),
//! `alloc::parse_pool_file` on YAML and on CSV (header in any column
//! order, empty cells), with its validation of types, addresses and
//! hostnames. The first byte picks the format.
#![no_main]

use keel_panel::alloc::parse_pool_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = match which % 3 {
        0 => parse_pool_file("pool.yaml", text, None),
        1 => parse_pool_file("pool.csv", text, Some(("fuzz", "public"))),
        _ => parse_pool_file("pool.csv", text, Some(("fuzz", "v6only"))),
    };
    if let Ok(p) = parsed {
        // What validation let through is what the import writes.
        for a in &p.addresses {
            assert!(!a.hostname.is_empty());
            if let Some(v4) = &a.ipv4 {
                v4.parse::<std::net::Ipv4Addr>().expect("validated IPv4");
            }
            if let Some(v6) = &a.ipv6 {
                v6.parse::<std::net::Ipv6Addr>().expect("validated IPv6");
            }
        }
    }
});
