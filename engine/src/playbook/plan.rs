//! The resolved plan: what the executor runs.
//!
//! Produced by [`super::resolve`] from the raw model. Roles are expanded,
//! imports inlined (their `when`/`tags`/`vars`/`become` already copied onto
//! each child), handlers indexed, and every task keeps its source span. Only
//! dynamic includes (`include_tasks`, `include_role`) remain to be loaded at
//! run time; they carry what they need to be resolved then, and [`Included`]
//! is what loading one brings in.

use std::path::PathBuf;
use std::sync::Arc;

use minijinja::Value;

use crate::diag::{Diagnostic, Span};
use crate::template::Condition;
use crate::vars::VarMap;

/// A whole playbook file (with `import_playbook` inlined).
#[derive(Debug, Clone)]
pub struct Playbook {
    pub path: PathBuf,
    pub plays: Vec<Play>,
    /// Ansible traps noticed while resolving (`when: "{{ x }}"`, a bare
    /// variable in `with_items`, an unknown `become_method`...).
    pub warnings: Vec<Diagnostic>,
}

impl Playbook {
    /// Makes the working directory `cwd` the base of every play and of the
    /// plays' own tasks, as ansible's ad-hoc command has it although its
    /// one-task play is written elsewhere: `playbook_dir` is `cwd`, and the
    /// tasks' directory is the empty relative path, so what they find there
    /// is named relative (`include_vars dir=vars` gives `vars/a.yml`, as
    /// in ansible).
    pub fn rebase_on_working_dir(&mut self, cwd: &std::path::Path) {
        for play in &mut self.plays {
            play.playbook_dir = cwd.to_path_buf();
            for node in play.sections.iter_mut().flat_map(|s| s.nodes.iter_mut()) {
                if let Node::Task(t) | Node::Include(t) = node {
                    let mut task = (**t).clone();
                    task.file_dir = PathBuf::new();
                    *t = Arc::new(task);
                }
            }
        }
    }
}

/// `serial:` one batch size.
#[derive(Debug, Clone, PartialEq)]
pub enum Serial {
    Count(usize),
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Linear,
    Free,
}

/// Privilege escalation settings; `None` means "inherit".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BecomeSettings {
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub become_method: Option<String>,
    pub become_flags: Option<String>,
}

impl BecomeSettings {
    /// `child` overrides `self` field by field.
    pub fn merged(&self, child: &BecomeSettings) -> BecomeSettings {
        BecomeSettings {
            become_: child.become_.or(self.become_),
            become_user: child
                .become_user
                .clone()
                .or_else(|| self.become_user.clone()),
            become_method: child
                .become_method
                .clone()
                .or_else(|| self.become_method.clone()),
            become_flags: child
                .become_flags
                .clone()
                .or_else(|| self.become_flags.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Play {
    pub name: String,
    /// The `hosts:` pattern (may contain a template).
    pub hosts: String,
    pub span: Span,
    /// `gather_facts:` as written; `None` leaves it to `gathering`.
    pub gather_facts: Option<bool>,
    pub become_: BecomeSettings,
    /// Play `vars`, plus `vars_prompt` defaults.
    pub vars: Arc<VarMap>,
    /// `vars_files`, loaded at resolve time (one map per file, in order).
    pub vars_files: Arc<VarMap>,
    /// When some `vars_files` entry needs host variables (facts, inventory
    /// vars, lookups): every entry in order, for the executor to resolve per
    /// host. Empty otherwise (`vars_files` is then complete).
    pub vars_files_layers: Vec<VarsFileLayer>,
    /// Sections in execution order; handlers are flushed after each.
    pub sections: Vec<Section>,
    pub handlers: Vec<Arc<Handler>>,
    pub serial: Vec<Serial>,
    pub strategy: Strategy,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<f64>,
    pub ignore_unreachable: bool,
    pub ignore_errors: bool,
    /// `None` when the play does not say: the command line decides.
    pub force_handlers: Option<bool>,
    pub check_mode: Option<bool>,
    pub diff: Option<bool>,
    pub no_log: Option<bool>,
    pub run_once: bool,
    /// Play-level `environment`, templated at run time.
    pub environment: Vec<Value>,
    /// `module_defaults`: module name (canonical short name) → default args.
    pub module_defaults: Vec<(String, VarMap)>,
    pub tags: Vec<String>,
    pub playbook_dir: PathBuf,
    /// `gather_subset`, `gather_timeout` and `fact_path` as written: the
    /// arguments of the play's implicit `setup` (templated like any task's).
    pub gather_args: VarMap,
    /// The play's `collections:` search list, for what a dynamic include
    /// brings in at run time (bare module and role names outside roles).
    pub collections: Vec<String>,
    /// `order`: how the selected hosts are ordered.
    pub order: HostOrder,
    /// Keywords written as templates (`strategy: "{{ s }}"`), raw: the
    /// executor templates them when the play starts and they override the
    /// fields above.
    pub late_keywords: Vec<(String, Value)>,
    /// Roles named in `roles:` or imported, and roles only brought in as
    /// dependencies (`ansible_play_role_names`, `ansible_dependent_role_names`).
    pub play_role_names: Vec<String>,
    pub dependent_role_names: Vec<String>,
    /// The defaults and vars of the roles the play brings in statically,
    /// merged in order: ansible-core shows them to every task of the play
    /// (a task's own role's still win).
    pub exported_role_defaults: Arc<VarMap>,
    pub exported_role_vars: Arc<VarMap>,
}

/// One `vars_files` entry.
#[derive(Debug, Clone)]
pub enum VarsFileLayer {
    Loaded(Arc<VarMap>),
    /// File names (first found wins) templated per host at play start.
    Deferred {
        candidates: Vec<String>,
        span: Span,
    },
}

/// The play keyword `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostOrder {
    #[default]
    Inventory,
    ReverseInventory,
    Sorted,
    ReverseSorted,
    Shuffle,
}

impl HostOrder {
    pub fn parse(s: &str) -> Option<HostOrder> {
        Some(match s.trim() {
            "inventory" => HostOrder::Inventory,
            "reverse_inventory" => HostOrder::ReverseInventory,
            "sorted" => HostOrder::Sorted,
            "reverse_sorted" => HostOrder::ReverseSorted,
            "shuffle" => HostOrder::Shuffle,
            _ => return None,
        })
    }
}

/// `pre_tasks`, roles + `tasks`, `post_tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    PreTasks,
    Tasks,
    PostTasks,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub kind: SectionKind,
    pub nodes: Vec<Node>,
}

/// A role as it appears in the plan, shared by all its tasks.
#[derive(Debug)]
pub struct RoleInstance {
    pub name: String,
    /// The collection the role came from (`ns.col`), if any: its handlers
    /// answer to both `role : x` and `ns.col.role : x`.
    pub collection: Option<String>,
    pub path: PathBuf,
    /// `defaults/main.yml` (lowest precedence).
    pub defaults: Arc<VarMap>,
    /// `vars/main.yml` (or `vars_from`).
    pub vars: Arc<VarMap>,
    /// The `defaults` and `vars` of the roles whose tasks included or
    /// imported this one, outermost first: ansible-core's dependency chain
    /// (`get_default_vars(dep_chain)`, `get_inherited_vars`), below this
    /// role's own.
    pub chain_defaults: Vec<Arc<VarMap>>,
    pub chain_vars: Vec<Arc<VarMap>>,
    /// Parameters given where the role was listed (`- role: x, foo: 1`, or
    /// `vars:` on it).
    pub params: Arc<VarMap>,
    /// The roles whose tasks imported or included this one
    /// (`ansible_parent_role_names`/`_paths`), innermost first.
    pub include_parents: Vec<(String, PathBuf)>,
    /// The roles that brought this one in (as a dependency, or through
    /// `include_role`/`import_role` in their tasks), outermost first: Ansible's
    /// dependency chain, searched after this role for relative files.
    pub parents: Vec<PathBuf>,
    /// The role use's identity when it does not allow duplicates: once it
    /// has completed on a host, other uses with the same key are skipped
    /// there (ansible-core's role cache and `_completed`).
    pub dedup_key: Option<String>,
}

impl RoleInstance {
    /// The names a notification may use for this role: as written, and for a
    /// collection's role both its short name and its FQCN (ansible-core's
    /// `get_name(include_role_fqcn=False/True)`).
    pub fn notify_names(&self) -> Vec<String> {
        let mut v = vec![self.name.clone()];
        if let Some(c) = &self.collection {
            let short = self
                .name
                .strip_prefix(c.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .unwrap_or(&self.name);
            for n in [short.to_string(), format!("{c}.{short}")] {
                if !v.contains(&n) {
                    v.push(n);
                }
            }
        }
        v
    }

    /// This role's dependency chain, outermost first, ending with itself.
    pub fn chain(&self) -> Vec<PathBuf> {
        let mut c = self.parents.clone();
        c.push(self.path.clone());
        c
    }

    /// The role directories a task of this role searches, innermost first.
    pub fn search_roles(&self) -> impl Iterator<Item = &std::path::Path> {
        std::iter::once(self.path.as_path()).chain(self.parents.iter().rev().map(PathBuf::as_path))
    }
}

/// A node of a task list.
#[derive(Debug, Clone)]
pub enum Node {
    Task(Arc<Task>),
    Block(Arc<Block>),
    /// `include_tasks` / `include_role`: loaded at run time, per host, maybe
    /// in a loop.
    Include(Arc<Task>),
}

#[derive(Debug, Clone)]
pub struct Block {
    pub name: Option<String>,
    pub span: Span,
    pub block: Vec<Node>,
    pub rescue: Vec<Node>,
    pub always: Vec<Node>,
    /// The block's own `when`, evaluated once when the block starts is NOT how
    /// Ansible works: it is inherited by every child task instead (already
    /// copied into them). Kept here for listing only.
    pub when: Vec<Condition>,
    pub tags: Vec<String>,
}

/// How a task loops.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// `loop`, or the `with_<lookup>` name (`items`, `dict`, `nested`...).
    pub kind: LoopKind,
    /// The raw (untemplated) loop value.
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoopKind {
    Loop,
    /// `with_<name>`: the lookup plugin name.
    With(String),
}

#[derive(Debug, Clone)]
pub struct LoopControl {
    pub loop_var: Option<String>,
    pub index_var: Option<String>,
    pub label: Option<String>,
    pub pause: Option<f64>,
    pub extended: bool,
    /// `ansible_loop.allitems` is given with `extended` (Ansible's default).
    pub extended_allitems: bool,
    /// `break_when`: conditions checked after each item.
    pub break_when: Option<Vec<Condition>>,
}

impl Default for LoopControl {
    fn default() -> Self {
        LoopControl {
            loop_var: None,
            index_var: None,
            label: None,
            pause: None,
            extended: false,
            extended_allitems: true,
            break_when: None,
        }
    }
}

/// What a dynamic include loads.
#[derive(Debug, Clone)]
pub enum IncludeTarget {
    /// `include_tasks: file` (templatable; relative to the including file).
    Tasks { file: String, base_dir: PathBuf },
    /// `include_role: name=... tasks_from=...`.
    Role {
        name: String,
        tasks_from: Option<String>,
        vars_from: Option<String>,
        defaults_from: Option<String>,
    },
}

/// One task, with everything inherited from blocks, imports and roles already
/// applied.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique within the playbook; used in events.
    pub id: usize,
    pub name: Option<String>,
    /// Canonical short module name (`copy`), or an executor action (`meta`,
    /// `include_tasks`, `set_fact`...).
    pub action: String,
    /// The name as written (`ansible.builtin.copy`).
    pub action_as_written: String,
    /// The Python module to run instead of a native one: set when the name
    /// was found only outside Keel (a `library/` dir, a collection,
    /// ansible-core), already packed at resolve time.
    pub python: Option<Arc<crate::modules::python::PyModule>>,
    /// Module arguments, raw (templated per host at run time). The old
    /// `key=value` form is already split; free-form text is under
    /// `_raw_params`.
    pub args: VarMap,
    pub span: Span,
    /// All `when` conditions that apply, outermost first.
    pub when: Vec<Condition>,
    pub loop_: Option<LoopSpec>,
    pub loop_control: LoopControl,
    pub register: Option<String>,
    pub notify: Vec<String>,
    /// Effective tags (own plus inherited).
    pub tags: Vec<String>,
    pub changed_when: Option<Vec<Condition>>,
    pub failed_when: Option<Vec<Condition>>,
    pub ignore_errors: Option<bool>,
    pub ignore_unreachable: Option<bool>,
    pub until: Option<Vec<Condition>>,
    pub retries: Option<Value>,
    pub delay: Option<Value>,
    pub become_: BecomeSettings,
    /// `environment` entries, outermost first (each a map or a template).
    pub environment: Vec<Value>,
    pub no_log: Option<bool>,
    pub check_mode: Option<bool>,
    pub diff: Option<bool>,
    pub delegate_to: Option<String>,
    pub delegate_facts: bool,
    pub run_once: bool,
    pub throttle: Option<Value>,
    pub timeout: Option<Value>,
    pub any_errors_fatal: Option<bool>,
    /// Block and task vars merged (block outermost, task last).
    pub vars: Arc<VarMap>,
    pub async_: Option<Value>,
    pub poll: Option<Value>,
    /// The role the task came from, if any.
    pub role: Option<Arc<RoleInstance>>,
    /// For `Node::Include`: what to load.
    pub include: Option<IncludeTarget>,
    /// Directory of the file the task was written in (relative includes).
    pub file_dir: PathBuf,
    /// Boolean keywords written as templates (own or inherited), raw: the
    /// executor templates them per host and they override the fields above
    /// (an `omit` keeps the inherited value).
    pub late: Vec<(String, Value)>,
}

impl Task {
    /// `name`, or `module` if unnamed, as ansible-playbook prints it; with a
    /// `role : ` prefix when the task came from a role.
    pub fn display_name(&self) -> String {
        let base = self
            .name
            .clone()
            .unwrap_or_else(|| self.action_as_written.clone());
        match &self.role {
            Some(r) => format!("{} : {}", r.name, base),
            None => base,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Handler {
    pub task: Arc<Task>,
    /// The names that notify this handler: its `name`, and in a role also
    /// `role : name` (both role names for a collection's role). When several
    /// handlers share a name, only one of them is notified (see `block`).
    pub names: Vec<String>,
    /// Its `listen` topics (in a role also `role : topic`): a topic notifies
    /// every handler listening to it, one per handler name.
    pub listen: Vec<String>,
    /// Which handler block of its play it was written in (in order of
    /// resolution): ansible-core searches blocks last first, and the handlers
    /// of one block in order, so the first of a block wins a shared name but
    /// a later block (the play's own handlers, after its roles') wins over an
    /// earlier one. Consecutive handlers outside an explicit `block` share one.
    pub block: u32,
}

/// What a dynamic include brought in.
#[derive(Debug, Clone)]
pub struct Included {
    pub nodes: Vec<Node>,
    /// For `include_role`: the role's instance (its vars for the executor).
    pub role: Option<Arc<RoleInstance>>,
    /// For `include_role`: the role's handlers (and its dependencies'), to be
    /// made notifiable for the rest of the play.
    pub handlers: Vec<Arc<Handler>>,
}
