//! Variables that belong to something else than the current render (a host
//! seen through `hostvars`), templated only when a template reads them. The
//! executor supplies the source ([`LazySource`]); the rendering core never
//! walks a [`LazyMap`] to template it eagerly, so reading `hostvars[h].x`
//! templates `x` alone, in `h`'s own variables, as ansible-core does.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::Value;

/// Where a [`LazyMap`]'s values come from.
pub trait LazySource: Send + Sync + std::fmt::Debug {
    /// The value of `key`, templated; `None` when there is no such key.
    fn get(&self, key: &str) -> Option<Value>;
    /// The keys, in order.
    fn keys(&self) -> Vec<Value>;
}

/// A mapping whose values are produced (and templated) on access.
#[derive(Debug)]
pub struct LazyMap(pub Arc<dyn LazySource>);

impl LazyMap {
    /// The mapping as a template value.
    pub fn value(source: Arc<dyn LazySource>) -> Value {
        Value::from_object(LazyMap(source))
    }
}

impl Object for LazyMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys())
    }
}
