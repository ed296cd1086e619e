//! Installing roles: each requirement fetched (git clone, tarball, a
//! directory), its root found by `meta/main.yml` as ansible-galaxy finds it,
//! put under the roles path with `meta/.galaxy_install_info` (the version
//! later runs compare against), then its `meta/main.yml` dependencies and
//! `meta/requirements.yml` added to the work list — ansible-galaxy's
//! `_execute_install_role`, message for message.

use std::path::{Path, PathBuf};

use super::fetch::{self, Scratch};
use super::requirements::{parse_role_arg, RoleReq};
use super::{GalaxyError, InstallOptions, Line, Report};
use crate::yaml::{Node, NodeKind};

/// `name (version)`, or the name alone, as ansible-galaxy prints a role.
fn shown(r: &RoleReq) -> String {
    if r.version.is_empty() {
        r.name.clone()
    } else {
        format!("{} ({})", r.name, r.version)
    }
}

/// The version recorded by a previous install, if the role has one.
fn install_info(dir: &Path) -> Option<String> {
    let node = crate::yaml::load_one(&dir.join("meta/.galaxy_install_info")).ok()?;
    Some(match node.get("version").map(|v| &v.kind) {
        Some(NodeKind::Str { value, .. }) => value.clone(),
        Some(NodeKind::Int(i)) => i.to_string(),
        Some(NodeKind::Float(f)) => f.to_string(),
        _ => String::new(),
    })
}

/// A YAML scalar as PyYAML's `safe_dump` writes a string: quoted when it
/// would read back as something else.
fn yaml_str(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && matches!(crate::yaml::resolve_plain(s), NodeKind::Str { .. })
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(' ');
    if plain_ok {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn write_install_info(dir: &Path, version: &str) -> Result<(), GalaxyError> {
    // ansible-galaxy writes `datetime.utcnow().strftime("%c")`.
    let date = chrono::Utc::now().format("%a %b %e %H:%M:%S %Y");
    let text = format!("install_date: {date}\nversion: {}\n", yaml_str(version));
    let path = dir.join("meta/.galaxy_install_info");
    std::fs::write(&path, text)
        .map_err(|e| GalaxyError::io(format!("writing {}", path.display()), e))
}

/// The role's root inside an unpacked tree: the shallowest directory
/// holding `meta/main.yml` (`.yaml` too).
fn role_root(tree: &Path) -> Option<PathBuf> {
    let has_meta =
        |d: &Path| d.join("meta/main.yml").is_file() || d.join("meta/main.yaml").is_file();
    if has_meta(tree) {
        return Some(tree.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tree)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with(".git"))
        .collect();
    dirs.sort();
    dirs.into_iter().find(|d| has_meta(d))
}

/// Fetches a role's source into scratch space and returns its root.
fn fetch_role(
    role: &RoleReq,
    scratch: &Scratch,
    report: &mut dyn FnMut(Line),
) -> Result<PathBuf, GalaxyError> {
    let tree = scratch.path().join("src");
    std::fs::create_dir_all(&tree).map_err(|e| GalaxyError::io("creating scratch space", e))?;
    match role.scm.as_deref() {
        Some("git") => {
            fetch::git_clone(&role.src, Some(&role.version), &tree, &role.name)?;
        }
        Some(other) => {
            return Err(GalaxyError::Source(format!(
                "- scm {other} is not currently supported"
            )))
        }
        None => {
            let local = super::expand_home(Path::new(&role.src));
            if local.is_dir() {
                // Not something ansible-galaxy reads (it would ask Galaxy);
                // Keel copies a local role directory as it is.
                fetch::copy_tree(&local, &tree.join(&role.name))?;
            } else if local.is_file() || role.src.contains("://") {
                if role.src.contains("://") {
                    report(Line::Info(format!("- downloading role from {}", role.src)));
                }
                let bytes = fetch::read_source(&role.src)?;
                fetch::unpack(&bytes, &tree, &role.src)?;
            } else {
                return Err(GalaxyError::Source(format!(
                    "{} is neither a git URL, a tarball nor a directory, and Keel installs \
                     nothing from a Galaxy server yet",
                    role.src
                )));
            }
        }
    }
    role_root(&tree).ok_or_else(|| {
        GalaxyError::Source("this role does not appear to have a meta/main.yml file.".into())
    })
}

/// The entries of a role's `meta/main.yml` `dependencies:` and its
/// `meta/requirements.yml`, as requirements (entries with no source that
/// Galaxy could hold are left to the play, as ansible-galaxy leaves them).
fn dependencies(dir: &Path) -> Result<Option<Vec<RoleReq>>, GalaxyError> {
    let meta = ["meta/main.yml", "meta/main.yaml"]
        .iter()
        .map(|m| dir.join(m))
        .find(|p| p.is_file());
    let Some(meta) = meta else { return Ok(None) };
    let load = |p: &Path| {
        crate::yaml::load_one(p)
            .map_err(|e| GalaxyError::Requirements(crate::diag::Diagnostic::new(e.to_string())))
    };
    let node = load(&meta)?;
    if node.is_null() {
        return Ok(None);
    }
    let mut deps: Vec<&Node> = node
        .get("dependencies")
        .and_then(|d| d.as_seq())
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let extra = dir.join("meta/requirements.yml");
    let extra_node = if extra.is_file() {
        Some(load(&extra)?)
    } else {
        None
    };
    if let Some(n) = &extra_node {
        deps.extend(n.as_seq().unwrap_or_default());
    }
    let mut out = Vec::new();
    for d in deps {
        let req = match &d.kind {
            NodeKind::Str { value, .. } => parse_role_arg(value),
            NodeKind::Map(_) => {
                let f = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_string);
                match (f("src"), f("role").or_else(|| f("name"))) {
                    (Some(src), name) => {
                        let mut r = parse_role_arg(&src);
                        if let Some(n) = name {
                            r.name = n;
                        }
                        if let Some(v) = f("version") {
                            r.version = v;
                        }
                        if let Some(s) = f("scm") {
                            r.scm = Some(s);
                        }
                        r
                    }
                    (None, Some(name)) => parse_role_arg(&name),
                    (None, None) => continue,
                }
            }
            _ => continue,
        };
        // A bare name is a role of the play's own roles path: Galaxy
        // could not have it.
        if !req.name.contains('.') && !req.src.contains('.') && req.scm.is_none() {
            continue;
        }
        out.push(req);
    }
    Ok(Some(out))
}

/// Installs `roles` (and, unless `no_deps`, their dependencies) into
/// `roles_path`. Each failure is reported as ansible-galaxy reports it;
/// without `ignore_errors` the first one stops the list.
pub fn install_roles(
    roles: &[RoleReq],
    roles_path: &Path,
    opts: &InstallOptions,
    report: Report<'_>,
) -> Result<(), GalaxyError> {
    report(Line::Info("Starting galaxy role install process".into()));
    let mut work: Vec<RoleReq> = roles.to_vec();
    let mut failed = 0;
    let mut i = 0;
    while i < work.len() {
        let role = work[i].clone();
        i += 1;
        match install_one(&role, roles_path, opts, report) {
            Ok(Some(dir)) if !opts.no_deps => match dependencies(&dir)? {
                None => report(Line::Warning(format!(
                    "Meta file {} is empty. Skipping dependencies.",
                    dir.display()
                ))),
                Some(deps) => {
                    for dep in deps {
                        let dep_dir = roles_path.join(&dep.name);
                        match install_info(&dep_dir) {
                            None if work.iter().any(|w| w.name == dep.name) => report(Line::Info(
                                format!("- dependency {} already pending installation.", dep.name),
                            )),
                            None => {
                                report(Line::Info(format!("- adding dependency: {}", shown(&dep))));
                                work.push(dep);
                            }
                            // ansible-galaxy replaces it only under
                            // --force-with-deps, which Keel does not have.
                            Some(v) if v != dep.version => report(Line::Warning(format!(
                                "- dependency {} ({}) from role {} differs from already \
                                 installed version ({v}), skipping",
                                shown(&dep),
                                dep.version,
                                role.name
                            ))),
                            Some(_) => report(Line::Info(format!(
                                "- dependency {} is already installed, skipping.",
                                dep.name
                            ))),
                        }
                    }
                }
            },
            Ok(_) => {}
            Err(e) => {
                report(Line::Warning(format!(
                    "- {} was NOT installed successfully: {e}",
                    role.name
                )));
                failed += 1;
                if !opts.ignore_errors {
                    return Err(GalaxyError::RolesFailed(failed));
                }
            }
        }
    }
    if failed > 0 {
        return Err(GalaxyError::RolesFailed(failed));
    }
    Ok(())
}

/// Installs one role; `Some(dir)` when it was (re)installed now.
fn install_one(
    role: &RoleReq,
    roles_path: &Path,
    opts: &InstallOptions,
    report: &mut dyn FnMut(Line),
) -> Result<Option<PathBuf>, GalaxyError> {
    if role.name.is_empty() || role.name.contains('/') || role.name == "." || role.name == ".." {
        return Err(GalaxyError::Source(format!(
            "'{}' is not a usable role name: give the requirement a `name:`",
            role.name
        )));
    }
    let dest = roles_path.join(&role.name);
    if let Some(installed) = install_info(&dest) {
        if installed != role.version || opts.force {
            let wanted = if role.version.is_empty() {
                "unspecified"
            } else {
                &role.version
            };
            if opts.force {
                report(Line::Info(format!(
                    "- changing role {} from {installed} to {wanted}",
                    role.name
                )));
            } else {
                report(Line::Warning(format!(
                    "- {} ({installed}) is already installed - use --force to change version to {wanted}",
                    role.name
                )));
                return Ok(None);
            }
        } else {
            report(Line::Info(format!(
                "- {} is already installed, skipping.",
                shown(role)
            )));
            return Ok(None);
        }
    } else if dest.exists() && !opts.force {
        return Err(GalaxyError::Source(format!(
            "the specified role {} appears to already exist. Use --force to replace it.",
            role.name
        )));
    }
    let scratch = fetch::scratch()?;
    let root = fetch_role(role, &scratch, report)?;
    report(Line::Info(format!(
        "- extracting {} to {}",
        role.name,
        dest.display()
    )));
    // A clone's history is not part of the role (ansible-galaxy installs
    // a `git archive` of it).
    let git_dir = root.join(".git");
    if git_dir.exists() {
        fetch::remove(&git_dir)?;
    }
    fetch::put_in_place(&root, &dest)?;
    write_install_info(&dest, &role.version)?;
    report(Line::Info(format!(
        "- {} was installed successfully",
        shown(role)
    )));
    Ok(Some(dest))
}
