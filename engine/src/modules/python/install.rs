//! The controller's ansible-core installation, found once per process: the
//! bottom of the Python fallback. `find.rs` looks for modules in it and
//! `payload.rs` takes `module_utils` from it, so it sits below both.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An ansible-core installation importable on the controller.
#[derive(Debug, Clone)]
pub struct AnsibleCore {
    /// The Python that imports it.
    pub python: PathBuf,
    /// The `ansible` package directory (holds `modules/` and `module_utils/`).
    pub package: PathBuf,
    pub version: String,
}

impl AnsibleCore {
    pub fn modules_dir(&self) -> PathBuf {
        self.package.join("modules")
    }
    pub fn module_utils_dir(&self) -> PathBuf {
        self.package.join("module_utils")
    }
}

/// The Pythons tried, in order: `KEEL_ANSIBLE_PYTHON` alone when set (an
/// explicit choice is not second-guessed); else `python3` on `PATH`, then
/// the interpreter of the `ansible-playbook` (or `ansible`) script on `PATH`,
/// which is how a venv or pipx install is usually reached.
fn candidate_pythons() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("KEEL_ANSIBLE_PYTHON").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![PathBuf::from("python3")];
    for tool in ["ansible-playbook", "ansible"] {
        let Some(exe) = on_path(tool) else { continue };
        let Ok(text) = std::fs::read(&exe) else {
            continue;
        };
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let Some(line) = std::str::from_utf8(first)
            .ok()
            .and_then(|l| l.strip_prefix("#!"))
        else {
            continue;
        };
        let mut words = line.split_whitespace();
        let Some(interp) = words.next() else { continue };
        let python = if interp.ends_with("/env") {
            words.next().map(PathBuf::from)
        } else {
            Some(PathBuf::from(interp))
        };
        out.extend(python);
    }
    out.dedup();
    out
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn probe(python: &Path) -> Option<AnsibleCore> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import os, ansible\nfrom ansible.release import __version__\nprint(os.path.dirname(ansible.__file__))\nprint(__version__)",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let package = PathBuf::from(lines.next()?.trim());
    let version = lines.next()?.trim().to_string();
    package.join("module_utils").is_dir().then(|| AnsibleCore {
        python: python.to_path_buf(),
        package,
        version,
    })
}

/// The controller's ansible-core, looked for once per process (see
/// [`candidate_pythons`] for where), or `None` when no Python imports one.
pub fn ansible_core() -> Option<&'static AnsibleCore> {
    static CORE: OnceLock<Option<AnsibleCore>> = OnceLock::new();
    CORE.get_or_init(|| candidate_pythons().iter().find_map(|p| probe(p)))
        .as_ref()
}
