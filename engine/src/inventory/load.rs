//! Reading inventory sources into an [`Inventory`]: each `-i` source is
//! recognised (URL, directory, executable, YAML, INI, host list) and handed to
//! its parser (`http.rs`, `script.rs`, `yaml.rs`, `ini.rs`), then the graph is
//! reconciled and `group_vars/`/`host_vars/` next to the sources are read.
//! [`Inventory::from_json`] takes the same JSON a script prints, from memory.
//! Above every parser; the model it fills is `mod.rs`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::vars_dirs::{self, io_error};
use super::{address, http, ini, script, yaml};
use super::{Inventory, InventoryError, LoadOptions};
use minijinja::Value;

use crate::diag::Diagnostic;

impl Inventory {
    /// Loads and merges every source, in order. With no sources, the
    /// inventory holds only the implicit `localhost`.
    pub fn load(sources: &[String]) -> Result<Inventory, InventoryError> {
        Inventory::load_with(sources, &LoadOptions::default())
    }

    /// [`Inventory::load`] with explicit timeouts and token.
    pub fn load_with(sources: &[String], opts: &LoadOptions) -> Result<Inventory, InventoryError> {
        let mut inv = Inventory::default();
        let mut seen_dirs = HashSet::new();
        let mut parsed = 0;
        for source in sources {
            if !inv.load_source(source, opts)? {
                continue;
            }
            parsed += 1;
            // `group_vars/` next to a file source, or inside a directory source.
            if let Some(base) = vars_base(source) {
                if seen_dirs.insert(base.clone()) {
                    inv.vars_dirs.push(vars_dirs::VarsDir::new(base, false));
                }
            }
        }
        // Like Ansible, reconcile once after every source is read: a group
        // hangs off `all` only if no source gave it a parent.
        inv.reconcile()?;
        inv.reload_vars_dirs()?;
        if parsed == 0 && !sources.is_empty() {
            inv.warnings.push(Diagnostic::new(
                "No inventory was parsed, only implicit localhost is available",
            ));
        }
        Ok(inv)
    }

    /// Builds an inventory from dynamic-inventory JSON already in memory:
    /// the `--list` format (groups as host lists or `{hosts, vars,
    /// children}`, host vars under `_meta.hostvars`), read exactly as a
    /// script's output is. For programs that embed the engine and know their
    /// hosts already (the panel hands over its role-run inventory this way,
    /// instead of writing a file for [`Inventory::load`] to read back).
    /// There is no script to ask `--host`, so a host missing from
    /// `_meta.hostvars` has no vars of its own; no `group_vars/` directory
    /// belongs to the data (add one with [`Inventory::add_vars_dir`]).
    pub fn from_json(data: serde_json::Value) -> Result<Inventory, InventoryError> {
        let mut inv = Inventory::default();
        script::apply_json(&mut inv, data, "in-memory inventory", None, &mut |_| {
            Ok(serde_json::Value::Null)
        })?;
        inv.reconcile()?;
        Ok(inv)
    }

    /// Loads on a blocking thread, for callers inside a tokio runtime.
    pub async fn load_async(
        sources: Vec<String>,
        opts: LoadOptions,
    ) -> Result<Inventory, InventoryError> {
        tokio::task::spawn_blocking(move || Inventory::load_with(&sources, &opts))
            .await
            .map_err(|e| Diagnostic::new(format!("inventory loading thread failed: {e}")))?
    }

    /// Reads one source; `false` when there was nothing to read (a warning
    /// says so).
    fn load_source(&mut self, source: &str, opts: &LoadOptions) -> Result<bool, InventoryError> {
        if source.starts_with("http://") || source.starts_with("https://") {
            let data = http::fetch_inventory(source, opts)?;
            let origin = format!("inventory URL '{source}'");
            script::apply_json(self, data, &origin, None, &mut |_| {
                Ok(serde_json::Value::Null)
            })?;
        } else {
            let path = Path::new(source);
            if path.exists() {
                return self.load_path(path, opts, true);
            } else if source.contains(',') {
                self.load_host_list(source)?;
            } else {
                // ansible-playbook warns and goes on (with the implicit
                // localhost when nothing else parsed); so do we.
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                self.warnings.push(
                    Diagnostic::new(format!(
                        "Unable to parse {} as an inventory source",
                        abs.display()
                    ))
                    .hint("pass a file, a directory, an executable script, a URL, or a host list such as `web1,web2,`"),
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads a file, or every file of a directory; `false` when nothing was
    /// parsed (each file given up on has its warnings).
    fn load_path(
        &mut self,
        path: &Path,
        opts: &LoadOptions,
        top: bool,
    ) -> Result<bool, InventoryError> {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| io_error(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !ignored_in_dir(p))
                .collect();
            entries.sort();
            // Parsed unless every file in it was given up on (an empty
            // directory is a source with no hosts, as before).
            let mut parsed: Option<bool> = None;
            for entry in entries {
                let one = self.load_path(&entry, opts, false)?;
                parsed = Some(parsed.unwrap_or(false) || one);
            }
            return Ok(parsed.unwrap_or(true));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let static_ext = matches!(ext.as_str(), "ini" | "yml" | "yaml" | "json");
        if !static_ext && is_executable(path) {
            let data = script::run_list(path, opts)?;
            let origin = format!("inventory script '{}'", path.display());
            script::apply_json(self, data, &origin, Some(path), &mut |h| {
                script::run_host(path, h, opts)
            })?;
            return Ok(true);
        }
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        // A vaulted inventory file is opened here (YAML ones again by the YAML
        // loader, which decrypts on its own).
        let vaulted = crate::vault::is_encrypted(text.as_bytes());
        let text =
            crate::vault::open_text(path, text).map_err(|e| Diagnostic::new(e.to_string()))?;
        if vaulted && !matches!(ext.as_str(), "yml" | "yaml" | "json") && !looks_like_yaml(&text) {
            ini::load_decrypted(self, path, text)?;
            return Ok(true);
        }
        if matches!(ext.as_str(), "yml" | "yaml" | "json")
            || (ext.is_empty() && looks_like_yaml(&text))
        {
            match yaml::load(self, path)? {
                yaml::Outcome::Parsed => Ok(true),
                yaml::Outcome::Refused(why) => {
                    // ansible-core's two warnings: why the `yaml` plugin
                    // failed, then that the source was not parsed.
                    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                    let message = format!(
                        "Failed to parse inventory with 'yaml' plugin: {}",
                        why.message
                    );
                    self.warnings.push(Diagnostic { message, ..why });
                    self.warnings.push(Diagnostic::new(format!(
                        "Unable to parse {} as an inventory source",
                        abs.display()
                    )));
                    Ok(false)
                }
            }
        } else if !top && !ext.is_empty() && ext != "ini" && !looks_like_ini(&text) {
            // Inside a directory, files that are clearly not inventories are
            // skipped with a warning, as Ansible does after trying every parser.
            self.warnings.push(Diagnostic::new(format!(
                "skipping '{}': not a recognised inventory file",
                path.display()
            )));
            Ok(true)
        } else {
            ini::load(self, path, text)?;
            Ok(true)
        }
    }

    fn load_host_list(&mut self, list: &str) -> Result<(), InventoryError> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) = address::parse_address(item, false).map_err(|e| {
                Diagnostic::new(format!("invalid host '{item}' in host list '{list}': {e}"))
            })?;
            self.add_host(&host, "ungrouped", None);
            if let Some(port) = port {
                self.set_host_var(&host, "ansible_port", Value::from(port));
            }
        }
        Ok(())
    }
}

/// Where `group_vars/` for a source lives: the directory itself, or the
/// file's parent. Host lists and URLs have none.
fn vars_base(source: &str) -> Option<PathBuf> {
    let path = Path::new(source);
    if source.starts_with("http://") || source.starts_with("https://") || !path.exists() {
        return None;
    }
    if path.is_dir() {
        Some(path.to_path_buf())
    } else {
        Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        )
    }
}

/// Files in an inventory directory that are never sources (Ansible's
/// `INVENTORY_IGNORE_EXTS` plus vars directories and hidden files).
fn ignored_in_dir(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    const IGNORED_EXTS: [&str; 12] = [
        ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg",
        ".retry",
    ];
    name.starts_with('.')
        || name == "group_vars"
        || name == "host_vars"
        || name.starts_with("README")
        || IGNORED_EXTS.iter().any(|e| name.ends_with(e))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

/// A file without extension is read as YAML when its first meaningful line
/// is a document start or a top-level `key:` with nothing after it.
fn looks_like_yaml(text: &str) -> bool {
    let first = text.lines().map(str::trim_end).find(|l| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && !t.starts_with(';')
    });
    match first {
        Some(l) => {
            l.starts_with("---") || (l.ends_with(':') && !l.starts_with(' ') && !l.contains(' '))
        }
        None => false,
    }
}

fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| l.starts_with('[') && l.ends_with(']'))
}
