//! Fuzz target: the panel's configuration loader, `Config::load`: a TOML
//! file (parsed, deserialised into every section, validated) and, for
//! inputs starting with `env:`, `KEY=VALUE` lines taken as `KEEL_*`
//! environment variables over an empty file (the override path that types
//! and nests each variable).
#![no_main]

use keel_panel::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let config = if let Some(env) = text.strip_prefix("env:") {
        let vars = env.lines().filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        });
        Config::load(None, vars)
    } else {
        let path = keel_fuzz::write_scratch("panel.toml", text);
        Config::load(Some(&path), std::iter::empty())
    };
    // A loaded configuration answers what the panel asks of it at startup.
    if let Ok(c) = config {
        let _ = c.database_url();
        let _ = c.hypervisor.state_dir(&c.data_dir);
        c.hypervisor
            .callback_listen()
            .expect("validate() already checked callback_listen");
        let _ = format!("{c:?}");
    }
});
