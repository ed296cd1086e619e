//! Fuzz target: template rendering with Ansible's filters and tests, the
//! input being the template and the variables a small fixed set. Both the
//! native-typed path (task arguments) and the text path (template files).
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use keel::template::{value_from_json, Scope, Templar, TemplateOrigin};
use libfuzzer_sys::fuzz_target;

struct Fixed {
    templar: Arc<Templar>,
    scope: Scope,
}

/// Inputs rendered with one templar before a new one is made. A templar
/// keeps every distinct source it compiled for its life, which in Keel is
/// one play run; a templar kept for millions of distinct fuzz inputs grows
/// past libFuzzer's memory limit without any single input being at fault.
const RUNS_PER_TEMPLAR: u32 = 10_000;

thread_local! {
    static FIXED: RefCell<Option<(Arc<Fixed>, u32)>> = const { RefCell::new(None) };
}

fn fixed() -> Arc<Fixed> {
    FIXED.with(|cell| {
        let mut cell = cell.borrow_mut();
        match cell.as_mut() {
            Some((f, n)) if *n < RUNS_PER_TEMPLAR => {
                *n += 1;
                f.clone()
            }
            _ => {
                let f = Arc::new(make_fixed());
                *cell = Some((f.clone(), 1));
                f
            }
        }
    })
}

fn make_fixed() -> Fixed {
    let vars = serde_json::json!({
        "name": "web1",
        "port": 8080,
        "ratio": 0.5,
        "enabled": true,
        "nothing": null,
        "items": [1, 2, 3, "four", {"k": "v"}],
        "users": [{"name": "alice", "uid": 1000}, {"name": "bob", "uid": 1001}],
        "conf": {"a": {"b": {"c": "deep"}}, "list": ["x", "y"]},
        "text": "Hello, World\nsecond line",
    });
    let mut layer = keel::vars::VarMap::new();
    for (k, v) in vars.as_object().unwrap() {
        layer.insert(k.clone(), value_from_json(v));
    }
    let mut scope = Scope::new();
    scope.push(Arc::new(layer));
    Fixed {
        templar: Templar::new(),
        scope,
    }
}

fuzz_target!(|text: &str| {
    // `include`/`import`/`extends` read files named by the input; lookups may
    // run commands. Neither is the renderer's parsing.
    if keel_fuzz::has_side_effects(text)
        || ["include", "import", "extends"]
            .iter()
            .any(|w| text.contains(w))
    {
        return;
    }
    let f = fixed();
    let origin = TemplateOrigin::default();
    let _ = f.templar.render_str(text, &f.scope, &origin);
    let _ = f.templar.render_text(text, &f.scope, &origin);
});
