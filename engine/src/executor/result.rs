//! What one task produced on one host, before the play loop turns it into an
//! outcome: shared by the task runner (`task.rs`) and the built-in actions
//! (`actions.rs`), below both.

use crate::modules::ModuleError;
use crate::output::Status;
use crate::vars::VarMap;

/// Task-level result before the play loop turns it into an `Outcome`.
pub(crate) struct SingleResult {
    pub(super) status: Status,
    pub(super) ignored: bool,
    pub(super) result: VarMap,
    pub(super) diff: Vec<String>,
}

impl ExecError {
    pub(crate) fn failed(msg: String) -> ExecError {
        ExecError::Failed(msg)
    }
}

impl SingleResult {
    pub(crate) fn new(status: Status, result: VarMap) -> SingleResult {
        SingleResult {
            status,
            ignored: false,
            result,
            diff: vec![],
        }
    }
}

/// Why a task did not produce a result on a host.
pub(crate) enum ExecError {
    Unreachable(String),
    Failed(String),
}

impl From<ModuleError> for ExecError {
    fn from(e: ModuleError) -> Self {
        match e {
            ModuleError::Transport(t) => ExecError::Unreachable(t.to_string()),
            other => ExecError::Failed(other.to_string()),
        }
    }
}
