//! Roles on disk: the search path, `main.yml` lookup in `tasks/`, `vars/`,
//! `defaults/`, `handlers/` and `meta/`, role entries (`- role: x` with
//! keywords and parameters), and the dependency graph that `resolve.rs`
//! checks for cycles (with petgraph) before it expands a play's roles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use petgraph::graphmap::DiGraphMap;

use super::keywords::{self, ROLE_ENTRY};
use super::raw::{self, Keywords};
use crate::diag::{Diagnostic, Span};
use crate::vars::VarMap;
use crate::yaml::{self, Node, NodeKind};

/// One `roles:` or `dependencies:` entry, read but not yet found on disk.
#[derive(Debug, Clone)]
pub struct RoleEntry {
    /// The name (or path) as written.
    pub name: String,
    pub span: Span,
    /// Role parameters: `vars:` plus any non-keyword key.
    pub params: VarMap,
    /// Keywords copied onto the role's tasks (`when`, `tags`, `become`...).
    pub kw: Keywords,
}

/// Reads a role entry: `common`, `{role: common, x: 1}` or `{name: common}`.
pub fn read_entry(node: &Node, warnings: &mut Vec<Diagnostic>) -> Result<RoleEntry, Diagnostic> {
    match &node.kind {
        NodeKind::Str { value, .. } => Ok(RoleEntry {
            name: value.clone(),
            span: node.span(),
            params: VarMap::new(),
            kw: Keywords::default(),
        }),
        NodeKind::Map(entries) => {
            let name_node = node
                .get("role")
                .or_else(|| node.get("name"))
                .ok_or_else(|| {
                    node.error("a role entry needs a `role:` (or `name:`) key")
                        .hint("write `- role: name_of_role`")
                })?;
            let name = raw::string(name_node, "role")?;
            let mut kw = Keywords::default();
            let mut params = VarMap::new();
            for (k, v) in entries {
                let key = raw::key_string(k)?;
                match key.as_str() {
                    "role" | "name" => {}
                    "vars" => params.extend(raw::var_map(v, "vars")?),
                    _ if keywords::accepts(ROLE_ENTRY, &key) => {
                        raw::read_keyword(&mut kw, &key, k, v, warnings)?;
                    }
                    _ => {
                        params.insert(key, v.to_value());
                    }
                }
            }
            // `connection:`/`remote_user:`/`port:` land in kw.vars; they are
            // parameters of the role like the rest.
            params.extend(std::mem::take(&mut kw.vars));
            Ok(RoleEntry {
                name,
                span: node.span(),
                params,
                kw,
            })
        }
        _ => Err(node.error(format!(
            "a role entry must be a name or a mapping, found {}",
            node.type_name()
        ))),
    }
}

/// Finds a role directory: an absolute name as it is; else `<dir>/<name>`
/// for each search directory (a name with `/` too, as ansible-core searches
/// it), and last a name with `/` as a path relative to `base`.
pub fn find_role(
    name: &str,
    search: &[PathBuf],
    base: &Path,
    span: &Span,
) -> Result<PathBuf, Diagnostic> {
    if Path::new(name).is_absolute() {
        let p = PathBuf::from(name);
        if p.is_dir() {
            return Ok(p);
        }
        return Err(Diagnostic::new(format!(
            "the role '{name}' was not found at {}",
            p.display()
        ))
        .at(span.clone()));
    }
    // A relative name with a `/` (`nested/dep_role`) is searched like any
    // other name, as ansible-core does, and only then taken as a path.
    for dir in search {
        let p = dir.join(name);
        if p.is_dir() {
            return Ok(p);
        }
    }
    if name.contains('/') && base.join(name).is_dir() {
        return Ok(base.join(name));
    }
    let searched: Vec<String> = search.iter().map(|p| p.display().to_string()).collect();
    Err(Diagnostic::new(format!("the role '{name}' was not found"))
        .at(span.clone())
        .hint(format!("searched: {}", searched.join(", "))))
}

/// `dir/sub/<base>` with `.yml`, `.yaml` or no extension (`main` by default).
pub fn role_file(role_dir: &Path, sub: &str, base: Option<&str>) -> Option<PathBuf> {
    let base = base.unwrap_or("main");
    let d = role_dir.join(sub);
    [
        format!("{base}.yml"),
        format!("{base}.yaml"),
        base.to_string(),
    ]
    .into_iter()
    .map(|f| d.join(f))
    .find(|p| p.is_file())
}

/// Loads a variables file (a mapping, or empty).
pub fn load_vars_file(path: &Path) -> Result<VarMap, Diagnostic> {
    let node = yaml::load_one(path)?;
    raw::var_map(&node, "a vars file").map_err(|e| {
        if node.as_map().is_none() && !node.is_null() {
            node.error(format!(
                "a vars file must hold a mapping, found {}",
                node.type_name()
            ))
        } else {
            e
        }
    })
}

/// What `meta/main.yml` says.
#[derive(Debug, Clone, Default)]
pub struct RoleMeta {
    pub dependencies: Vec<RoleEntry>,
    pub allow_duplicates: bool,
    /// The role's `collections:` search list.
    pub collections: Vec<String>,
}

pub fn load_meta(role_dir: &Path, warnings: &mut Vec<Diagnostic>) -> Result<RoleMeta, Diagnostic> {
    let Some(path) = role_file(role_dir, "meta", None) else {
        return Ok(RoleMeta::default());
    };
    let node = yaml::load_one(&path)?;
    if node.is_null() {
        return Ok(RoleMeta::default());
    }
    raw::mapping(&node, "`meta/main.yml`")?;
    let mut meta = RoleMeta::default();
    if let Some(a) = node.get("allow_duplicates") {
        meta.allow_duplicates = raw::boolean(a, "allow_duplicates")?;
    }
    if let Some(c) = node.get("collections") {
        match &c.kind {
            NodeKind::Null => {}
            NodeKind::Seq(items) => {
                for i in items {
                    meta.collections.push(raw::string(i, "collections")?);
                }
            }
            _ => {
                return Err(c.error(format!(
                    "`collections` must be a list of collection names, found {}",
                    c.type_name()
                )))
            }
        }
    }
    if let Some(deps) = node.get("dependencies") {
        if !deps.is_null() {
            let items = deps.as_seq().ok_or_else(|| {
                deps.error(format!(
                    "`dependencies` must be a list, found {}",
                    deps.type_name()
                ))
            })?;
            for d in items {
                meta.dependencies.push(read_entry(d, warnings)?);
            }
        }
    }
    Ok(meta)
}

/// The role dependency graph of one play, keyed by role directory.
#[derive(Default)]
pub struct RoleGraph {
    ids: HashMap<PathBuf, usize>,
    names: Vec<String>,
    graph: DiGraphMap<usize, ()>,
    /// Where each dependency edge was written.
    edge_spans: HashMap<(usize, usize), Span>,
}

impl RoleGraph {
    pub fn node(&mut self, path: &Path, name: &str) -> usize {
        if let Some(&id) = self.ids.get(path) {
            return id;
        }
        let id = self.names.len();
        self.ids.insert(path.to_path_buf(), id);
        self.names.push(name.to_string());
        self.graph.add_node(id);
        id
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.ids.contains_key(path)
    }

    pub fn add_dependency(&mut self, from: usize, to: usize, span: Span) {
        self.graph.add_edge(from, to, ());
        self.edge_spans.entry((from, to)).or_insert(span);
    }

    /// Reports a dependency cycle as `a -> b -> a`, at the entry that closes
    /// it. The cycle is shown from `from` (the role being expanded) when it
    /// lies on the cycle.
    pub fn check_acyclic(&self, from: usize) -> Result<(), Diagnostic> {
        let Err(cycle) = petgraph::algo::toposort(&self.graph, None) else {
            return Ok(());
        };
        let mut found = None;
        for start in [from, cycle.node_id()] {
            // Walk from `start` until we come back to it: a DFS keeping the path.
            let mut path = vec![start];
            let mut seen = std::collections::HashSet::new();
            if self.walk_back(start, start, &mut path, &mut seen) {
                found = Some(path);
                break;
            }
        }
        let Some(path) = found else {
            return Err(Diagnostic::new("role dependency cycle"));
        };
        let names: Vec<&str> = path.iter().map(|&i| self.names[i].as_str()).collect();
        let closing = (path[path.len() - 2], path[path.len() - 1]);
        Err(
            Diagnostic::new(format!("role dependency cycle: {}", names.join(" -> ")))
                .at_opt(self.edge_spans.get(&closing).cloned())
                .hint("remove one of these `dependencies:` entries in meta/main.yml"),
        )
    }

    fn walk_back(
        &self,
        at: usize,
        target: usize,
        path: &mut Vec<usize>,
        seen: &mut std::collections::HashSet<usize>,
    ) -> bool {
        let mut next: Vec<usize> = self.graph.neighbors(at).collect();
        next.sort_unstable();
        for n in next {
            if n == target {
                path.push(n);
                return true;
            }
            if seen.insert(n) {
                path.push(n);
                if self.walk_back(n, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
}
