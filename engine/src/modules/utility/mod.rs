//! utility modules.
use std::collections::HashMap;

use super::ModuleRef;

pub(super) fn register(_m: &mut HashMap<&'static str, ModuleRef>) {}
