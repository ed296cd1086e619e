//! Installing collections into `<path>/ansible_collections/<ns>/<name>`, as
//! `ansible-galaxy collection install` does for sources that need no
//! Galaxy server: a built tarball is unpacked as it is; a source tree (a
//! directory or a git checkout) is installed with the `MANIFEST.json` and
//! `FILES.json` a build would have made, leaving out what a build leaves
//! out. Requirements already met by an installed version are skipped
//! (git ones never are, as in ansible-galaxy); each collection's
//! dependencies must be met by another requested one or an installed one.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::fetch::{self, Scratch};
use super::requirements::{CollectionReq, CollectionSource};
use super::{GalaxyError, InstallOptions, Line, Report};
use crate::yaml::NodeKind;

/// A version constraint as ansible-galaxy writes one: `*`, `1.0.0`,
/// `>=1.0.0,<2.0.0`, `!=1.2.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq(Vec<(String, String)>);

impl VersionReq {
    pub fn parse(text: &str) -> VersionReq {
        let mut parts = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let op = ["!=", "==", ">=", "<=", ">", "<", "*"]
                .into_iter()
                .find(|op| p.starts_with(op))
                .unwrap_or("==");
            let v = p.strip_prefix(op).unwrap_or(p).trim().to_string();
            parts.push((op.to_string(), v));
        }
        VersionReq(parts)
    }

    /// Whether `version` meets every part (a `*` version, as a source tree
    /// without a version has, meets anything).
    pub fn matches(&self, version: &str) -> bool {
        if version == "*" {
            return true;
        }
        self.0.iter().all(|(op, want)| {
            if op == "*" {
                return true;
            }
            let ord = compare_versions(version, want);
            match op.as_str() {
                "!=" => ord != std::cmp::Ordering::Equal,
                "==" => ord == std::cmp::Ordering::Equal,
                ">=" => ord != std::cmp::Ordering::Less,
                "<=" => ord != std::cmp::Ordering::Greater,
                ">" => ord == std::cmp::Ordering::Greater,
                _ => ord == std::cmp::Ordering::Less,
            }
        })
    }
}

/// Semantic versions when both parse, else a plain comparison of the dotted
/// numbers.
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => {
            let nums =
                |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
            nums(a).cmp(&nums(b))
        }
    }
}

/// What a collection says about itself (`MANIFEST.json`'s `collection_info`,
/// or `galaxy.yml` for a source tree).
#[derive(Debug, Clone)]
struct Info {
    namespace: String,
    name: String,
    version: String,
    dependencies: Vec<(String, String)>,
    build_ignore: Vec<String>,
    /// `collection_info` for a `MANIFEST.json`, from `galaxy.yml`.
    manifest_info: Value,
}

impl Info {
    fn fqcn(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

fn read_info(dir: &Path) -> Result<Info, GalaxyError> {
    let manifest = dir.join("MANIFEST.json");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| GalaxyError::io(format!("reading {}", manifest.display()), e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            GalaxyError::Source(format!("{} is not valid JSON: {e}", manifest.display()))
        })?;
        let ci = &v["collection_info"];
        let s = |k: &str| ci[k].as_str().unwrap_or_default().to_string();
        let dependencies = ci["dependencies"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("*").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Info {
            namespace: s("namespace"),
            name: s("name"),
            version: s("version"),
            dependencies,
            build_ignore: Vec::new(),
            manifest_info: ci.clone(),
        });
    }
    let galaxy = ["galaxy.yml", "galaxy.yaml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            GalaxyError::Source(format!(
                "Collection at '{}' does not have a MANIFEST.json file, nor has it galaxy.yml: \
                 cannot detect version.",
                dir.display()
            ))
        })?;
    let node = crate::yaml::load_one(&galaxy)
        .map_err(|e| GalaxyError::Requirements(crate::diag::Diagnostic::new(e.to_string())))?;
    let text = |k: &str| -> Option<String> {
        match &node.get(k)?.kind {
            NodeKind::Str { value, .. } => Some(value.clone()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            _ => None,
        }
    };
    let list = |k: &str| -> Vec<Value> {
        match node.get(k).map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(|s| Value::from(s.to_string())))
                .collect(),
            Some(NodeKind::Str { value, .. }) => vec![Value::from(value.clone())],
            _ => Vec::new(),
        }
    };
    let (Some(namespace), Some(name)) = (text("namespace"), text("name")) else {
        return Err(GalaxyError::Source(format!(
            "{} must give `namespace:` and `name:`",
            galaxy.display()
        )));
    };
    let version = text("version").unwrap_or_else(|| "*".into());
    let mut dependencies = Vec::new();
    let mut deps_json = Map::new();
    if let Some(NodeKind::Map(entries)) = node.get("dependencies").map(|n| &n.kind) {
        for (k, v) in entries {
            let k = k.as_str().unwrap_or_default().to_string();
            let v = match &v.kind {
                NodeKind::Str { value, .. } => value.clone(),
                NodeKind::Int(i) => i.to_string(),
                NodeKind::Float(f) => f.to_string(),
                _ => "*".into(),
            };
            deps_json.insert(k.clone(), Value::from(v.clone()));
            dependencies.push((k, v));
        }
    }
    let opt = |k: &str| {
        text(k)
            .filter(|s| !s.is_empty())
            .map(Value::from)
            .unwrap_or(Value::Null)
    };
    let manifest_info = json!({
        "namespace": namespace,
        "name": name,
        "version": version,
        "authors": list("authors"),
        "readme": opt("readme"),
        "tags": list("tags"),
        "description": opt("description"),
        "license": list("license"),
        "license_file": opt("license_file"),
        "dependencies": deps_json,
        "repository": opt("repository"),
        "documentation": opt("documentation"),
        "homepage": opt("homepage"),
        "issues": opt("issues"),
    });
    let build_ignore = list("build_ignore")
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    Ok(Info {
        namespace,
        name,
        version,
        dependencies,
        build_ignore,
        manifest_info,
    })
}

/// The installed version of `fqcn` under the first root that has it.
pub fn installed_collection_version(roots: &[PathBuf], fqcn: &str) -> Option<(PathBuf, String)> {
    let (ns, name) = fqcn.split_once('.')?;
    roots.iter().find_map(|r| {
        let dir = collections_dir(r).join(ns).join(name);
        if !dir.is_dir() {
            return None;
        }
        let info = read_info(&dir).ok()?;
        Some((dir, info.version))
    })
}

/// `path/ansible_collections`, unless `path` already ends with it.
fn collections_dir(root: &Path) -> PathBuf {
    if root.file_name().is_some_and(|n| n == "ansible_collections") {
        root.to_path_buf()
    } else {
        root.join("ansible_collections")
    }
}

/// A fetched collection ready to be put in place.
struct Candidate {
    info: Info,
    /// The tree to install.
    dir: PathBuf,
    /// A source tree: manifests must be built, ignored files left out.
    from_source: bool,
    /// Keeps the scratch directory alive until the install.
    _scratch: Option<Scratch>,
}

fn python_fnmatch(pattern: &str, name: &str) -> bool {
    crate::fnmatch::Glob::new(pattern).is_match(name)
}

/// What a collection build keeps: (relative path, is a directory), in a
/// stable order (sorted, depth first).
fn files_to_keep(root: &Path, info: &Info) -> Result<Vec<(String, bool)>, GalaxyError> {
    let mut patterns: Vec<String> = [
        "MANIFEST.json",
        "FILES.json",
        "galaxy.yml",
        "galaxy.yaml",
        ".git",
        "*.pyc",
        "*.retry",
        "tests/output",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    patterns.push(format!("{}-{}-*.tar.gz", info.namespace, info.name));
    patterns.extend(info.build_ignore.iter().cloned());
    const IGNORED_DIRS: &[&str] = &["CVS", ".bzr", ".hg", ".git", ".svn", "__pycache__", ".tox"];
    let mut out = Vec::new();
    fn walk(
        dir: &Path,
        rel: &str,
        patterns: &[String],
        out: &mut Vec<(String, bool)>,
    ) -> Result<(), GalaxyError> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| GalaxyError::io(format!("reading {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ignored = patterns.iter().any(|p| python_fnmatch(p, &rel_path));
            if path.is_dir() {
                if IGNORED_DIRS.contains(&name.as_str()) || ignored {
                    continue;
                }
                out.push((rel_path.clone(), true));
                if !path.is_symlink() {
                    walk(&path, &rel_path, patterns, out)?;
                }
            } else if !ignored {
                out.push((rel_path, false));
            }
        }
        Ok(())
    }
    walk(root, "", &patterns, &mut out)?;
    Ok(out)
}

fn entry(name: &str, dir: bool, sha: Option<String>) -> Value {
    json!({
        "name": name,
        "ftype": if dir { "dir" } else { "file" },
        "chksum_type": if dir { Value::Null } else { Value::from("sha256") },
        "chksum_sha256": sha,
        "format": 1,
    })
}

/// Python's `json.dumps(v, indent=True)`: one-space indent.
fn python_json(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("JSON values always serialise");
    buf
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), GalaxyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes)
        .map_err(|e| GalaxyError::io(format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| GalaxyError::io(format!("setting the mode of {}", path.display()), e))
}

/// Builds the installed tree of a source collection in `out`, as
/// ansible-galaxy's `_build_collection_dir` does.
fn build_from_source(src: &Path, info: &Info, out: &Path) -> Result<(), GalaxyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(out)
        .map_err(|e| GalaxyError::io(format!("creating {}", out.display()), e))?;
    let keep = files_to_keep(src, info)?;
    let mut files = vec![entry(".", true, None)];
    for (rel, is_dir) in &keep {
        let p = src.join(rel);
        let sha = if *is_dir {
            None
        } else {
            let bytes = std::fs::read(&p)
                .map_err(|e| GalaxyError::io(format!("reading {}", p.display()), e))?;
            Some(hex::encode(Sha256::digest(&bytes)))
        };
        files.push(entry(rel, *is_dir, sha));
    }
    let files_json = python_json(&json!({"files": files, "format": 1}));
    let manifest = json!({
        "collection_info": info.manifest_info,
        "file_manifest_file": {
            "name": "FILES.json",
            "ftype": "file",
            "chksum_type": "sha256",
            "chksum_sha256": hex::encode(Sha256::digest(&files_json)),
            "format": 1,
        },
        "format": 1,
    });
    write_mode(&out.join("MANIFEST.json"), &python_json(&manifest), 0o644)?;
    write_mode(&out.join("FILES.json"), &files_json, 0o644)?;
    for (rel, is_dir) in &keep {
        let from = src.join(rel);
        let to = out.join(rel);
        if *is_dir && !from.is_symlink() {
            std::fs::create_dir_all(&to)
                .map_err(|e| GalaxyError::io(format!("creating {}", to.display()), e))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| GalaxyError::io(format!("setting the mode of {}", to.display()), e))?;
        } else if from.is_symlink() {
            let target = std::fs::read_link(&from)
                .map_err(|e| GalaxyError::io(format!("reading {}", from.display()), e))?;
            std::os::unix::fs::symlink(target, &to)
                .map_err(|e| GalaxyError::io(format!("writing {}", to.display()), e))?;
        } else {
            let meta = std::fs::metadata(&from)
                .map_err(|e| GalaxyError::io(format!("reading {}", from.display()), e))?;
            let exec = meta.permissions().mode() & 0o100 != 0;
            let bytes = std::fs::read(&from)
                .map_err(|e| GalaxyError::io(format!("reading {}", from.display()), e))?;
            write_mode(&to, &bytes, if exec { 0o755 } else { 0o644 })?;
        }
    }
    Ok(())
}

/// The collection trees under a `subdirs` source: `ns/name/` holding
/// `galaxy.yml` or `MANIFEST.json`.
fn subdir_collections(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let read = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for ns in read(root) {
        for coll in read(&ns) {
            if ["galaxy.yml", "galaxy.yaml", "MANIFEST.json"]
                .iter()
                .any(|f| coll.join(f).is_file())
            {
                out.push(coll);
            }
        }
    }
    out
}

/// Fetches a requirement into candidates (several for `subdirs`, and for a
/// git repository whose root is a namespace tree).
fn fetch_req(req: &CollectionReq) -> Result<Vec<Candidate>, GalaxyError> {
    let source_dir = |dir: PathBuf, scratch: Option<Scratch>| -> Result<Candidate, GalaxyError> {
        Ok(Candidate {
            info: read_info(&dir)?,
            from_source: !dir.join("MANIFEST.json").is_file(),
            dir,
            _scratch: scratch,
        })
    };
    match &req.source {
        CollectionSource::Dir(d) => Ok(vec![source_dir(d.clone(), None)?]),
        CollectionSource::Subdirs(d) => subdir_collections(d)
            .into_iter()
            .map(|c| source_dir(c, None))
            .collect(),
        CollectionSource::File(_) | CollectionSource::Url(_) => {
            let src = match &req.source {
                CollectionSource::File(p) => p.display().to_string(),
                CollectionSource::Url(u) => u.clone(),
                _ => unreachable!(),
            };
            let scratch = fetch::scratch()?;
            let bytes = fetch::read_source(&src)?;
            let tree = scratch.path().join("tree");
            std::fs::create_dir_all(&tree)
                .map_err(|e| GalaxyError::io("creating scratch space", e))?;
            fetch::unpack(&bytes, &tree, &src)?;
            if !tree.join("MANIFEST.json").is_file() {
                return Err(GalaxyError::Source(format!(
                    "Collection at '{src}' does not contain the required file MANIFEST.json."
                )));
            }
            Ok(vec![Candidate {
                info: read_info(&tree)?,
                dir: tree,
                from_source: false,
                _scratch: Some(scratch),
            }])
        }
        CollectionSource::Git {
            url,
            subdir,
            reference,
        } => {
            let scratch = fetch::scratch()?;
            let checkout = fetch::git_clone(url, reference.as_deref(), scratch.path(), "repo")?;
            let root = match subdir {
                Some(s) => checkout.join(s),
                None => checkout,
            };
            if ["galaxy.yml", "galaxy.yaml", "MANIFEST.json"]
                .iter()
                .any(|f| root.join(f).is_file())
            {
                return Ok(vec![source_dir(root, Some(scratch))?]);
            }
            let found = subdir_collections(&root);
            if found.is_empty() {
                return Err(GalaxyError::Source(format!(
                    "{url} has no galaxy.yml or MANIFEST.json{}",
                    subdir
                        .as_ref()
                        .map(|s| format!(" under {s}"))
                        .unwrap_or_default()
                )));
            }
            // The scratch directory must outlive every candidate: hand it
            // to the first.
            let mut out = Vec::new();
            let mut scratch = Some(scratch);
            for c in found {
                out.push(source_dir(c, scratch.take())?);
            }
            Ok(out)
        }
        CollectionSource::Galaxy { .. } => Ok(Vec::new()),
    }
}

fn is_git(req: &CollectionReq) -> bool {
    matches!(req.source, CollectionSource::Git { .. })
}

/// Installs collections under `install_root/ansible_collections`.
/// `search_roots` are the configured collections paths, where installed
/// dependencies are looked for.
pub fn install_collections(
    reqs: &[CollectionReq],
    install_root: &Path,
    search_roots: &[PathBuf],
    opts: &InstallOptions,
    report: Report<'_>,
) -> Result<(), GalaxyError> {
    report(Line::Info(
        "Starting galaxy collection install process".into(),
    ));
    let coll_dir = collections_dir(install_root);
    // ansible-galaxy makes the directory first, even with nothing to do.
    std::fs::create_dir_all(&coll_dir)
        .map_err(|e| GalaxyError::io(format!("creating {}", coll_dir.display()), e))?;
    let mut all_roots: Vec<PathBuf> = vec![install_root.to_path_buf()];
    all_roots.extend(search_roots.iter().cloned());

    // What is met already (git requirements never are: ansible-galaxy
    // knows a repository's collection only after cloning it).
    let met = |req: &CollectionReq| -> bool {
        let fqcn = match &req.source {
            CollectionSource::Galaxy { fqcn } => Some(fqcn.clone()),
            CollectionSource::Dir(d) => read_info(d).ok().map(|i| i.fqcn()),
            CollectionSource::File(_) | CollectionSource::Url(_) => file_fqcn(req),
            _ => None,
        };
        // ansible-galaxy counts what any collections path holds, not only
        // the one it installs into.
        fqcn.and_then(|f| installed_collection_version(&all_roots, &f))
            .is_some_and(|(_, v)| VersionReq::parse(&req.version).matches(&v))
    };
    let pending: Vec<&CollectionReq> = reqs
        .iter()
        .filter(|r| opts.force || is_git(r) || !met(r))
        .collect();
    if pending.is_empty() {
        report(Line::Info(
            "Nothing to do. All requested collections are already installed. If you want to \
             reinstall them, consider using `--force`."
                .into(),
        ));
        return Ok(());
    }
    report(Line::Info("Process install dependency map".into()));
    let mut candidates: Vec<Candidate> = Vec::new();
    for req in &pending {
        if let CollectionSource::Galaxy { fqcn } = &req.source {
            return Err(GalaxyError::Resolve(format!(
                "Failed to resolve the requested dependencies map. {fqcn}:{} is not installed, \
                 and Keel installs collections only from directories, tarballs, URLs and git \
                 repositories (no Galaxy server): name one of those in the requirement",
                req.version
            )));
        }
        for c in fetch_req(req)? {
            if !is_git(req) && !VersionReq::parse(&req.version).matches(&c.info.version) {
                return Err(GalaxyError::Resolve(format!(
                    "Failed to resolve the requested dependencies map. Got the candidate {}:{} \
                     which didn't satisfy the requirement {}:{}",
                    c.info.fqcn(),
                    c.info.version,
                    c.info.fqcn(),
                    req.version
                )));
            }
            candidates.push(c);
        }
    }
    // One version per collection.
    for (i, a) in candidates.iter().enumerate() {
        for b in &candidates[i + 1..] {
            if a.info.fqcn() == b.info.fqcn() && a.info.version != b.info.version {
                return Err(GalaxyError::Resolve(format!(
                    "Failed to resolve the requested dependencies map. Got the candidates {f}:{} \
                     and {f}:{} for the same collection: request one version",
                    a.info.version,
                    b.info.version,
                    f = a.info.fqcn()
                )));
            }
        }
    }
    if !opts.no_deps {
        let mut unmet = Vec::new();
        for c in &candidates {
            for (dep, want) in &c.info.dependencies {
                let vr = VersionReq::parse(want);
                let requested = candidates
                    .iter()
                    .any(|o| &o.info.fqcn() == dep && vr.matches(&o.info.version));
                let installed = installed_collection_version(&all_roots, dep)
                    .is_some_and(|(_, v)| vr.matches(&v));
                if !requested && !installed {
                    unmet.push(format!(
                        "* {dep}:{want} (dependency of {}:{})",
                        c.info.fqcn(),
                        c.info.version
                    ));
                }
            }
        }
        if !unmet.is_empty() {
            return Err(GalaxyError::Resolve(format!(
                "Failed to resolve the requested dependencies map. Could not satisfy the \
                 following requirements:\n{}\nKeel has no Galaxy client: install these from a \
                 directory, tarball or git repository too (or use --no-deps)",
                unmet.join("\n")
            )));
        }
    }
    report(Line::Info("Starting collection install process".into()));
    let mut done: Vec<String> = Vec::new();
    for c in &candidates {
        let fqcn = c.info.fqcn();
        if done.contains(&fqcn) {
            continue;
        }
        done.push(fqcn.clone());
        let dest = coll_dir.join(&c.info.namespace).join(&c.info.name);
        let shown = format!("{fqcn}:{}", c.info.version);
        report(Line::Info(format!(
            "Installing '{shown}' to '{}'",
            dest.display()
        )));
        let staged_parent = fetch::scratch()?;
        let staged = staged_parent.path().join("out");
        if c.from_source {
            build_from_source(&c.dir, &c.info, &staged)?;
        } else {
            fetch::copy_tree(&c.dir, &staged)?;
        }
        fetch::put_in_place(&staged, &dest)?;
        if c.from_source {
            report(Line::Info(format!(
                "Created collection for {shown} at {}",
                dest.display()
            )));
        }
        report(Line::Info(format!("{shown} was installed successfully")));
    }
    Ok(())
}

/// The collection a tarball holds, read without unpacking it all.
fn file_fqcn(req: &CollectionReq) -> Option<String> {
    let CollectionSource::File(path) = &req.source else {
        return None;
    };
    let bytes = std::fs::read(path).ok()?;
    let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries().ok()? {
        let mut e = e.ok()?;
        let p = e.path().ok()?.to_string_lossy().to_string();
        if p.trim_start_matches("./") == "MANIFEST.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            let ci = &v["collection_info"];
            return Some(format!(
                "{}.{}",
                ci["namespace"].as_str()?,
                ci["name"].as_str()?
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constraints_read_as_ansible_galaxy_reads_them() {
        let r = VersionReq::parse(">=1.0.0,<2.0.0");
        assert!(r.matches("1.5.0"));
        assert!(!r.matches("2.0.0"));
        assert!(VersionReq::parse("1.0.0").matches("1.0.0"));
        assert!(!VersionReq::parse("1.0.0").matches("1.0.1"));
        assert!(VersionReq::parse("*").matches("0.1.0"));
        assert!(VersionReq::parse("!=1.2.0").matches("1.2.1"));
    }
}
