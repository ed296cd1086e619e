//! Fuzz target: template rendering with Ansible's filters and tests, the
//! input being the template and the variables a small fixed set. Both the
//! native-typed path (task arguments) and the text path (template files).
#![no_main]

use std::sync::{Arc, OnceLock};

use keel::template::{value_from_json, Scope, Templar, TemplateOrigin};
use libfuzzer_sys::fuzz_target;

struct Fixed {
    templar: Arc<Templar>,
    scope: Scope,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
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
    })
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
