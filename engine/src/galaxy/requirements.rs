//! What to install: `requirements.yml` (a list of roles, or a mapping with
//! `roles:` and `collections:`) and command-line names, read the way
//! ansible-core's `RoleRequirement.role_yaml_parse` and collection
//! `Requirement.from_requirement_dict` read them.

use std::path::{Path, PathBuf};

use super::GalaxyError;
use crate::diag::Diagnostic;
use crate::yaml::{Node, NodeKind};

/// A role to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReq {
    /// The directory name under the roles path.
    pub name: String,
    /// A git URL (with `scm: git`), a tarball path or URL, a directory, or
    /// a Galaxy name.
    pub src: String,
    /// A git ref, or the version a tarball or Galaxy role is recorded as
    /// (`""` when none was given).
    pub version: String,
    /// `Some("git")` for repositories.
    pub scm: Option<String>,
}

/// Where a collection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionSource {
    /// A collection's source tree (holding `galaxy.yml` or `MANIFEST.json`).
    Dir(PathBuf),
    /// A built collection tarball (`ns-name-1.0.0.tar.gz`).
    File(PathBuf),
    /// A tarball at a URL.
    Url(String),
    /// A git repository: URL, the subdirectory after `#`, and a ref.
    Git {
        url: String,
        subdir: Option<String>,
        reference: Option<String>,
    },
    /// A directory of namespaces (`ns/name/galaxy.yml`): every collection in it.
    Subdirs(PathBuf),
    /// A name to fetch from a Galaxy server (only satisfied by what is
    /// already installed: Keel has no Galaxy client yet).
    Galaxy { fqcn: String },
}

/// A collection to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionReq {
    pub source: CollectionSource,
    /// A version constraint (`*`, `1.0.0`, `>=1.0.0,<2.0.0`); for git it is
    /// the ref, kept in the source instead.
    pub version: String,
    /// How it was written, for messages.
    pub written: String,
}

/// A parsed requirements file.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub roles: Vec<RoleReq>,
    pub collections: Vec<CollectionReq>,
    /// A `collections:` key was present (ansible-galaxy warns when it
    /// ignores it).
    pub has_collections_key: bool,
}

fn req_error(node: &Node, msg: impl Into<String>) -> GalaxyError {
    GalaxyError::Requirements(node.error(msg))
}

/// Reads a requirements file.
pub fn load_requirements(path: &Path) -> Result<Requirements, GalaxyError> {
    let node = crate::yaml::load_one(path)
        .map_err(|e| GalaxyError::Requirements(Diagnostic::new(e.to_string())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Requirements::default();
    match &node.kind {
        NodeKind::Seq(items) => {
            for item in items {
                out.roles.push(role_from_node(item)?);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                match k.as_str() {
                    Some("roles") => {
                        for item in seq_or_empty(v, "roles")? {
                            out.roles.push(role_from_node(item)?);
                        }
                    }
                    Some("collections") => {
                        out.has_collections_key = true;
                        for item in seq_or_empty(v, "collections")? {
                            out.collections.push(collection_from_node(item, base)?);
                        }
                    }
                    _ => {
                        return Err(req_error(
                            k,
                            "Expecting only 'roles' and/or 'collections' as base keys in the \
                             requirements file",
                        ))
                    }
                }
            }
        }
        NodeKind::Null => {}
        _ => {
            return Err(req_error(
                &node,
                format!(
                    "Expecting requirements file to be a dict with the key 'collections' \
                     and/or 'roles', found {}",
                    node.type_name()
                ),
            ))
        }
    }
    Ok(out)
}

fn seq_or_empty<'n>(v: &'n Node, what: &str) -> Result<&'n [Node], GalaxyError> {
    match &v.kind {
        NodeKind::Seq(items) => Ok(items),
        NodeKind::Null => Ok(&[]),
        _ => Err(req_error(
            v,
            format!("`{what}:` must be a list, found {}", v.type_name()),
        )),
    }
}

fn scalar(node: &Node) -> Option<String> {
    match &node.kind {
        NodeKind::Str { value, .. } => Some(value.clone()),
        NodeKind::Int(i) => Some(i.to_string()),
        NodeKind::Float(f) => Some(f.to_string()),
        NodeKind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// ansible-core's `repo_url_to_role_name`.
fn repo_url_to_role_name(url: &str) -> String {
    if !url.contains("://") && !url.contains('@') {
        return url.to_string();
    }
    let mut t = url.rsplit('/').next().unwrap_or(url);
    t = t.strip_suffix(".git").unwrap_or(t);
    t = t.strip_suffix(".tar.gz").unwrap_or(t);
    t.split(',').next().unwrap_or(t).to_string()
}

/// A role written as one string: `src[,version[,name]]`, `git+URL`, or a
/// Galaxy name (the command line's form too).
pub fn parse_role_arg(text: &str) -> RoleReq {
    let parts: Vec<&str> = text.trim().splitn(3, ',').collect();
    let mut src = parts[0].trim().to_string();
    let version = parts
        .get(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut name = parts.get(2).map(|s| s.trim().to_string());
    let mut scm = None;
    if let Some((s, rest)) = src.split_once('+') {
        if !s.contains('/') && !s.contains(':') {
            scm = Some(s.to_string());
            src = rest.to_string();
        }
    }
    if name.as_deref().is_none_or(str::is_empty) {
        name = Some(repo_url_to_role_name(&src));
    }
    RoleReq {
        name: name.unwrap_or_default(),
        src,
        version,
        scm,
    }
}

fn role_from_node(node: &Node) -> Result<RoleReq, GalaxyError> {
    if let Some(text) = scalar(node) {
        return Ok(parse_role_arg(&text));
    }
    let NodeKind::Map(_) = &node.kind else {
        return Err(req_error(
            node,
            format!(
                "a role requirement must be a string or a mapping, found {}",
                node.type_name()
            ),
        ));
    };
    let field = |k: &str| node.get(k).and_then(scalar);
    if let Some(role) = field("role") {
        if role.contains(',') {
            return Err(req_error(
                node,
                format!("Invalid old style role requirement: {role}"),
            ));
        }
    }
    let mut src = field("src").or_else(|| field("role")).unwrap_or_default();
    let mut scm = field("scm");
    if src.contains("github.com")
        && src.contains("http")
        && !src.contains('+')
        && !src.ends_with(".tar.gz")
    {
        src = format!("git+{src}");
    }
    if let Some((s, rest)) = src.clone().split_once('+') {
        if !s.contains('/') && !s.contains(':') {
            scm = Some(s.to_string());
            src = rest.to_string();
        }
    }
    if src.is_empty() {
        if let Some(n) = field("name") {
            src = n;
        } else {
            return Err(req_error(
                node,
                "a role requirement needs `src:` or `name:`",
            ));
        }
    }
    let name = field("name")
        .or_else(|| field("role"))
        .unwrap_or_else(|| repo_url_to_role_name(&src));
    Ok(RoleReq {
        name,
        src,
        version: field("version").unwrap_or_default(),
        scm,
    })
}

fn is_git_url(s: &str) -> bool {
    s.starts_with("git+") || s.starts_with("git@") || s.trim_end_matches('/').ends_with(".git")
}

/// A collection written on the command line (or as a plain string in a
/// requirements file): `ns.name`, `ns.name:>=1.0`, a path, a URL, or a git
/// URL with `#subdir` and `,ref`.
pub fn parse_collection_arg(text: &str, base: &Path) -> CollectionReq {
    collection_req(text.trim(), None, None, base)
}

fn collection_req(
    name: &str,
    version: Option<String>,
    kind: Option<&str>,
    base: &Path,
) -> CollectionReq {
    let written = name.to_string();
    let path_of = |p: &str| {
        let p = super::expand_home(Path::new(p));
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let kind = kind.map(str::to_string).unwrap_or_else(|| {
        if is_git_url(name) {
            "git".into()
        } else if name.starts_with("http://") || name.starts_with("https://") {
            "url".into()
        } else if path_of(name).is_file() {
            "file".into()
        } else if path_of(name).is_dir()
            && (path_of(name).join("galaxy.yml").is_file()
                || path_of(name).join("MANIFEST.json").is_file())
        {
            "dir".into()
        } else if path_of(name).is_dir() {
            "subdirs".into()
        } else {
            "galaxy".into()
        }
    });
    match kind.as_str() {
        "git" => {
            let url = name.strip_prefix("git+").unwrap_or(name);
            let (url, mut reference) = match url.rsplit_once(',') {
                Some((u, r)) => (u.to_string(), Some(r.to_string())),
                None => (url.to_string(), None),
            };
            let (url, subdir) = match url.split_once('#') {
                Some((u, s)) => (
                    u.to_string(),
                    Some(s.trim_matches('/').to_string()).filter(|s| !s.is_empty()),
                ),
                None => (url, None),
            };
            if let Some(v) = version.filter(|v| v != "*") {
                reference = Some(v);
            }
            CollectionReq {
                source: CollectionSource::Git {
                    url,
                    subdir,
                    reference,
                },
                version: "*".into(),
                written,
            }
        }
        "url" => CollectionReq {
            source: CollectionSource::Url(name.to_string()),
            version: version.unwrap_or_else(|| "*".into()),
            written,
        },
        "file" => CollectionReq {
            source: CollectionSource::File(path_of(name)),
            version: version.unwrap_or_else(|| "*".into()),
            written,
        },
        "dir" => CollectionReq {
            source: CollectionSource::Dir(path_of(name)),
            version: version.unwrap_or_else(|| "*".into()),
            written,
        },
        "subdirs" => CollectionReq {
            source: CollectionSource::Subdirs(path_of(name)),
            version: version.unwrap_or_else(|| "*".into()),
            written,
        },
        _ => {
            let (fqcn, v) = match name.split_once(':') {
                Some((n, v)) if !n.contains('/') => (n.to_string(), Some(v.to_string())),
                _ => (name.to_string(), None),
            };
            CollectionReq {
                source: CollectionSource::Galaxy { fqcn },
                version: version.or(v).unwrap_or_else(|| "*".into()),
                written,
            }
        }
    }
}

fn collection_from_node(node: &Node, base: &Path) -> Result<CollectionReq, GalaxyError> {
    if let Some(text) = scalar(node) {
        return Ok(collection_req(&text, None, None, base));
    }
    let NodeKind::Map(_) = &node.kind else {
        return Err(req_error(
            node,
            format!(
                "a collection requirement must be a string or a mapping, found {}",
                node.type_name()
            ),
        ));
    };
    let field = |k: &str| node.get(k).and_then(scalar);
    let Some(name) = field("name") else {
        return Err(req_error(
            node,
            "Collections requirement entry should contain the key 'name'.",
        ));
    };
    let kind = field("type");
    if let Some(k) = &kind {
        if !["galaxy", "url", "file", "dir", "git", "subdirs"].contains(&k.as_str()) {
            return Err(req_error(
                node,
                format!(
                    "The collection requirement entry key 'type' must be one of file, galaxy, \
                     git, dir, subdirs, or url, not '{k}'"
                ),
            ));
        }
    }
    // A `source:` naming a Galaxy server: the name is still a Galaxy name.
    Ok(collection_req(
        &name,
        field("version"),
        kind.as_deref(),
        base,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_strings_split_as_ansible_galaxy_does() {
        let r = parse_role_arg("git+file:///srv/repo/webby.git,v1.0");
        assert_eq!(r.scm.as_deref(), Some("git"));
        assert_eq!(r.src, "file:///srv/repo/webby.git");
        assert_eq!(r.name, "webby");
        assert_eq!(r.version, "v1.0");
        let r = parse_role_arg("https://example.com/x/r.tar.gz,,mine");
        assert_eq!((r.name.as_str(), r.scm), ("mine", None));
        let r = parse_role_arg("geerlingguy.java");
        assert_eq!(
            (r.name.as_str(), r.src.as_str()),
            ("geerlingguy.java", "geerlingguy.java")
        );
    }

    #[test]
    fn collection_strings_pick_their_source_kind() {
        let base = Path::new("/nonexistent");
        let c = parse_collection_arg("git+file:///r/coll#/sub/,1.0.0", base);
        assert_eq!(
            c.source,
            CollectionSource::Git {
                url: "file:///r/coll".into(),
                subdir: Some("sub".into()),
                reference: Some("1.0.0".into())
            }
        );
        let c = parse_collection_arg("community.general:>=7.0.0", base);
        assert_eq!(
            c.source,
            CollectionSource::Galaxy {
                fqcn: "community.general".into()
            }
        );
        assert_eq!(c.version, ">=7.0.0");
    }
}
