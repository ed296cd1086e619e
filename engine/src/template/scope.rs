//! Layered variables and the lazy lookup object a render sees as its context.
//!
//! A [`Scope`] is a stack of variable maps, lowest precedence first. When a
//! template runs, minijinja looks names up through a [`RenderCtx`]: it finds
//! the highest-precedence value and, if that value still holds Jinja syntax,
//! templates it there and then (recursively, with loop detection), as Ansible
//! does. `!unsafe` strings are carried as minijinja "safe" strings — autoescape
//! is off, so the flag has no other meaning to us — and are never templated.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use minijinja::value::ValueKind;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, Value};

use super::{Inner, TemplateError, TemplateOrigin};
use crate::vars::VarMap;

/// The variables visible to one host at one point: layers from lowest to highest
/// precedence, each shared (`Arc`) so building a scope per task is cheap.
#[derive(Clone, Default)]
pub struct Scope {
    layers: Vec<Arc<VarMap>>,
}

impl Scope {
    pub fn new() -> Scope {
        Scope::default()
    }
    /// Adds a layer above all existing ones.
    pub fn push(&mut self, layer: Arc<VarMap>) {
        self.layers.push(layer);
    }
    /// A copy of this scope with one more layer on top (loop vars, `vars:`).
    pub fn with_layer(&self, layer: Arc<VarMap>) -> Scope {
        let mut s = self.clone();
        s.push(layer);
        s
    }
    /// A copy of this scope with a single variable set on top.
    pub fn with_var(&self, name: &str, value: Value) -> Scope {
        let mut m = VarMap::new();
        m.insert(name.to_string(), value);
        self.with_layer(Arc::new(m))
    }
    /// The raw (untemplated) value of `name` from the highest layer that has it.
    pub fn get_raw(&self, name: &str) -> Option<&Value> {
        self.layers.iter().rev().find_map(|l| l.get(name))
    }
    pub fn layers(&self) -> &[Arc<VarMap>] {
        &self.layers
    }
    /// Every variable name, each once, in first-seen order from the lowest layer.
    pub fn names(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for layer in &self.layers {
            for k in layer.keys() {
                if seen.insert(k.as_str()) {
                    out.push(k.clone());
                }
            }
        }
        out
    }
}

/// True when a value holds (possibly deep inside) a string that needs rendering.
pub(super) fn needs_render(v: &Value) -> bool {
    match v.kind() {
        ValueKind::String => !v.is_safe() && v.as_str().is_some_and(super::is_template),
        ValueKind::Seq | ValueKind::Map => {
            // Opaque objects (our own context, hostvars...) resolve themselves.
            if v.downcast_object_ref::<RenderCtx>().is_some() {
                return false;
            }
            match v.kind() {
                ValueKind::Map => v
                    .try_iter()
                    .map(|it| {
                        it.into_iter()
                            .any(|k| v.get_item(&k).ok().is_some_and(|x| needs_render(&x)))
                    })
                    .unwrap_or(false),
                _ => v
                    .try_iter()
                    .map(|mut it| it.any(|x| needs_render(&x)))
                    .unwrap_or(false),
            }
        }
        _ => false,
    }
}

/// The context object of one render: the scope, the origin and the state of
/// lazy resolution (which variables are being resolved, what they resolved to).
pub(crate) struct RenderCtx {
    pub(super) inner: Arc<Inner>,
    pub(super) scope: Scope,
    pub(super) origin: TemplateOrigin,
    resolving: Mutex<Vec<String>>,
    resolved: Mutex<HashMap<String, Value>>,
    /// Why a variable came out undefined although it exists: the error from
    /// templating its value. Reported if the undefined value is then used.
    pub(super) hints: Mutex<HashMap<String, TemplateError>>,
}

impl std::fmt::Debug for RenderCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<vars>")
    }
}

/// The name under which a template can reach its own context (for lookups).
pub(super) const CTX_KEY: &str = "__keel_ctx";

impl RenderCtx {
    pub(super) fn new(inner: Arc<Inner>, scope: &Scope, origin: &TemplateOrigin) -> Arc<RenderCtx> {
        Arc::new(RenderCtx {
            inner,
            scope: scope.clone(),
            origin: origin.clone(),
            resolving: Mutex::new(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
        })
    }

    /// Looks up `name` and templates its value if needed. `Ok(None)`: no such
    /// variable.
    pub(super) fn resolve(self: &Arc<Self>, name: &str) -> Result<Option<Value>, TemplateError> {
        let Some(raw) = self.scope.get_raw(name) else {
            return Ok(None);
        };
        // Fast path: scalars and plain strings need no work.
        match raw.kind() {
            ValueKind::String if raw.is_safe() || !raw.as_str().is_some_and(super::is_template) => {
                return Ok(Some(raw.clone()))
            }
            ValueKind::Seq | ValueKind::Map | ValueKind::String => {}
            _ => return Ok(Some(raw.clone())),
        }
        if let Some(v) = self.resolved.lock().unwrap().get(name) {
            return Ok(Some(v.clone()));
        }
        if !needs_render(raw) {
            self.resolved
                .lock()
                .unwrap()
                .insert(name.to_string(), raw.clone());
            return Ok(Some(raw.clone()));
        }
        {
            let mut stack = self.resolving.lock().unwrap();
            if stack.iter().any(|n| n == name) {
                let chain = stack.join(" -> ");
                return Err(super::error_msg(
                    &self.origin,
                    format!("recursive loop detected in template for variable {name} ({chain} -> {name})"),
                    None,
                ));
            }
            stack.push(name.to_string());
        }
        let out = super::render_value_in(self, raw);
        self.resolving.lock().unwrap().pop();
        let v = out?;
        self.resolved
            .lock()
            .unwrap()
            .insert(name.to_string(), v.clone());
        Ok(Some(v))
    }
}

impl Object for RenderCtx {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        match self.resolve(name) {
            Ok(Some(v)) => Some(v),
            Ok(None) => match name {
                CTX_KEY => Some(Value::from_dyn_object(self.clone())),
                // `vars` is the whole scope, resolved lazily like everything else.
                "vars" => Some(Value::from_dyn_object(self.clone())),
                _ => None,
            },
            Err(e) => {
                if e.undefined.is_some() && !e.diag.message.contains("recursive loop") {
                    // Like Ansible: an undefined inside a variable's value makes
                    // the variable undefined (so `is defined` and `default`
                    // work), and the reason is reported if it is then used.
                    self.hints.lock().unwrap().insert(name.to_string(), e);
                    None
                } else {
                    let kind = ErrorKind::InvalidOperation;
                    Some(Value::from(
                        Error::new(kind, e.diag.message.clone()).with_source(e),
                    ))
                }
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.scope.names().into_iter().map(Value::from).collect())
    }
}
