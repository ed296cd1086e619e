//! Layered variables and lazy lookup. (To be implemented.)
use std::sync::Arc;

use minijinja::Value;

use super::VarMap;

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
    /// The raw (untemplated) value of `name` from the highest layer that has it.
    pub fn get_raw(&self, name: &str) -> Option<&Value> {
        self.layers.iter().rev().find_map(|l| l.get(name))
    }
    pub fn layers(&self) -> &[Arc<VarMap>] {
        &self.layers
    }
}

pub(super) fn unsafe_string(s: &str) -> Value {
    Value::from(s)
}
