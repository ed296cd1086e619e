//! The YAML inventory format, read as Ansible's `yaml` plugin reads it:
//! top-level keys are groups, each a mapping with optional `hosts`, `vars` and
//! `children` (child groups nest the same way, to any depth). A host's value is
//! its vars mapping or null. Unexpected keys are skipped with a warning.

use std::path::Path;

use minijinja::Value;

use super::{address, Inventory};
use crate::diag::Diagnostic;
use crate::yaml::{self, Node, NodeKind};

/// How reading a YAML inventory file ended, short of an error.
pub(super) enum Outcome {
    /// The file's groups and hosts are in the inventory (or it was empty).
    Parsed,
    /// ansible-core's `yaml` plugin refuses the file as a whole, and
    /// ansible-core then warns and goes on without it; the caller does the
    /// same. Nothing from the file was added. The diagnostic says why.
    Refused(Diagnostic),
}

pub(super) fn load(inv: &mut Inventory, path: &Path) -> Result<Outcome, Diagnostic> {
    let doc = yaml::load_one(path)?;
    match &doc.kind {
        NodeKind::Null => {
            inv.warnings.push(Diagnostic::new(format!(
                "skipping '{}': empty YAML inventory",
                path.display()
            )));
            Ok(Outcome::Parsed)
        }
        NodeKind::Map(entries) => {
            if doc.get("plugin").is_some() {
                return Err(doc
                    .error("inventory plugin configuration files are not supported")
                    .hint("use a static inventory, an executable script or an http(s) URL"));
            }
            // A host named by a number (`1234:`) is a trap: ansible-core
            // refuses the whole file, warns, and runs on with the other
            // sources, often with an empty inventory and exit status 0. Keel
            // matches that (the caller warns with this diagnostic, which
            // points at the key), checked before anything is added so the
            // file is dropped whole. (ansible-playbook itself keeps the hosts
            // it read before the number and ansible-inventory lists none of
            // them; Keel keeps none, as ansible-inventory shows.)
            if let Some(k) = numeric_host(entries) {
                let name = key_name(k)?;
                return Ok(Outcome::Refused(
                    k.error(format!(
                        "Host pattern {name} must be a string. Enclose integers/floats in quotation marks."
                    ))
                    .hint(format!("quote the name: `'{name}':`")),
                ));
            }
            let mut loader = YamlInventory { inv, path };
            for (k, v) in entries {
                let name = key_name(k)?;
                loader.group(&name, k, v)?;
            }
            Ok(Outcome::Parsed)
        }
        _ => Err(doc
            .error(format!(
                "a YAML inventory must be a mapping of groups, found {}",
                doc.type_name()
            ))
            .hint("start with `all:` and put `hosts:`, `vars:` and `children:` under it")),
    }
}

/// The first host key written as a number, in document order, in the
/// groups `entries` holds and their `children`, to any depth.
fn numeric_host(entries: &[(Node, Node)]) -> Option<&Node> {
    entries.iter().find_map(|(_, group)| {
        let NodeKind::Map(sections) = &group.kind else {
            return None;
        };
        sections.iter().find_map(|(k, v)| {
            let NodeKind::Map(items) = &v.kind else {
                return None;
            };
            match key_name(k).ok()?.as_str() {
                "hosts" => items
                    .iter()
                    .map(|(hk, _)| hk)
                    .find(|hk| matches!(hk.kind, NodeKind::Int(_) | NodeKind::Float(_))),
                "children" => numeric_host(items),
                _ => None,
            }
        })
    })
}

fn key_name(k: &Node) -> Result<String, Diagnostic> {
    match &k.kind {
        NodeKind::Str { value, .. } => Ok(value.clone()),
        NodeKind::Int(i) => Ok(i.to_string()),
        NodeKind::Float(f) => Ok(f.to_string()),
        NodeKind::Bool(b) => Ok(if *b { "True".into() } else { "False".into() }),
        _ => Err(k.error(format!("expected a name here, found {}", k.type_name()))),
    }
}

struct YamlInventory<'a> {
    inv: &'a mut Inventory,
    path: &'a Path,
}

impl YamlInventory<'_> {
    fn warn(&mut self, node: &Node, msg: String) {
        self.inv.warnings.push(node.error(msg));
    }

    fn group(&mut self, name: &str, key: &Node, data: &Node) -> Result<(), Diagnostic> {
        let entries = match &data.kind {
            NodeKind::Null => {
                self.inv.ensure_group(name);
                return Ok(());
            }
            NodeKind::Map(entries) => entries,
            _ => {
                self.warn(
                    key,
                    format!(
                        "skipping '{name}': not a valid group definition ({})",
                        data.type_name()
                    ),
                );
                return Ok(());
            }
        };
        self.inv.ensure_group(name);
        for (k, v) in entries {
            let section = key_name(k)?;
            if !matches!(section.as_str(), "vars" | "children" | "hosts") {
                self.warn(
                    k,
                    format!("skipping unexpected key '{section}' in group '{name}': only 'vars', 'children' and 'hosts' are valid"),
                );
                continue;
            }
            // A bare string is shorthand for a one-entry mapping with a null value.
            let items: Vec<(String, &Node, Option<&Node>)> = match &v.kind {
                NodeKind::Null => continue,
                NodeKind::Str { value, .. } => vec![(value.clone(), v, None)],
                NodeKind::Map(items) => {
                    let mut out = Vec::new();
                    for (ik, iv) in items {
                        out.push((key_name(ik)?, ik, Some(iv)));
                    }
                    out
                }
                _ => {
                    return Err(v
                        .error(format!(
                            "invalid '{section}' entry for group '{name}': expected a mapping, found {}",
                            v.type_name()
                        ))
                        .hint(if section == "hosts" {
                            "write hosts as a mapping: `hosts: {web1:, web2:}` (a list is not accepted)"
                        } else {
                            "write it as a mapping of names to values"
                        }));
                }
            };
            match section.as_str() {
                "vars" => {
                    for (var, _, val) in items {
                        let value = val.map(Node::to_value).unwrap_or(Value::from(()));
                        self.inv.set_group_var(name, &var, value);
                    }
                }
                "children" => {
                    for (child, ck, cdata) in items {
                        let null = Node {
                            kind: NodeKind::Null,
                            pos: ck.pos,
                            source: ck.source.clone(),
                        };
                        self.group(&child, ck, cdata.unwrap_or(&null))?;
                        self.inv.add_child(name, &child).map_err(|m| ck.error(m))?;
                    }
                }
                _ => {
                    // Numbers as host names were refused before (`numeric_host`).
                    for (pattern, hk, hvars) in items {
                        self.hosts(name, &pattern, hk, hvars)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn hosts(
        &mut self,
        group: &str,
        pattern: &str,
        key: &Node,
        vars: Option<&Node>,
    ) -> Result<(), Diagnostic> {
        let (base, port) = address::parse_address(pattern, true)
            .map_err(|m| key.error(format!("invalid host '{pattern}': {m}")))?;
        let names = address::expand_host_pattern(&base).map_err(|m| key.error(m))?;
        let vars: Vec<(String, Value)> = match vars.map(|v| &v.kind) {
            None | Some(NodeKind::Null) => Vec::new(),
            Some(NodeKind::Map(entries)) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    out.push((key_name(k)?, v.to_value()));
                }
                out
            }
            Some(_) => {
                let v = vars.unwrap();
                return Err(v
                    .error(format!(
                        "vars of host '{pattern}' must be a mapping, found {}",
                        v.type_name()
                    ))
                    .hint("leave the value empty (`web1:`) or give a mapping of variables"));
            }
        };
        for h in names {
            self.inv.add_host(&h, group, Some(self.path));
            if let Some(port) = port {
                self.inv.set_host_var(&h, "ansible_port", Value::from(port));
            }
            for (k, v) in &vars {
                self.inv.set_host_var(&h, k, v.clone());
            }
        }
        Ok(())
    }
}
