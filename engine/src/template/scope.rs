//! Layered variables: what the executor hands the [`Templar`](super::Templar)
//! for one host at one task.
//!
//! A [`Scope`] is a stack of variable maps, lowest precedence first, holding
//! values as written: templating them on access is the render context's job
//! (`render.rs`). Plain data, below everything else in `template/`.
use std::collections::HashSet;
use std::sync::Arc;

use minijinja::Value;

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
