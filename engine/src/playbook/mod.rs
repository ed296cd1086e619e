//! The playbook language: YAML → raw model → resolved [`plan`].
//!
//! `raw.rs` reads YAML nodes into a raw model and checks keywords (with "did
//! you mean" hints); `resolve.rs` expands roles (`roles.rs`: search path,
//! `meta/main.yml` dependencies as a DAG, `defaults`/`vars`), inlines imports,
//! copies inherited `when`/`tags`/`vars`/`become` onto children, indexes
//! handlers and checks references. `keywords.rs` is the vocabulary,
//! `listing.rs` prints `--list-tasks`/`--list-tags` and selects tags, and
//! `dump.rs` renders a plan as text for tests. Nothing here touches a host.
//!
//! Connection keywords on plays, blocks and tasks (`connection`,
//! `remote_user`, `port`) are stored as the variables `ansible_connection`,
//! `ansible_user` and `ansible_port` in the matching `vars`.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::diag::Diagnostic;

mod dump;
pub mod keywords;
mod listing;
pub mod plan;
mod raw;
pub use raw::VARIABLE_PARAMS;
mod resolve;
pub(crate) mod roles;

pub use dump::dump_plan;
pub use listing::{list_tags, list_tasks, listing, TagFilter, TagLists};
pub use plan::Included;
pub use resolve::{Prompter, ResolveOptions, VarPrompt};

/// Loads and resolves a playbook. Every syntax or reference error (unknown
/// keyword or module, missing role or file, role cycle...) is reported here,
/// before any host is contacted.
pub fn load_playbook(path: &Path, opts: &ResolveOptions) -> Result<plan::Playbook, Diagnostic> {
    let mut r = resolve::Resolver::new(opts, Arc::new(AtomicUsize::new(1)));
    let plays = r.playbook_file(path)?;
    Ok(plan::Playbook {
        path: path.to_path_buf(),
        plays,
        warnings: r.warnings,
    })
}

/// Task ids of dynamically included tasks come from one counter per process,
/// starting far above any playbook's own ids so they never collide.
fn include_ids() -> Arc<AtomicUsize> {
    static IDS: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| Arc::new(AtomicUsize::new(1 << 32)))
        .clone()
}

/// Why a dynamic include could not be loaded. ansible-core's strategy
/// treats the two kinds differently, and so does the executor.
#[derive(Debug)]
pub enum IncludeError {
    /// The tasks file or the role is not there, or the tasks file holds no
    /// list of tasks: the including hosts fail, and a `rescue` may catch it.
    Missing(Diagnostic),
    /// What was found does not parse (bad YAML, an unknown keyword or
    /// action) or names a file the role does not have (`tasks_from`).
    /// ansible-core re-raises its parser errors, which stops the whole run
    /// (exit code 4).
    Invalid(Diagnostic),
}

impl IncludeError {
    pub fn diagnostic(&self) -> &Diagnostic {
        match self {
            IncludeError::Missing(d) | IncludeError::Invalid(d) => d,
        }
    }
}

impl std::fmt::Display for IncludeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.diagnostic().fmt(f)
    }
}

impl std::error::Error for IncludeError {}

/// Whatever is not known to be missing is a parse error.
impl From<Diagnostic> for IncludeError {
    fn from(d: Diagnostic) -> IncludeError {
        IncludeError::Invalid(d)
    }
}

/// Loads a dynamic include at run time. `target` is `include.include` with
/// its strings already templated for the host. The children inherit the
/// include's vars, become, environment, delegation and role, but not its
/// `when` or `tags` (Ansible evaluates those once, on the include); the
/// include's `apply:` keywords (`tags`, `when`, `become`...) are applied to
/// every child.
pub fn load_include(
    play: &plan::Play,
    include: &plan::Task,
    target: &plan::IncludeTarget,
    opts: &ResolveOptions,
) -> Result<Included, IncludeError> {
    let mut r = resolve::Resolver::new(opts, include_ids());
    let out = r.load_include(play, include, target)?;
    for w in r.warnings {
        tracing::warn!("{w}");
    }
    Ok(out)
}

/// `include_tasks` with the file already templated and found.
pub fn load_include_tasks(
    path: &Path,
    include: &plan::Task,
    play: &plan::Play,
    opts: &ResolveOptions,
) -> Result<Vec<plan::Node>, IncludeError> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = plan::IncludeTarget::Tasks { file, base_dir };
    Ok(load_include(play, include, &target, opts)?.nodes)
}

/// `include_role` with its arguments already templated. Use
/// [`load_include`] to get the role's handlers too.
pub fn load_include_role(
    name: &str,
    tasks_from: Option<String>,
    vars_from: Option<String>,
    defaults_from: Option<String>,
    include: &plan::Task,
    play: &plan::Play,
    opts: &ResolveOptions,
) -> Result<Vec<plan::Node>, IncludeError> {
    let target = plan::IncludeTarget::Role {
        name: name.to_string(),
        tasks_from,
        vars_from,
        defaults_from,
    };
    Ok(load_include(play, include, &target, opts)?.nodes)
}

/// The number of tasks (not blocks) in a node list, recursively; handy for
/// reports and benchmarks.
pub fn count_tasks(nodes: &[plan::Node]) -> usize {
    nodes
        .iter()
        .map(|n| match n {
            plan::Node::Task(_) | plan::Node::Include(_) => 1,
            plan::Node::Block(b) => {
                count_tasks(&b.block) + count_tasks(&b.rescue) + count_tasks(&b.always)
            }
        })
        .sum()
}
