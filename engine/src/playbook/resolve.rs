//! Raw model → resolved [`plan`]: plays read, roles expanded (dependencies
//! first; each use kept, with the identity the executor deduplicates it by
//! at run time), static imports inlined with the import's keywords
//! copied onto each child, block keywords inherited, handlers indexed, task
//! ids assigned. Dynamic includes stay as [`plan::Node::Include`] and are
//! loaded at run time through [`Resolver::load_include`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use minijinja::Value;

use super::keywords::{self, BLOCK, PLAY};
use super::plan::{
    self, BecomeSettings, Block, Handler, IncludeTarget, Included, Play, RoleInstance, Section,
    SectionKind, Serial, Strategy, Task,
};
use super::raw::{self, Keywords, RawKind};
use super::roles::{self, RoleEntry, RoleGraph};
use super::IncludeError;
use crate::diag::{suggest, Diagnostic};
use crate::modules::python::{ModuleSearch, PyModule, Resolution};
use crate::modules::registry;
use crate::template::Condition;
use crate::vars::VarMap;
use crate::yaml::{self, Node, NodeKind};

/// How deep imports may nest before we call it a loop.
/// What resolving needs besides the playbook itself.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Extra role directories, searched after `roles/` next to the playbook
    /// and the playbook's own directory. `KEEL_ROLES_PATH` and
    /// `ANSIBLE_ROLES_PATH` (colon-separated) are searched after these.
    pub roles_path: Vec<PathBuf>,
    /// `collections_path` (from `ansible.cfg` or the environment): where
    /// `ansible_collections/` trees are found, after the playbook's own
    /// `collections/`. Empty: `ANSIBLE_COLLECTIONS_PATH`, else Ansible's
    /// defaults.
    pub collections_path: Vec<PathBuf>,
    /// `-e` variables: they win when templating static paths (`vars_files`,
    /// `import_tasks`, `import_playbook`) and answer `vars_prompt`.
    pub extra_vars: VarMap,
    /// Asks the user a `vars_prompt` question (the CLI gives one when its
    /// standard input is a terminal); without it, defaults answer.
    pub prompter: Option<Prompter>,
}

/// One `vars_prompt` question.
#[derive(Debug, Clone)]
pub struct VarPrompt {
    pub name: String,
    /// The line shown: ansible-core's `"{prompt} [{default}]: "`,
    /// `"{prompt}: "` or `"input for {name}: "`.
    pub message: String,
    /// No echo while typing (the default).
    pub private: bool,
    /// Ask twice until both answers match.
    pub confirm: bool,
}

/// The function behind a [`Prompter`].
pub type AskFn = dyn Fn(&VarPrompt) -> std::io::Result<String> + Send + Sync;

/// Reads the answer to a [`VarPrompt`] from the user.
#[derive(Clone)]
pub struct Prompter(pub Arc<AskFn>);

impl std::fmt::Debug for Prompter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prompter")
    }
}

const MAX_IMPORT_DEPTH: usize = 64;

/// Keywords inherited from enclosing blocks, imports, roles and the play.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inherit {
    pub when: Vec<Condition>,
    pub tags: Vec<String>,
    pub vars: VarMap,
    pub become_: BecomeSettings,
    pub environment: Vec<Value>,
    pub ignore_errors: Option<bool>,
    pub ignore_unreachable: Option<bool>,
    pub no_log: Option<bool>,
    pub check_mode: Option<bool>,
    pub diff: Option<bool>,
    pub delegate_to: Option<String>,
    pub delegate_facts: Option<bool>,
    pub run_once: Option<bool>,
    pub any_errors_fatal: Option<bool>,
    pub throttle: Option<Value>,
    pub timeout: Option<Value>,
    pub notify: Vec<String>,
    pub role: Option<Arc<RoleInstance>>,
    /// When `role` is unset because a role's dependency or included role is
    /// being expanded: the chain of roles that brought it in.
    pub role_parents: Vec<PathBuf>,
    /// When a role's dependency is being expanded: the parameters of the
    /// roles that brought it in (ansible-core gives a dependency its dep
    /// chain's role params, under its own).
    pub parent_role_params: VarMap,
    /// Directory of the file being read (relative imports).
    pub file_dir: PathBuf,
    /// Templated boolean keywords, resolved per host at run time.
    pub late: Vec<(String, Value)>,
}

fn union(into: &mut Vec<String>, more: &[String]) {
    for t in more {
        if !into.contains(t) {
            into.push(t.clone());
        }
    }
}

impl Inherit {
    /// The context for the children of something carrying `kw`: conditions
    /// prepended (outer first), tags unioned, vars merged (inner wins),
    /// become merged, environment appended, the rest overridden.
    pub fn child(&self, kw: &Keywords) -> Inherit {
        let mut c = self.clone();
        c.when.extend(kw.when.iter().cloned());
        union(&mut c.tags, &kw.tags);
        c.vars
            .extend(kw.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        c.become_ = self.become_.merged(&kw.become_);
        if let Some(e) = &kw.environment {
            c.environment.push(e.clone());
        }
        macro_rules! over {
            ($($f:ident),*) => { $( if kw.$f.is_some() { c.$f = kw.$f.clone(); } )* };
        }
        over!(
            ignore_errors,
            ignore_unreachable,
            no_log,
            check_mode,
            diff,
            delegate_to,
            delegate_facts,
            run_once,
            any_errors_fatal,
            throttle,
            timeout
        );
        // A keyword set here, plainly or as a template, replaces an
        // inherited template.
        c.late
            .retain(|(k, _)| !kw.sets_plainly(k) && !kw.late.iter().any(|(l, _)| l == k));
        c.late.extend(kw.late.iter().cloned());
        union(&mut c.notify, &kw.notify);
        c
    }
}

/// What an `import_playbook` passes down to the plays it brings in.
#[derive(Debug, Clone, Default)]
struct PlayImport {
    vars: VarMap,
    when: Vec<Condition>,
    tags: Vec<String>,
}

/// Resolves one playbook; keeps the state shared by its plays.
pub struct Resolver<'o> {
    opts: &'o ResolveOptions,
    ids: Arc<AtomicUsize>,
    pub warnings: Vec<Diagnostic>,
    // Per play:
    playbook_dir: PathBuf,
    role_search: Vec<PathBuf>,
    /// Variables visible to static templating (play vars, vars_files, extra vars).
    static_vars: VarMap,
    role_handlers: Vec<Arc<Handler>>,
    /// The last handler block number given out ([`Handler::block`]).
    handler_blocks: u32,
    seen_roles: HashSet<(PathBuf, String)>,
    /// The last error was an `import_tasks` file that is not there (how a
    /// dynamic include tells ansible-core's AnsibleFileNotFound from its
    /// parser errors).
    file_not_found: std::cell::Cell<bool>,
    graph: RoleGraph,
    metas: HashMap<PathBuf, Arc<roles::RoleMeta>>,
    depth: usize,
    /// The play's roles named in `roles:` or `import_role`, and those only
    /// brought in as dependencies, in first-seen order (the magic variables
    /// `ansible_play_role_names` and `ansible_dependent_role_names`).
    play_role_names: Vec<String>,
    dependent_role_names: Vec<String>,
    /// Where modules Keel has no native port of are found: the playbooks'
    /// and roles' `library/` dirs seen so far (kept across plays, as
    /// Ansible keeps them), collections, ansible-core.
    modules: ModuleSearch,
    /// Defaults and vars of every role the play brings in statically, in
    /// expansion order (later roles win): what ansible-core exports to the
    /// play's other tasks.
    exported_role_defaults: VarMap,
    exported_role_vars: VarMap,
}

/// How a role comes into the play: it decides the role's magic variables.
#[derive(Clone, Copy)]
pub(crate) enum RoleVia<'a> {
    /// Listed in the play's `roles:`.
    Play,
    /// A dependency in another role's `meta/main.yml`.
    Dependency,
    /// `import_role`/`include_role` in a task list; the role whose tasks
    /// did so, if any (its name heads `ansible_parent_role_names`).
    Task(Option<&'a Arc<RoleInstance>>),
}

impl<'o> Resolver<'o> {
    pub fn new(opts: &'o ResolveOptions, ids: Arc<AtomicUsize>) -> Resolver<'o> {
        let mut modules = ModuleSearch::new();
        if !opts.collections_path.is_empty() {
            modules.set_collections_path(opts.collections_path.clone());
        }
        Resolver {
            opts,
            ids,
            file_not_found: std::cell::Cell::new(false),
            warnings: Vec::new(),
            playbook_dir: PathBuf::new(),
            role_search: Vec::new(),
            static_vars: VarMap::new(),
            role_handlers: Vec::new(),
            handler_blocks: 0,
            seen_roles: HashSet::new(),
            graph: RoleGraph::default(),
            metas: HashMap::new(),
            depth: 0,
            play_role_names: Vec::new(),
            dependent_role_names: Vec::new(),
            modules,
            exported_role_defaults: VarMap::new(),
            exported_role_vars: VarMap::new(),
        }
    }

    fn next_id(&self) -> usize {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Sets up the per-play state for a play read from `playbook_dir`.
    pub(crate) fn start_play(&mut self, playbook_dir: &Path) {
        self.playbook_dir = playbook_dir.to_path_buf();
        self.modules.add_base(playbook_dir);
        let mut search = vec![playbook_dir.join("roles"), playbook_dir.to_path_buf()];
        search.extend(self.opts.roles_path.iter().cloned());
        for var in ["KEEL_ROLES_PATH", "ANSIBLE_ROLES_PATH"] {
            if let Ok(v) = std::env::var(var) {
                search.extend(v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
            }
        }
        // Keel's repository layout keeps `playbooks/` and `roles/` side by side.
        if let Some(parent) = playbook_dir.parent() {
            search.push(parent.join("roles"));
        }
        // A relative roles path (`ANSIBLE_ROLES_PATH=../`) is taken from the
        // working directory once, so `role_path` is absolute, as in Ansible.
        for dir in &mut search {
            if dir.is_relative() {
                if let Ok(abs) = dir.canonicalize().or_else(|_| std::path::absolute(&*dir)) {
                    *dir = abs;
                }
            }
        }
        self.role_search = search;
        self.static_vars = VarMap::new();
        self.role_handlers.clear();
        self.seen_roles.clear();
        self.graph = RoleGraph::default();
        self.play_role_names.clear();
        self.dependent_role_names.clear();
        self.exported_role_defaults = VarMap::new();
        self.exported_role_vars = VarMap::new();
    }

    // ---------------------------------------------------------------- plays

    /// Reads a playbook file into plays, inlining `import_playbook`.
    pub fn playbook_file(&mut self, path: &Path) -> Result<Vec<Play>, Diagnostic> {
        self.playbook_file_with(path, &PlayImport::default())
    }

    fn playbook_file_with(
        &mut self,
        path: &Path,
        import: &PlayImport,
    ) -> Result<Vec<Play>, Diagnostic> {
        self.depth += 1;
        if self.depth > MAX_IMPORT_DEPTH {
            return Err(Diagnostic::new(format!(
                "import_playbook nests deeper than {MAX_IMPORT_DEPTH} levels at {}",
                path.display()
            ))
            .hint("does a playbook import itself?"));
        }
        let root = yaml::load_one(path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let items: &[Node] = match &root.kind {
            NodeKind::Null => &[],
            NodeKind::Seq(items) => items,
            _ => {
                return Err(root
                    .error(format!(
                        "a playbook must be a list of plays, found {}",
                        root.type_name()
                    ))
                    .hint("start each play with `- hosts: ...`"))
            }
        };
        let mut plays = Vec::new();
        for item in items {
            let Some(entries) = item.as_map() else {
                return Err(item
                    .error(format!(
                        "a play must be a mapping, found {}",
                        item.type_name()
                    ))
                    .hint("a play looks like `- hosts: all` followed by `tasks:`"));
            };
            // ansible-core takes all three spellings (`ansible.legacy` is
            // its name for "builtin or a local override").
            let imp = item
                .get("import_playbook")
                .or_else(|| item.get("ansible.builtin.import_playbook"))
                .or_else(|| item.get("ansible.legacy.import_playbook"));
            if let Some(target) = imp {
                plays.extend(self.import_playbook(item, entries, target, &dir, import)?);
            } else {
                plays.push(self.play(item, &dir, import)?);
            }
        }
        self.depth -= 1;
        Ok(plays)
    }

    fn import_playbook(
        &mut self,
        item: &Node,
        entries: &[(Node, Node)],
        target: &Node,
        dir: &Path,
        outer: &PlayImport,
    ) -> Result<Vec<Play>, Diagnostic> {
        let mut imp = outer.clone();
        for (k, v) in entries {
            let key = raw::key_string(k)?;
            match key.as_str() {
                "import_playbook"
                | "ansible.builtin.import_playbook"
                | "ansible.legacy.import_playbook"
                | "name" => {}
                "vars" => imp.vars.extend(raw::var_map(v, "vars")?),
                "when" => imp.when.extend(raw::conditions(v, "when")?),
                "tags" => union(&mut imp.tags, &raw::tags(v)?),
                other => {
                    let mut e = k.error(format!("`{other}` is not valid on `import_playbook`"));
                    if let Some(s) = suggest(other, ["vars", "when", "tags"]) {
                        e = e.hint(format!("did you mean `{s}`?"));
                    }
                    return Err(e);
                }
            }
        }
        let file = raw::string(target, "import_playbook")?;
        let mut vars = self.opts.extra_vars.clone();
        for (k, v) in &imp.vars {
            vars.entry(k.clone()).or_insert(v.clone());
        }
        let file = render_static(&file, &vars, target, "import_playbook")?;
        let path = if Path::new(&file).is_absolute() {
            PathBuf::from(&file)
        } else {
            dir.join(&file)
        };
        if !path.is_file() {
            return Err(target.error(format!(
                "the playbook '{file}' was not found at {}",
                path.display()
            )));
        }
        let _ = item;
        self.playbook_file_with(&path, &imp)
    }

    fn play(&mut self, node: &Node, dir: &Path, import: &PlayImport) -> Result<Play, Diagnostic> {
        self.start_play(dir);
        // The play's `collections:` search list (its roles use their own).
        let list = match node.get("collections") {
            Some(n) => collection_list(n)?,
            None => Vec::new(),
        };
        let outer = self.modules.set_collection_list(list.clone());
        let play = self.play_body(node, dir, import);
        self.modules.set_collection_list(outer);
        play.map(|p| Play {
            collections: list,
            ..p
        })
    }

    fn play_body(
        &mut self,
        node: &Node,
        dir: &Path,
        import: &PlayImport,
    ) -> Result<Play, Diagnostic> {
        let entries = node.as_map().expect("checked by caller");
        for (k, _) in entries {
            let key = raw::key_string(k)?;
            if key == "user" {
                // Deprecated alias ansible-core 2.19 still accepts.
                if node.get("remote_user").is_none() {
                    self.warnings.push(
                        Diagnostic::new(
                            "the play keyword `user` is a deprecated alias of `remote_user`",
                        )
                        .at(k.span())
                        .hint("write `remote_user:` instead"),
                    );
                }
                continue;
            }
            if !keywords::accepts(PLAY, &key) {
                let mut e = k.error(format!("'{key}' is not a valid attribute for a Play"));
                if let Some(s) = suggest(&key, keywords::names(PLAY)) {
                    e = e.hint(format!("did you mean `{s}`?"));
                } else if keywords::is_module(&key) {
                    e = e.hint("modules go into tasks: put this under `tasks:`");
                }
                return Err(e);
            }
        }
        let hosts_node = node.get("hosts").ok_or_else(|| {
            node.error("this play has no `hosts`")
                .hint("add `hosts: all` (or a group or host pattern)")
        })?;
        let hosts = match &hosts_node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .map(|n| raw::string(n, "hosts"))
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => raw::string(hosts_node, "hosts")?,
        };
        let name = raw::opt_string(node.get("name"), "name")?.unwrap_or_else(|| hosts.clone());
        // Keywords given as templates are resolved when the play starts, with
        // the play's vars and the extra vars, as Ansible does.
        let templated = |key: &str| {
            node.get(key).filter(|n| {
                matches!(&n.kind, NodeKind::Str { value, .. } if crate::template::is_template(value))
            })
        };
        let late_keywords: Vec<(String, minijinja::Value)> = keywords::late_names(PLAY)
            .filter_map(|k| templated(k).map(|n| (k.to_string(), n.to_value())))
            .collect();
        let plain = |key: &str| node.get(key).filter(|_| templated(key).is_none());
        let flag = |key: &str| raw::opt_bool(plain(key), key);

        let mut become_ = BecomeSettings {
            become_: flag("become")?,
            become_user: raw::opt_string(node.get("become_user"), "become_user")?,
            become_method: None,
            become_flags: raw::opt_string(node.get("become_flags"), "become_flags")?,
        };
        if let Some(m) = node.get("become_method") {
            let mut kw = Keywords::default();
            raw::read_keyword(&mut kw, "become_method", m, m, &mut self.warnings)?;
            become_.become_method = kw.become_.become_method;
        }

        // Variables: import_playbook vars, then play vars, then prompts.
        let mut vars = import.vars.clone();
        if let Some(v) = node.get("vars") {
            vars.extend(raw::var_map(v, "vars")?);
        }
        for key in ["connection", "user", "remote_user", "port"] {
            if let Some(v) = node.get(key) {
                let var = keywords::connection_variable(key).expect("a connection keyword");
                vars.insert(var.into(), v.to_value());
            }
        }
        if let Some(p) = node.get("vars_prompt") {
            self.vars_prompt(p, &mut vars)?;
        }
        self.static_vars = vars.clone();
        let (vars_files, vars_files_layers) = match node.get("vars_files") {
            Some(vf) => self.vars_files(vf, dir, &vars)?,
            None => (VarMap::new(), Vec::new()),
        };
        self.static_vars
            .extend(vars_files.iter().map(|(k, v)| (k.clone(), v.clone())));

        let serial = match plain("serial") {
            Some(s) => serial(s)?,
            None => vec![],
        };
        let strategy = match plain("strategy") {
            None => Strategy::Linear,
            Some(s) => match raw::string(s, "strategy")?.as_str() {
                "linear" => Strategy::Linear,
                "free" | "host_pinned" => Strategy::Free,
                other => {
                    let mut e = s.error(format!(
                        "unknown strategy `{other}`; Keel runs `linear` and `free`"
                    ));
                    if let Some(x) = suggest(other, ["linear", "free"]) {
                        e = e.hint(format!("did you mean `{x}`?"));
                    }
                    return Err(e);
                }
            },
        };
        let max_fail_percentage = match plain("max_fail_percentage") {
            None => None,
            Some(n) => Some(match &n.kind {
                NodeKind::Int(i) => *i as f64,
                NodeKind::Float(f) => *f,
                NodeKind::Str { value, .. } => {
                    value.trim().trim_end_matches('%').parse().map_err(|_| {
                        n.error(format!(
                            "`max_fail_percentage` must be a number, found `{value}`"
                        ))
                    })?
                }
                _ => return Err(n.error("`max_fail_percentage` must be a number")),
            }),
        };
        let environment = match node.get("environment") {
            Some(e) if !e.is_null() => vec![e.to_value()],
            _ => vec![],
        };
        let module_defaults = match node.get("module_defaults") {
            Some(md) => module_defaults(md)?,
            None => vec![],
        };
        let mut tags = import.tags.clone();
        if let Some(t) = node.get("tags") {
            union(&mut tags, &raw::tags(t)?);
        }
        // `gather_subset`, `gather_timeout` and `fact_path` become the
        // arguments of the implicit fact gathering; `throttle` and
        // `timeout` are accepted at play level and not read here.
        let mut gather_args = VarMap::new();
        for key in ["gather_subset", "gather_timeout", "fact_path"] {
            if let Some(v) = node.get(key).filter(|v| !v.is_null()) {
                gather_args.insert(key.to_string(), v.to_value());
            }
        }

        // Tasks inherit the play's tags and the import's conditions.
        let base = Inherit {
            when: import.when.clone(),
            tags: tags.clone(),
            file_dir: dir.to_path_buf(),
            ..Inherit::default()
        };

        let pre = self.tasks(raw::task_list(node.get("pre_tasks"), "pre_tasks")?, &base)?;
        let mut main = Vec::new();
        if let Some(r) = node.get("roles") {
            let list = match &r.kind {
                NodeKind::Null => &[][..],
                NodeKind::Seq(items) => items,
                _ => {
                    return Err(r.error(format!("`roles` must be a list, found {}", r.type_name())))
                }
            };
            let entries: Vec<RoleEntry> = list
                .iter()
                .map(|n| roles::read_entry(n, &mut self.warnings))
                .collect::<Result<_, _>>()?;
            for e in &entries {
                self.role(
                    e,
                    &base,
                    &RoleFiles::default(),
                    true,
                    RoleVia::Play,
                    &mut main,
                )?;
            }
        }
        main.extend(self.tasks(raw::task_list(node.get("tasks"), "tasks")?, &base)?);
        let post = self.tasks(raw::task_list(node.get("post_tasks"), "post_tasks")?, &base)?;
        let play_handlers =
            self.handlers(raw::task_list(node.get("handlers"), "handlers")?, &base)?;
        let mut handlers = std::mem::take(&mut self.role_handlers);
        handlers.extend(play_handlers);

        self.check_notify(&[&pre, &main, &post], &handlers);
        let mut sections = Vec::new();
        for (kind, nodes) in [
            (SectionKind::PreTasks, pre),
            (SectionKind::Tasks, main),
            (SectionKind::PostTasks, post),
        ] {
            sections.push(Section { kind, nodes });
        }

        Ok(Play {
            name,
            hosts,
            span: node.span(),
            gather_facts: flag("gather_facts")?,
            become_,
            vars: Arc::new(vars),
            vars_files: Arc::new(vars_files),
            vars_files_layers,
            sections,
            handlers,
            serial,
            strategy,
            any_errors_fatal: flag("any_errors_fatal")?.unwrap_or(false),
            max_fail_percentage,
            ignore_unreachable: flag("ignore_unreachable")?.unwrap_or(false),
            ignore_errors: flag("ignore_errors")?.unwrap_or(false),
            force_handlers: flag("force_handlers")?,
            check_mode: flag("check_mode")?,
            diff: flag("diff")?,
            no_log: flag("no_log")?,
            run_once: flag("run_once")?.unwrap_or(false),
            environment,
            module_defaults,
            tags,
            playbook_dir: dir.to_path_buf(),
            collections: Vec::new(),
            gather_args,
            order: match plain("order") {
                Some(o) => plan::HostOrder::parse(&raw::string(o, "order")?)
                    .ok_or_else(|| o.error("`order` must be one of inventory, reverse_inventory, sorted, reverse_sorted, shuffle"))?,
                None => plan::HostOrder::Inventory,
            },
            late_keywords,
            play_role_names: self.play_role_names.clone(),
            dependent_role_names: self.dependent_role_names.clone(),
            exported_role_defaults: Arc::new(std::mem::take(&mut self.exported_role_defaults)),
            exported_role_vars: Arc::new(std::mem::take(&mut self.exported_role_vars)),
        })
    }

    /// Warns about `notify` names no handler answers to. Skipped when the
    /// play includes roles at run time (they may bring the handler).
    fn check_notify(&mut self, lists: &[&Vec<plan::Node>], handlers: &[Arc<Handler>]) {
        fn walk<'a>(nodes: &'a [plan::Node], out: &mut Vec<&'a Task>, dynamic: &mut bool) {
            for n in nodes {
                match n {
                    plan::Node::Task(t) => out.push(t),
                    plan::Node::Include(t) => {
                        *dynamic |= matches!(t.include, Some(IncludeTarget::Role { .. }));
                        out.push(t);
                    }
                    plan::Node::Block(b) => {
                        for part in [&b.block, &b.rescue, &b.always] {
                            walk(part, out, dynamic);
                        }
                    }
                }
            }
        }
        let mut tasks = Vec::new();
        let mut dynamic = false;
        for l in lists {
            walk(l, &mut tasks, &mut dynamic);
        }
        if dynamic {
            return;
        }
        for h in handlers {
            tasks.push(&h.task);
        }
        for t in tasks {
            for n in &t.notify {
                if crate::template::is_template(n)
                    || handlers
                        .iter()
                        .any(|h| h.names.contains(n) || h.listen.contains(n))
                {
                    continue;
                }
                let names: Vec<&str> = handlers
                    .iter()
                    .flat_map(|h| h.names.iter().chain(&h.listen).map(String::as_str))
                    .collect();
                let mut w = Diagnostic::new(format!("no handler is named or listens to `{n}`"))
                    .at(t.span.clone());
                if let Some(s) = suggest(n, names.iter().copied()) {
                    w = w.hint(format!("did you mean `{s}`?"));
                }
                self.warnings.push(w);
            }
        }
    }

    /// `vars_prompt`: extra vars win; else the user is asked (when there is
    /// a prompter), an empty answer or no prompter giving the `default`;
    /// `encrypt` turns the answer into a crypt(3) hash.
    fn vars_prompt(&mut self, node: &Node, vars: &mut VarMap) -> Result<(), Diagnostic> {
        let items = node.as_seq().ok_or_else(|| {
            node.error(format!(
                "`vars_prompt` must be a list, found {}",
                node.type_name()
            ))
        })?;
        for item in items {
            raw::mapping(item, "a `vars_prompt` entry")?;
            let name_node = item
                .get("name")
                .ok_or_else(|| item.error("a `vars_prompt` entry needs a `name`"))?;
            let name = raw::string(name_node, "name")?;
            if self.opts.extra_vars.contains_key(&name) {
                continue;
            }
            let text = |key: &str| -> Result<Option<String>, Diagnostic> {
                item.get(key)
                    .filter(|n| !matches!(n.kind, NodeKind::Null))
                    .map(|n| match &n.kind {
                        NodeKind::Str { value, .. } => Ok(value.clone()),
                        _ => Ok(n.to_value().to_string()),
                    })
                    .transpose()
            };
            let flag = |key: &str, default: bool| match item.get(key).map(|n| &n.kind) {
                Some(NodeKind::Bool(b)) => *b,
                Some(NodeKind::Str { value, .. }) => crate::config::truthy(value),
                _ => default,
            };
            let default = text("default")?;
            let encrypt = text("encrypt")?;
            let answer = match &self.opts.prompter {
                Some(Prompter(ask)) => {
                    let message = match (text("prompt")?, &default) {
                        (Some(p), Some(d)) => format!("{p} [{d}]: "),
                        (Some(p), None) => format!("{p}: "),
                        (None, _) => format!("input for {name}: "),
                    };
                    let q = VarPrompt {
                        name: name.clone(),
                        message,
                        private: flag("private", true),
                        confirm: flag("confirm", false),
                    };
                    let a = ask(&q).map_err(|e| {
                        item.error(format!("reading the answer to `vars_prompt` {name}: {e}"))
                    })?;
                    Some(a).filter(|a| !a.is_empty())
                }
                None => None,
            };
            let value = answer.or(default.clone());
            if let (Some(algo), Some(v)) = (&encrypt, &value) {
                let salt = text("salt")?;
                let salt_size = text("salt_size")?.and_then(|s| s.trim().parse().ok());
                let hashed = crate::template::crypt_hash(v, algo, salt.as_deref(), salt_size)
                    .map_err(|e| {
                        item.error(format!("`vars_prompt` {name}: {e}"))
                            .hint("Keel hashes with sha512_crypt and sha256_crypt")
                    })?;
                vars.insert(name, minijinja::Value::from(hashed));
                continue;
            }
            if let Some(v) = value.filter(|_| self.opts.prompter.is_some()) {
                vars.insert(name, minijinja::Value::from(v));
                continue;
            }
            match item.get("default") {
                Some(d) => {
                    vars.insert(name, d.to_value());
                }
                None => {
                    // ansible-playbook without a terminal to ask sets the
                    // string "None" (a trap): do the same, and say so.
                    self.warnings.push(
                        Diagnostic::new(format!(
                            "`vars_prompt` asks for `{name}`, which has no default: with nothing to answer it, it is the string \"None\", as in ansible-playbook"
                        ))
                        .at(item.span())
                        .hint(format!("Keel never prompts: pass it with `-e {name}=...` or give the prompt a `default`")),
                    );
                    vars.insert(name, minijinja::Value::from("None"));
                }
            }
        }
        Ok(())
    }

    /// Loads `vars_files` in order; a nested list is "first one found".
    fn vars_files(
        &mut self,
        node: &Node,
        dir: &Path,
        vars: &VarMap,
    ) -> Result<(VarMap, Vec<plan::VarsFileLayer>), Diagnostic> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Null => vec![],
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut ctx = vars.clone();
        ctx.extend(
            self.opts
                .extra_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut out = VarMap::new();
        // In file order; only used when some entry needs host variables.
        let mut layers: Vec<plan::VarsFileLayer> = Vec::new();
        let mut deferred = false;
        'items: for item in items {
            let candidates: Vec<&Node> = match &item.kind {
                NodeKind::Seq(c) => c.iter().collect(),
                _ => vec![item],
            };
            let mut found = None;
            let mut tried = Vec::new();
            for c in &candidates {
                let file = raw::string(c, "vars_files")?;
                let file = match render_static(&file, &ctx, c, "vars_files") {
                    Ok(f) => f,
                    // Names that need facts, inventory vars or lookups are
                    // resolved per host when the play starts, as in Ansible.
                    Err(_) => {
                        let names = candidates
                            .iter()
                            .map(|c| raw::string(c, "vars_files"))
                            .collect::<Result<Vec<_>, _>>()?;
                        layers.push(plan::VarsFileLayer::Deferred {
                            candidates: names,
                            span: item.span(),
                        });
                        deferred = true;
                        continue 'items;
                    }
                };
                let path = if Path::new(&file).is_absolute() {
                    PathBuf::from(&file)
                } else {
                    dir.join(&file)
                };
                if path.is_file() {
                    found = Some(path);
                    break;
                }
                tried.push(path.display().to_string());
            }
            let Some(path) = found else {
                return Err(item
                    .error("vars file not found")
                    .hint(format!("looked for: {}", tried.join(", "))));
            };
            let loaded = roles::load_vars_file(&path)?;
            ctx.extend(loaded.iter().map(|(k, v)| (k.clone(), v.clone())));
            layers.push(plan::VarsFileLayer::Loaded(Arc::new(loaded.clone())));
            out.extend(loaded);
        }
        if !deferred {
            layers.clear();
        }
        Ok((out, layers))
    }

    // ---------------------------------------------------------------- tasks

    /// Resolves a task list under `inh`.
    pub(crate) fn tasks(
        &mut self,
        nodes: &[Node],
        inh: &Inherit,
    ) -> Result<Vec<plan::Node>, Diagnostic> {
        let mut out = Vec::new();
        for n in nodes {
            self.task(n, inh, &mut out)?;
        }
        Ok(out)
    }

    fn task(
        &mut self,
        node: &Node,
        inh: &Inherit,
        out: &mut Vec<plan::Node>,
    ) -> Result<(), Diagnostic> {
        let rt = raw::read_task(node, &mut self.warnings, false, &mut self.modules)?;
        match rt.kind {
            RawKind::Block { block, rescue, always } => {
                let child = inh.child(&rt.kw);
                let b = Block {
                    name: rt.kw.name.clone(),
                    span: node.span(),
                    block: self.tasks(raw::task_list(Some(block), "block")?, &child)?,
                    rescue: self.tasks(raw::task_list(rescue, "rescue")?, &child)?,
                    always: self.tasks(raw::task_list(always, "always")?, &child)?,
                    when: rt.kw.when.clone(),
                    tags: rt.kw.tags.clone(),
                };
                out.push(plan::Node::Block(Arc::new(b)));
            }
            RawKind::Task { action, action_as_written, args, action_node, local } => match action.as_str() {
                "import_tasks" => {
                    no_loop(&rt.kw, action_node, "import_tasks", "include_tasks")?;
                    no_apply(&args, action_node, &action_as_written)?;
                    let file = include_file(&args, node, &action_as_written, "import_tasks")?;
                    let path = self.import_path(&file, inh, &rt.kw, action_node)?;
                    let children = load_task_file(&path)?;
                    let mut child = inh.child(&rt.kw);
                    child.file_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    for n in raw::task_list(Some(&children), "the imported file")? {
                        self.task(n, &child, out)?;
                    }
                }
                "import_role" => {
                    no_loop(&rt.kw, action_node, "import_role", "include_role")?;
                    no_apply(&args, action_node, &action_as_written)?;
                    let mut files = RoleFiles::from_args(&args, action_node)?;
                    let name = files.name.clone().ok_or_else(|| action_node.error("`import_role` needs `name`"))?;
                    let name = self.render_import(&name, inh, &rt.kw, action_node, "import_role")?;
                    // The chosen files are templated at load time too, with
                    // play, task and extra vars.
                    for f in [&mut files.tasks_from, &mut files.vars_from, &mut files.defaults_from, &mut files.handlers_from] {
                        if let Some(v) = f.as_ref() {
                            *f = Some(self.render_import(v, inh, &rt.kw, action_node, "import_role")?);
                        }
                    }
                    let entry = RoleEntry { name, span: action_node.span(), params: VarMap::new(), kw: Keywords::default() };
                    let child = inh.child(&rt.kw);
                    self.role(&entry, &child, &files, false, RoleVia::Task(inh.role.as_ref()), out)?;
                }
                "import_playbook" => {
                    return Err(action_node
                        .error("`import_playbook` is only valid at the top level of a playbook, next to plays")
                        .hint("use `import_tasks` to pull tasks into a play"))
                }
                "include_tasks" | "include_role" => {
                    let target = match action.as_str() {
                        "include_tasks" => IncludeTarget::Tasks {
                            file: include_file(&args, node, &action_as_written, "include_tasks")?,
                            base_dir: inh.file_dir.clone(),
                        },
                        _ => {
                            let f = RoleFiles::from_args(&args, action_node)?;
                            IncludeTarget::Role {
                                name: f.name.ok_or_else(|| action_node.error("`include_role` needs `name`"))?,
                                tasks_from: f.tasks_from,
                                vars_from: f.vars_from,
                                defaults_from: f.defaults_from,
                            }
                        }
                    };
                    let t = self.build_task(node, rt.kw, inh, action, action_as_written, args, local, Some(target))?;
                    out.push(plan::Node::Include(Arc::new(t)));
                }
                _ => {
                    let t = self.build_task(node, rt.kw, inh, action, action_as_written, args, local, None)?;
                    out.push(plan::Node::Task(Arc::new(t)));
                }
            },
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build_task(
        &mut self,
        node: &Node,
        kw: Keywords,
        inh: &Inherit,
        action: String,
        action_as_written: String,
        args: VarMap,
        local: bool,
        include: Option<IncludeTarget>,
    ) -> Result<Task, Diagnostic> {
        let c = inh.child(&kw);
        let python = self.python_module(&action_as_written, node)?;
        let mut delegate_to = c.delegate_to;
        if local {
            delegate_to = Some("localhost".into());
        }
        let tags = self.templated_tags(c.tags.clone(), inh, &kw);
        let retries = match (&kw.retries, &kw.until) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(_)) => Some(Value::from(3)),
            _ => None,
        };
        Ok(Task {
            id: self.next_id(),
            name: kw.name,
            action,
            action_as_written,
            python,
            args,
            span: node.span(),
            when: c.when,
            loop_: kw.loop_,
            loop_control: kw.loop_control,
            register: kw.register,
            notify: c.notify,
            tags,
            changed_when: kw.changed_when,
            failed_when: kw.failed_when,
            ignore_errors: c.ignore_errors,
            ignore_unreachable: c.ignore_unreachable,
            until: kw.until,
            retries,
            delay: kw.delay,
            become_: c.become_,
            environment: c.environment,
            no_log: c.no_log,
            check_mode: c.check_mode,
            diff: c.diff,
            delegate_to,
            delegate_facts: c.delegate_facts.unwrap_or(false),
            run_once: c.run_once.unwrap_or(false),
            throttle: c.throttle,
            timeout: c.timeout,
            any_errors_fatal: c.any_errors_fatal,
            vars: Arc::new(c.vars),
            async_: kw.async_,
            poll: kw.poll,
            role: c.role,
            include,
            file_dir: c.file_dir,
            late: c.late,
        })
    }

    /// The Python module a task runs when its name is not (or, from a
    /// `library/` dir, shadows) a native module; a module that was found
    /// but cannot run is an error here, before anything connects.
    fn python_module(
        &mut self,
        written: &str,
        node: &Node,
    ) -> Result<Option<Arc<PyModule>>, Diagnostic> {
        match self.modules.resolve(written) {
            Resolution::Python(m) => Ok(Some(m)),
            Resolution::Native | Resolution::NativeAs(_) | Resolution::NotFound(_) => Ok(None),
            Resolution::Unusable(e) => Err(node
                .error(format!("cannot run module '{written}': {e}"))
                .hint("Keel runs a module it has no native port of with the host's Python, packed as Ansible packs it")),
            Resolution::ActionPluginOnly(p) => Err(node
                .error(format!("couldn't resolve module/action '{written}'"))
                .hint(format!(
                    "{} is an action plugin, controller-side Python that runs inside Ansible itself; Keel runs modules, not action plugins",
                    p.display()
                ))),
        }
    }

    /// Where a static `import_tasks` file is: next to the importing file,
    /// then in the role's `tasks/`, then in the playbook directory.
    fn import_path(
        &self,
        file: &str,
        inh: &Inherit,
        kw: &Keywords,
        node: &Node,
    ) -> Result<PathBuf, Diagnostic> {
        let file = self.render_import(file, inh, kw, node, "import_tasks")?;
        if Path::new(&file).is_absolute() {
            return Ok(PathBuf::from(file));
        }
        let mut candidates = vec![inh.file_dir.join(&file)];
        if let Some(r) = &inh.role {
            // ansible-core's `path_dwim_relative` in a role: its `tasks/`,
            // then the role's own directory (`tasks/x.yml` from a handler).
            candidates.push(r.path.join("tasks").join(&file));
            candidates.push(r.path.join(&file));
        }
        candidates.push(self.playbook_dir.join(&file));
        for c in &candidates {
            if c.is_file() {
                return Ok(c.clone());
            }
        }
        let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        // Inside a dynamic include this fails the hosts, not the run.
        self.file_not_found.set(true);
        Err(node
            .error(file_not_found(candidates.last().expect("one candidate")))
            .hint(format!("looked in: {}", list.join(", "))))
    }

    /// A role's parameters as its tasks see them: its own, over those of the
    /// roles it is a dependency of.
    fn chain_params(&self, via: RoleVia<'_>, inh: &Inherit, entry: &RoleEntry) -> VarMap {
        let mut params = match via {
            RoleVia::Dependency => inh.parent_role_params.clone(),
            _ => VarMap::new(),
        };
        params.extend(entry.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        params
    }

    /// Templates a static import argument with what is known at load time:
    /// play vars, vars_files, enclosing vars and extra vars.
    fn render_import(
        &self,
        s: &str,
        inh: &Inherit,
        kw: &Keywords,
        node: &Node,
        what: &str,
    ) -> Result<String, Diagnostic> {
        if !crate::template::is_template(s) {
            return Ok(s.to_string());
        }
        render_static(s, &self.load_time_vars(inh, kw), node, what)
    }

    /// A task's tags with templated ones (`tags: "{{ the_tags }}"`)
    /// templated with what is known at load time (play vars, vars_files,
    /// enclosing vars, extra vars), as ansible-playbook does when it lists
    /// and selects tasks. A template that needs more stays as written.
    fn templated_tags(&self, tags: Vec<String>, inh: &Inherit, kw: &Keywords) -> Vec<String> {
        if !tags.iter().any(|t| crate::template::is_template(t)) {
            return tags;
        }
        let vars = self.load_time_vars(inh, kw);
        let mut scope = crate::template::Scope::new();
        scope.push(std::sync::Arc::new(vars));
        let templar = crate::template::Templar::new();
        let origin = crate::template::TemplateOrigin::default();
        let mut out: Vec<String> = Vec::new();
        let mut push = |t: &str| {
            for t in t.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !out.iter().any(|o| o == t) {
                    out.push(t.to_string());
                }
            }
        };
        for t in &tags {
            if !crate::template::is_template(t) {
                push(t);
                continue;
            }
            match templar.render_str(t, &scope, &origin) {
                Ok(v) if v.as_str().is_none() && v.try_iter().is_ok() => {
                    for item in v.try_iter().into_iter().flatten() {
                        push(&crate::template::display_text(&item));
                    }
                }
                Ok(v) => push(&crate::template::display_text(&v)),
                Err(_) => push(t),
            }
        }
        out
    }

    /// What a template can see at load time (see [`Self::render_import`]).
    fn load_time_vars(&self, inh: &Inherit, kw: &Keywords) -> VarMap {
        let mut ctx = self.static_vars.clone();
        // The magic variables that exist before any host does.
        let dir = |p: &Path| Value::from(p.display().to_string());
        ctx.insert("playbook_dir".into(), dir(&self.playbook_dir));
        if let Some(r) = &inh.role {
            ctx.insert("role_path".into(), dir(&r.path));
            ctx.insert("role_name".into(), Value::from(r.name.as_str()));
            ctx.insert("ansible_role_name".into(), Value::from(r.name.as_str()));
            ctx.extend(r.defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            ctx.extend(r.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            ctx.extend(r.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        ctx.extend(inh.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        ctx.extend(kw.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        ctx.extend(
            self.opts
                .extra_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        ctx
    }

    /// Handlers: tasks whose names (and `listen` topics) can be notified.
    /// Blocks and `import_tasks` in a handler list are flattened.
    /// Each explicit `block` is a handler block of its own, and so is each run
    /// of handlers between them (as ansible-core's `load_list_of_blocks`
    /// groups them); see [`Handler::block`].
    fn handlers(&mut self, nodes: &[Node], inh: &Inherit) -> Result<Vec<Arc<Handler>>, Diagnostic> {
        let mut out = Vec::new();
        let mut implicit = None;
        for n in nodes {
            let block = if n.get("block").is_some() {
                implicit = None;
                self.next_handler_block()
            } else {
                match implicit {
                    Some(b) => b,
                    None => *implicit.insert(self.next_handler_block()),
                }
            };
            self.handler(n, inh, block, false, &mut out)?;
        }
        Ok(out)
    }

    fn next_handler_block(&mut self) -> u32 {
        self.handler_blocks += 1;
        self.handler_blocks
    }

    fn handler(
        &mut self,
        node: &Node,
        inh: &Inherit,
        block_id: u32,
        in_block: bool,
        out: &mut Vec<Arc<Handler>>,
    ) -> Result<(), Diagnostic> {
        let rt = raw::read_task(node, &mut self.warnings, true, &mut self.modules)?;
        match rt.kind {
            // A handler list's own entries may be blocks (ansible-core's
            // handler blocks); a block inside one is refused, as there.
            RawKind::Block { .. } if in_block => {
                return Err(node.error("Using a block as a handler is not supported."));
            }
            RawKind::Block {
                block,
                rescue,
                always,
            } => {
                let child = inh.child(&rt.kw);
                for list in [Some(block), rescue, always] {
                    for n in raw::task_list(list, "block")? {
                        self.handler(n, &child, block_id, true, out)?;
                    }
                }
            }
            RawKind::Task {
                action,
                action_as_written,
                args,
                action_node,
                local,
            } => {
                if action == "import_tasks" {
                    let file = include_file(&args, node, &action_as_written, "import_tasks")?;
                    let path = self.import_path(&file, inh, &rt.kw, action_node)?;
                    let children = load_task_file(&path)?;
                    let mut child = inh.child(&rt.kw);
                    child.file_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    for n in raw::task_list(Some(&children), "the imported file")? {
                        self.handler(n, &child, block_id, false, out)?;
                    }
                    return Ok(());
                }
                if matches!(action.as_str(), "include_role" | "import_role") {
                    return Err(node.error(format!(
                        "Using '{action_as_written}' as a handler is not supported."
                    )));
                }
                let include = match action.as_str() {
                    "include_tasks" => Some(IncludeTarget::Tasks {
                        file: include_file(&args, node, &action_as_written, "include_tasks")?,
                        base_dir: inh.file_dir.clone(),
                    }),
                    _ => None,
                };
                // ansible-core's `Handler.get_name()` with and without the
                // role's FQCN, and `_validate_listen`'s role-prefixed topics.
                let role_names = inh
                    .role
                    .as_ref()
                    .map(|r| r.notify_names())
                    .unwrap_or_default();
                let with_roles = |items: &[String]| {
                    let mut v = Vec::new();
                    union(&mut v, items);
                    for r in &role_names {
                        let prefixed: Vec<String> =
                            items.iter().map(|i| format!("{r} : {i}")).collect();
                        union(&mut v, &prefixed);
                    }
                    v
                };
                let names = with_roles(rt.kw.name.as_slice());
                let listen = with_roles(&rt.kw.listen);
                if names.is_empty() && listen.is_empty() {
                    self.warnings.push(
                        node.error(
                            "this handler has no `name` or `listen`, so nothing can notify it",
                        ),
                    );
                }
                let task = self.build_task(
                    node,
                    rt.kw,
                    inh,
                    action,
                    action_as_written,
                    args,
                    local,
                    include,
                )?;
                out.push(Arc::new(Handler {
                    task: Arc::new(task),
                    names,
                    listen,
                    block: block_id,
                }));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- roles

    /// Expands one role (dependencies first) into `out`; its handlers go to
    /// the play's role handlers. `dedup` applies Ansible's rule for `roles:`
    /// and dependencies: the same role with the same parameters runs once
    /// unless it allows duplicates.
    pub(crate) fn role(
        &mut self,
        entry: &RoleEntry,
        inh: &Inherit,
        files: &RoleFiles,
        dedup: bool,
        via: RoleVia<'_>,
        out: &mut Vec<plan::Node>,
    ) -> Result<Option<Arc<RoleInstance>>, Diagnostic> {
        let (path, collection) = self.find_role(&entry.name, &entry.span)?;
        if collection.is_none() {
            self.modules.add_base(&path);
        }
        let meta = self.meta(&path)?;
        // The role's tasks, handlers and dependencies use the role's own
        // search list, not the play's.
        let list = role_collection_list(collection.as_deref(), &meta.collections);
        let outer = self.modules.set_collection_list(list);
        let r = self.role_body(entry, inh, files, dedup, via, out, path, meta, collection);
        self.modules.set_collection_list(outer);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn role_body(
        &mut self,
        entry: &RoleEntry,
        inh: &Inherit,
        files: &RoleFiles,
        dedup: bool,
        via: RoleVia<'_>,
        out: &mut Vec<plan::Node>,
        path: PathBuf,
        meta: Arc<roles::RoleMeta>,
        collection: Option<String>,
    ) -> Result<Option<Arc<RoleInstance>>, Diagnostic> {
        // Cycle check over the dependency graph, before recursing.
        let first_visit = !self.graph.contains(&path);
        let from = self.graph.node(&path, &entry.name);
        if first_visit {
            self.add_deps_to_graph(from, &path, &meta)?;
            self.graph.check_acyclic(from)?;
        }

        // ansible-core's `from_include`: the role was named by an
        // `include_role`/`import_role` task (part of its identity).
        let from_include = matches!(via, RoleVia::Task(_));
        // Run-time deduplication (ansible-core's role cache): a role use
        // that does not allow duplicates is skipped on a host where one with
        // the same identity has already completed. `include_role` and
        // `import_role` allow duplicates unless told otherwise (their
        // `allow_duplicates` overrides the role's meta); play roles and
        // dependencies follow the meta.
        let allow = match via {
            RoleVia::Task(_) => files.allow_duplicates.unwrap_or(true),
            _ => meta.allow_duplicates,
        };
        let dedup_key = (!allow).then(|| {
            format!(
                "{}|{}|{:?}|{:?}|{from_include}",
                path.display(),
                params_key(&entry.params, files),
                entry.kw.when,
                entry.kw.tags,
            )
        });
        // A role use the same as an earlier one is still expanded: whether
        // it runs is decided per host at run time (the earlier one may have
        // been skipped or failed there). Its handlers are not listed twice.
        let key = (path.clone(), params_key(&entry.params, files));
        let first_use = !dedup || meta.allow_duplicates || self.seen_roles.insert(key);

        // The roles that bring this one in, outermost first.
        let parents = match &inh.role {
            Some(r) => r.chain(),
            None => inh.role_parents.clone(),
        };
        let kw_inh = inh.child(&entry.kw);
        for dep in &meta.dependencies {
            // Dependencies inherit the entry's keywords but are their own role.
            let mut dep_inh = kw_inh.clone();
            dep_inh.role = None;
            dep_inh.role_parents = parents.iter().cloned().chain([path.clone()]).collect();
            dep_inh.parent_role_params = self.chain_params(via, inh, entry);
            self.role(
                dep,
                &dep_inh,
                &RoleFiles::default(),
                true,
                RoleVia::Dependency,
                out,
            )?;
        }

        let defaults = match roles::role_file(&path, "defaults", files.defaults_from.as_deref()) {
            Some(f) => roles::load_vars_file(&f)?,
            None => VarMap::new(),
        };
        let vars = match roles::role_file(&path, "vars", files.vars_from.as_deref()) {
            Some(f) => roles::load_vars_file(&f)?,
            None => VarMap::new(),
        };
        let name = Path::new(&entry.name)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| entry.name.clone());
        // A bare name found in a collection of the search list is that
        // collection's role, and ansible-core names it by its FQCN.
        let name = match &collection {
            Some(c) if !name.contains('.') => format!("{c}.{name}"),
            _ => name,
        };
        // ansible-core lists a play role each time it is brought in; a
        // dependency once.
        match via {
            RoleVia::Dependency if !self.dependent_role_names.contains(&name) => {
                self.dependent_role_names.push(name.clone())
            }
            RoleVia::Dependency => {}
            _ => self.play_role_names.push(name.clone()),
        }
        // The roles whose tasks imported or included this one, innermost
        // first (dependencies and play roles have none).
        let include_parents = match via {
            RoleVia::Task(Some(p)) => std::iter::once((p.name.clone(), p.path.clone()))
                .chain(p.include_parents.iter().cloned())
                .collect(),
            _ => Vec::new(),
        };
        self.exported_role_defaults
            .extend(defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.exported_role_vars
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (chain_defaults, chain_vars) = match via {
            RoleVia::Task(Some(r)) => (
                r.chain_defaults
                    .iter()
                    .cloned()
                    .chain([r.defaults.clone()])
                    .collect(),
                r.chain_vars
                    .iter()
                    .cloned()
                    .chain([r.vars.clone()])
                    .collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let instance = Arc::new(RoleInstance {
            name,
            collection,
            chain_defaults,
            chain_vars,
            include_parents,
            path: path.clone(),
            defaults: Arc::new(defaults),
            vars: Arc::new(vars),
            params: Arc::new(self.chain_params(via, inh, entry)),
            parents,
            dedup_key,
        });
        let mut role_inh = kw_inh;
        role_inh.role = Some(instance.clone());

        match roles::role_file(&path, "tasks", files.tasks_from.as_deref()) {
            Some(f) => {
                let mut t_inh = role_inh.clone();
                t_inh.file_dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                let node = load_task_file(&f)?;
                out.extend(
                    self.tasks(raw::task_list(Some(&node), "a role's tasks file")?, &t_inh)?,
                );
            }
            None if files.tasks_from.is_some() => {
                return Err(Diagnostic::new(format!(
                    "role '{}' has no tasks file '{}' in {}",
                    entry.name,
                    files.tasks_from.as_deref().unwrap_or("main"),
                    path.join("tasks").display()
                ))
                .at(entry.span.clone()))
            }
            None => {}
        }
        let handlers_file = roles::role_file(&path, "handlers", files.handlers_from.as_deref())
            .filter(|_| first_use);
        if let Some(f) = handlers_file {
            let mut h_inh = role_inh.clone();
            h_inh.file_dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
            // Handlers are not filtered by the role entry's tags or conditions
            // at notification time in Ansible; they inherit them anyway.
            let node = load_task_file(&f)?;
            let hs = self.handlers(
                raw::task_list(Some(&node), "a role's handlers file")?,
                &h_inh,
            )?;
            self.role_handlers.extend(hs);
        }
        Ok(Some(instance))
    }

    /// A role's directory: a collection's role for `ns.coll.role` (or a bare
    /// name found in a collection of the search list), else the roles path.
    /// Also returns the role's collection, if it is in one.
    fn find_role(
        &self,
        name: &str,
        span: &crate::diag::Span,
    ) -> Result<(PathBuf, Option<String>), Diagnostic> {
        if !name.contains('/') {
            if let Some((dir, coll)) = self.modules.collection_role(name) {
                return Ok((dir, Some(coll)));
            }
            if name.split('.').count() == 3 {
                let (coll, role) = name.rsplit_once('.').expect("three parts");
                let roots: Vec<String> = self
                    .modules
                    .collection_roots()
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect();
                let where_ = match coll
                    .split_once('.')
                    .and_then(|(ns, c)| self.modules.collection_dir(ns, c))
                {
                    Some(d) => format!(
                        "the collection {coll} at {} has no role {role}",
                        d.display()
                    ),
                    None => format!(
                        "the collection {coll} is not installed (collection paths: {})",
                        if roots.is_empty() {
                            "none exists".to_string()
                        } else {
                            roots.join(", ")
                        }
                    ),
                };
                let found_legacy =
                    roles::find_role(name, &self.role_search, &self.playbook_dir, span);
                return match found_legacy {
                    Ok(p) => Ok((p, None)),
                    Err(_) => Err(Diagnostic::new(format!("the role '{name}' was not found"))
                        .at(span.clone())
                        .hint(format!("{where_}; install it with `keel galaxy install`"))),
                };
            }
        }
        roles::find_role(name, &self.role_search, &self.playbook_dir, span).map(|p| (p, None))
    }

    /// `meta/main.yml` of a role, read once per resolve.
    fn meta(&mut self, path: &Path) -> Result<Arc<roles::RoleMeta>, Diagnostic> {
        if let Some(m) = self.metas.get(path) {
            return Ok(m.clone());
        }
        let m = Arc::new(roles::load_meta(path, &mut self.warnings)?);
        self.metas.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    fn add_deps_to_graph(
        &mut self,
        from: usize,
        path: &Path,
        meta: &roles::RoleMeta,
    ) -> Result<(), Diagnostic> {
        for dep in &meta.dependencies {
            let (dep_path, _) = self.find_role(&dep.name, &dep.span)?;
            let seen = self.graph.contains(&dep_path);
            let to = self.graph.node(&dep_path, &dep.name);
            self.graph.add_dependency(from, to, dep.span.clone());
            if !seen {
                let dep_meta = self.meta(&dep_path)?;
                self.add_deps_to_graph(to, &dep_path, &dep_meta)?;
            }
        }
        let _ = path;
        Ok(())
    }

    // ---------------------------------------------------------------- includes

    /// Loads a dynamic include for the executor. `target` is the include
    /// task's [`IncludeTarget`] with its strings already templated for the
    /// host. Children inherit the include's vars, become, environment and
    /// role, but not its `when` or `tags` (those were evaluated on the include
    /// itself); `apply:` keywords are applied to every child.
    pub fn load_include(
        &mut self,
        play: &Play,
        include: &Task,
        target: &IncludeTarget,
    ) -> Result<Included, IncludeError> {
        self.start_play(&play.playbook_dir);
        // The including task's role brought its `library/` in at load time.
        if let Some(r) = &include.role {
            self.modules.add_base(&r.path);
        }
        // Bare names in what the include brings in are searched as they
        // were where the include is written: the role's own search list
        // inside a role, else the play's `collections:` (which also finds
        // an `include_role` of a bare role name inside those collections).
        let list = match &include.role {
            Some(r) => {
                let meta = self.meta(&r.path)?;
                role_collection_list(r.collection.as_deref(), &meta.collections)
            }
            None => play.collections.clone(),
        };
        self.modules.set_collection_list(list);
        let mut vars = (*play.vars).clone();
        vars.extend(play.vars_files.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.static_vars = vars;

        let mut inh = Inherit {
            // The play's tags reach included tasks (through Ansible's parent
            // chain); the include's own tags do not.
            tags: play.tags.clone(),
            vars: (*include.vars).clone(),
            become_: include.become_.clone(),
            environment: include.environment.clone(),
            ignore_errors: include.ignore_errors,
            ignore_unreachable: include.ignore_unreachable,
            no_log: include.no_log,
            check_mode: include.check_mode,
            diff: include.diff,
            delegate_to: include.delegate_to.clone(),
            any_errors_fatal: include.any_errors_fatal,
            role: include.role.clone(),
            file_dir: include.file_dir.clone(),
            late: include.late.clone(),
            ..Inherit::default()
        };
        if let Some(apply) = include.args.get("apply") {
            inh = inh.child(&apply_keywords(apply, include)?);
        }
        let mut nodes = Vec::new();
        match target {
            IncludeTarget::Tasks { file, base_dir } => {
                let mut candidates = vec![base_dir.join(file)];
                if let Some(r) = &include.role {
                    candidates.push(r.path.join("tasks").join(file));
                    candidates.push(r.path.join(file));
                }
                candidates.push(play.playbook_dir.join(file));
                let path = if Path::new(file).is_absolute() {
                    PathBuf::from(file)
                } else {
                    candidates
                        .iter()
                        .find(|p| p.is_file())
                        .cloned()
                        .ok_or_else(|| {
                            let list: Vec<String> =
                                candidates.iter().map(|p| p.display().to_string()).collect();
                            IncludeError::Missing(
                                Diagnostic::new(file_not_found(
                                    candidates.last().expect("one candidate"),
                                ))
                                .at(include.span.clone())
                                .hint(format!("looked in: {}", list.join(", "))),
                            )
                        })?
                };
                let node = load_task_file(&path)?;
                if !node.is_null() && node.as_seq().is_none() {
                    // ansible-core's own words; a run-time error, not a
                    // parser error.
                    return Err(IncludeError::Missing(
                        node.error("included task files must contain a list of tasks"),
                    ));
                }
                inh.file_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                self.file_not_found.set(false);
                nodes = self
                    .tasks(raw::task_list(Some(&node), "the included file")?, &inh)
                    .map_err(|d| {
                        // An `import_tasks` of a missing file in it is
                        // ansible-core's AnsibleFileNotFound, not a parser
                        // error.
                        if self.file_not_found.get() {
                            IncludeError::Missing(d)
                        } else {
                            IncludeError::Invalid(d)
                        }
                    })?;
                Ok(Included {
                    nodes,
                    role: None,
                    handlers: vec![],
                })
            }
            IncludeTarget::Role {
                name,
                tasks_from,
                vars_from,
                defaults_from,
            } => {
                let files = RoleFiles {
                    name: Some(name.clone()),
                    tasks_from: tasks_from.clone(),
                    vars_from: vars_from.clone(),
                    defaults_from: defaults_from.clone(),
                    handlers_from: include
                        .args
                        .get("handlers_from")
                        .and_then(|v| v.as_str().map(str::to_string)),
                    allow_duplicates: include.args.get("allow_duplicates").and_then(static_bool),
                };
                let entry = RoleEntry {
                    name: name.clone(),
                    span: include.span.clone(),
                    params: VarMap::new(),
                    kw: Keywords::default(),
                };
                // A role that is not there fails the hosts; anything wrong
                // inside it (a missing `tasks_from` file included) stops
                // the run, as in ansible-core.
                self.find_role(name, &include.span)
                    .map_err(IncludeError::Missing)?;
                inh.role_parents = include.role.as_ref().map(|r| r.chain()).unwrap_or_default();
                inh.role = None;
                let via = RoleVia::Task(include.role.as_ref());
                let role = self.role(&entry, &inh, &files, false, via, &mut nodes)?;
                let handlers = std::mem::take(&mut self.role_handlers);
                Ok(Included {
                    nodes,
                    role,
                    handlers,
                })
            }
        }
    }
}

/// `apply:` on an include: keywords applied to every included task.
fn apply_keywords(apply: &Value, include: &Task) -> Result<Keywords, Diagnostic> {
    let text = serde_json::to_string(apply).unwrap_or_default();
    let node = yaml::load_str(
        &include.span.path().display().to_string(),
        &text,
        &Default::default(),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Diagnostic::new("empty `apply`").at(include.span.clone()))?;
    let mut kw = Keywords::default();
    let mut warnings = Vec::new();
    for (k, v) in raw::mapping(&node, "`apply`").map_err(|e| Diagnostic {
        span: Some(include.span.clone()),
        ..e
    })? {
        let key = raw::key_string(k)?;
        if !keywords::accepts(BLOCK, &key)
            || !raw::read_keyword(&mut kw, &key, k, v, &mut warnings)?
        {
            return Err(Diagnostic::new(format!("`{key}` can't be used in `apply`"))
                .at(include.span.clone()));
        }
    }
    Ok(kw)
}

/// Which files of a role to use (`tasks_from` etc.), from import/include args.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleFiles {
    pub name: Option<String>,
    pub tasks_from: Option<String>,
    pub vars_from: Option<String>,
    pub defaults_from: Option<String>,
    pub handlers_from: Option<String>,
    /// `allow_duplicates` of `include_role`/`import_role`, when written as a
    /// plain boolean.
    pub allow_duplicates: Option<bool>,
}

impl RoleFiles {
    fn from_args(args: &VarMap, node: &Node) -> Result<RoleFiles, Diagnostic> {
        let mut f = RoleFiles::default();
        for (k, v) in args {
            let s = v.as_str().map(str::to_string);
            // ansible-core refuses a non-string file choice when it loads
            // the task, before any host runs it.
            if k.ends_with("_from") && s.is_none() && !v.is_none() && !v.is_undefined() {
                let kind = match v.kind() {
                    minijinja::value::ValueKind::Seq => "a list".to_string(),
                    minijinja::value::ValueKind::Map => "a mapping".to_string(),
                    other => format!("{other}"),
                };
                return Err(node.error(format!("Expected a string for {k} but got {kind} instead")));
            }
            match k.as_str() {
                "name" | "role" => f.name = s,
                "_raw_params" => f.name = f.name.take().or(s),
                "tasks_from" => f.tasks_from = s,
                "vars_from" => f.vars_from = s,
                "defaults_from" => f.defaults_from = s,
                "handlers_from" => f.handlers_from = s,
                "allow_duplicates" => f.allow_duplicates = static_bool(v),
                "apply" | "public" | "rolespec_validate" => {}
                other => {
                    const KEYS: &[&str] = &[
                        "name",
                        "tasks_from",
                        "vars_from",
                        "defaults_from",
                        "handlers_from",
                        "apply",
                        "public",
                        "allow_duplicates",
                    ];
                    let mut e = node.error(format!(
                        "`{other}` is not an option of import_role/include_role"
                    ));
                    if let Some(s) = suggest(other, KEYS.iter().copied()) {
                        e = e.hint(format!("did you mean `{s}`?"));
                    }
                    return Err(e);
                }
            }
        }
        Ok(f)
    }
}

/// A boolean role option as written, or templated with nothing but Jinja's
/// own (`"{{ False | bool }}"`); `None` when it needs variables.
fn static_bool(v: &Value) -> Option<bool> {
    match v.as_str() {
        Some(s) if crate::template::is_template(s) => crate::template::Templar::new()
            .render_str(s, &crate::template::Scope::new(), &Default::default())
            .ok()
            .map(|r| crate::template::to_bool(&r)),
        _ => Some(crate::template::to_bool(v)),
    }
}

/// The dedup key of a role use: its parameters and chosen files.
/// A `collections:` keyword's list of collection names.
fn collection_list(node: &Node) -> Result<Vec<String>, Diagnostic> {
    match &node.kind {
        NodeKind::Null => Ok(Vec::new()),
        NodeKind::Str { value, .. } => Ok(vec![value.clone()]),
        NodeKind::Seq(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    i.error(format!(
                        "`collections` must list collection names, found {}",
                        i.type_name()
                    ))
                })
            })
            .collect(),
        _ => Err(node.error(format!(
            "`collections` must be a list of collection names, found {}",
            node.type_name()
        ))),
    }
}

/// A role's search list as ansible-core builds it: its own collection first
/// (for a role inside one), then its `meta/main.yml` `collections:`, then
/// `ansible.builtin` (collection roles) or `ansible.legacy` (others) when
/// the list is not empty.
fn role_collection_list(own: Option<&str>, meta: &[String]) -> Vec<String> {
    let mut list: Vec<String> = own.map(str::to_string).into_iter().collect();
    for c in meta {
        if !list.contains(c) {
            list.push(c.clone());
        }
    }
    if !list.is_empty()
        && !list
            .iter()
            .any(|c| c == "ansible.builtin" || c == "ansible.legacy")
    {
        list.push(
            if own.is_some() {
                "ansible.builtin"
            } else {
                "ansible.legacy"
            }
            .to_string(),
        );
    }
    list
}

fn params_key(params: &VarMap, files: &RoleFiles) -> String {
    let p = serde_json::to_string(params).unwrap_or_default();
    format!(
        "{p}|{:?}|{:?}|{:?}",
        files.tasks_from, files.vars_from, files.defaults_from
    )
}

fn no_loop(kw: &Keywords, node: &Node, what: &str, instead: &str) -> Result<(), Diagnostic> {
    if kw.loop_.is_some() {
        return Err(node
            .error(format!("`{what}` is static and can't loop"))
            .hint(format!("use `{instead}`, which is loaded at run time")));
    }
    Ok(())
}

/// The file of an `import_tasks`/`include_tasks`: `file:` or free-form text.
/// `apply` is for dynamic includes only; ansible-core refuses it on an
/// import when it loads the task, in these words.
fn no_apply(args: &VarMap, node: &Node, action: &str) -> Result<(), Diagnostic> {
    if args.contains_key("apply") {
        return Err(node.error(format!("Invalid options for {action}: apply")));
    }
    Ok(())
}

/// `written` is the action as the task names it, which ansible-core's
/// message repeats (`ansible.builtin.include_tasks`).
fn include_file(
    args: &VarMap,
    node: &Node,
    written: &str,
    what: &str,
) -> Result<String, Diagnostic> {
    args.get("file")
        .or_else(|| args.get("_raw_params"))
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| {
            node.error(format!("No file specified for {written}"))
                .hint(format!("write `{what}: other.yml`"))
        })
}

/// ansible-core's words for a tasks file that is not there (its
/// AnsibleFileNotFound), naming the last place it looked.
fn file_not_found(path: &Path) -> String {
    let p = path.display();
    format!(
        "Could not find or access '{p}' on the Ansible Controller: Unable to retrieve file contents.\n\
         Could not find or access '{p}' on the Ansible Controller.\n\
         If you are using a module and expect the file to exist on the remote, see the remote_src option: \
         [Errno 2] No such file or directory: '{p}'"
    )
}

/// Loads a tasks file (a list of tasks, or empty).
pub(crate) fn load_task_file(path: &Path) -> Result<Node, Diagnostic> {
    yaml::load_one(path)
}

/// Templates a static path. Undefined variables are an error: static imports
/// are resolved before any host is known.
pub(crate) fn render_static(
    s: &str,
    vars: &VarMap,
    node: &Node,
    what: &str,
) -> Result<String, Diagnostic> {
    if !crate::template::is_template(s) {
        return Ok(s.to_string());
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let tmpl = env
        .template_from_str(s)
        .map_err(|e| node.error(format!("bad template in `{what}`: {e}")))?;
    let mut missing: Vec<String> = tmpl
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !vars.contains_key(v))
        .collect();
    missing.sort();
    if !missing.is_empty() {
        return Err(node
            .error(format!("undefined variable `{}` in the `{what}` path `{s}`", missing.join("`, `")))
            .hint(format!(
                "`{what}` is resolved when the playbook is loaded, where only play vars, vars_files and extra vars \
                 (-e) are known; pass it with -e, or use a dynamic include (`include_tasks`/`include_role`)"
            )));
    }
    let ctx = Value::from_pairs(
        vars.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
    );
    let mut out = tmpl
        .render(ctx.clone())
        .map_err(|e| node.error(format!("can't template `{what}` path `{s}`: {e}")))?;
    // A variable may hold another template (`a: "{{ b }}/x"`).
    for _ in 0..5 {
        if !crate::template::is_template(&out) {
            break;
        }
        out = env
            .render_str(&out, ctx.clone())
            .map_err(|e| node.error(format!("can't template `{what}` path `{s}`: {e}")))?;
    }
    Ok(out)
}

/// `serial`: a count, a percentage, or a list of either.
fn serial(node: &Node) -> Result<Vec<Serial>, Diagnostic> {
    let one = |n: &Node| -> Result<Serial, Diagnostic> {
        let bad = || {
            n.error(format!("bad `serial` value `{}`", raw::written_text(n)))
                .hint("use a number of hosts (`2`), a percentage (`30%`), or a list of them")
        };
        match &n.kind {
            NodeKind::Int(i) if *i >= 0 => Ok(Serial::Count(*i as usize)),
            NodeKind::Str { value, .. } => {
                let v = value.trim();
                if let Some(p) = v.strip_suffix('%') {
                    let f: f64 = p.trim().parse().map_err(|_| bad())?;
                    if !(0.0..=100.0).contains(&f) {
                        return Err(bad());
                    }
                    Ok(Serial::Percent(f))
                } else {
                    v.parse::<usize>().map(Serial::Count).map_err(|_| bad())
                }
            }
            _ => Err(bad()),
        }
    };
    match &node.kind {
        NodeKind::Null => Ok(vec![]),
        NodeKind::Seq(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(node)?]),
    }
}

/// `module_defaults`: module → args (or a list of such mappings).
fn module_defaults(node: &Node) -> Result<Vec<(String, VarMap)>, Diagnostic> {
    let mut out: Vec<(String, VarMap)> = Vec::new();
    let maps: Vec<&Node> = match &node.kind {
        NodeKind::Null => vec![],
        NodeKind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for m in maps {
        for (k, v) in raw::mapping(m, "`module_defaults`")? {
            let key = raw::key_string(k)?;
            let name = if key.starts_with("group/") {
                key.clone()
            } else {
                registry::canonical_name(&key).to_string()
            };
            out.push((name, raw::var_map(v, &key)?));
        }
    }
    Ok(out)
}
