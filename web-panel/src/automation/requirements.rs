//! A project's requirements: the roles and collections its requirements
//! files name, installed with the engine's galaxy installer
//! (`keel::galaxy`, in process — never an `ansible-galaxy` subprocess) into
//! a directory of the project's own, which its runs then use as their only
//! `roles_path` and `collections_path` additions.
//!
//! It sits between the checkout (`git.rs`) and the playbook load: a sync
//! (`catalog::sync_project`) and every run (`run_job.rs`) call
//! [`install`] on the tree they are about to use. The files read are those
//! AWX reads — `roles/requirements.yml` and `collections/requirements.yml`
//! — and a top-level `requirements.yml`; each may hold `roles:` and
//! `collections:` (or be a plain list of roles).
//!
//! A git project installs once per commit, under
//! `<data_dir>/projects/<id>/deps/<sha>`: the tree is made beside its final
//! name and renamed into place only when every install succeeded, so a
//! failed or interrupted install leaves nothing a later run would mistake
//! for a finished one, and two processes installing the same commit keep
//! whichever finished first. A directory project has no revision: its
//! requirements are installed again at each run into `deps/directory`,
//! where what is already installed is kept (the installer skips it).
//!
//! Every line the installer says goes to the caller (the run's job log),
//! as it happens; on failure the error carries those lines too, so a sync
//! shows why.

use std::path::{Path, PathBuf};

use keel::galaxy::{self, GalaxyError, InstallOptions, Line, Requirements};

/// The requirements files a project may hold, relative to its root.
pub const FILES: [&str; 3] = [
    "roles/requirements.yml",
    "collections/requirements.yml",
    "requirements.yml",
];

/// Why a project's requirements could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    /// The installer refused or failed; `output` is everything it said.
    #[error("installing {file}: {source}{}", tail(.output))]
    Install {
        file: String,
        #[source]
        source: GalaxyError,
        output: Vec<String>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RequirementsError {
    /// Whether trying again may help: a file that does not parse or a
    /// source that does not exist stays so; a failed clone or disk error
    /// may not.
    pub fn is_retryable(&self) -> bool {
        match self {
            RequirementsError::Install { source, .. } => {
                matches!(source, GalaxyError::Git { .. } | GalaxyError::Io { .. })
            }
            RequirementsError::Io { .. } => true,
        }
    }
}

/// The installer's own lines, after the error, so a sync's answer says
/// what went wrong the way `keel galaxy install` would have.
fn tail(output: &[String]) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!("\n{}", output.join("\n"))
    }
}

/// Where a run finds what was installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// A `roles_path` entry, when some requirements file names roles.
    pub roles: Option<PathBuf>,
    /// A `collections_path` entry (holding `ansible_collections/`), when
    /// some requirements file names collections.
    pub collections: Option<PathBuf>,
}

/// The requirements files of `root` that exist.
pub fn files_of(root: &Path) -> Vec<PathBuf> {
    FILES
        .iter()
        .map(|f| root.join(f))
        .filter(|p| p.is_file())
        .collect()
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RequirementsError {
    let context = context.into();
    move |source| RequirementsError::Io { context, source }
}

/// Installs the requirements of the project tree `root` (at `revision`,
/// `None` for a directory project) and says where they are; `say` gets
/// each line of the installer's output as it comes. Nothing is installed,
/// and nothing is said, for a project with no requirements file.
pub async fn install(
    data_dir: &Path,
    project_id: i64,
    revision: Option<&str>,
    root: &Path,
    say: impl FnMut(String) + Send + 'static,
) -> Result<Installed, RequirementsError> {
    let files = files_of(root);
    if files.is_empty() {
        return Ok(Installed::default());
    }
    let lock = super::git::project_lock(project_id);
    let _guard = lock.lock().await;
    let deps = data_dir
        .join("projects")
        .join(project_id.to_string())
        .join("deps");
    let root = root.to_path_buf();
    let revision = revision.map(String::from);
    tokio::task::spawn_blocking(move || install_blocking(&deps, revision.as_deref(), &root, say))
        .await
        .map_err(|e| RequirementsError::Io {
            context: "the requirements install stopped".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// What was read from the project's requirements files, all together.
fn read_all(root: &Path, files: &[PathBuf]) -> Result<Requirements, RequirementsError> {
    let mut all = Requirements::default();
    for f in files {
        let r = galaxy::load_requirements(f).map_err(|source| RequirementsError::Install {
            file: relative(root, f),
            source,
            output: Vec::new(),
        })?;
        all.roles.extend(r.roles);
        all.collections.extend(r.collections);
    }
    Ok(all)
}

fn relative(root: &Path, f: &Path) -> String {
    f.strip_prefix(root).unwrap_or(f).display().to_string()
}

fn install_blocking(
    deps: &Path,
    revision: Option<&str>,
    root: &Path,
    mut say: impl FnMut(String),
) -> Result<Installed, RequirementsError> {
    let files = files_of(root);
    let reqs = read_all(root, &files)?;
    let name = revision.unwrap_or("directory");
    let done = deps.join(name);
    let installed = |dir: &Path| Installed {
        roles: (!reqs.roles.is_empty()).then(|| dir.join("roles")),
        collections: (!reqs.collections.is_empty()).then(|| dir.join("collections")),
    };
    if revision.is_some() && done.join(".installed").is_file() {
        say(format!(
            "requirements of {name} already installed in {}",
            done.display()
        ));
        return Ok(installed(&done));
    }
    std::fs::create_dir_all(deps).map_err(io(format!("creating {}", deps.display())))?;
    // A revision installs into a scratch tree renamed into place at the
    // end; a directory project installs in place, over what is there.
    let work = match revision {
        Some(_) => deps.join(format!(".{name}.{}", fastrand::u64(..))),
        None => done.clone(),
    };
    let result = install_into(&work, root, &files, &reqs, &mut say);
    if let Err(e) = result {
        if revision.is_some() {
            let _ = std::fs::remove_dir_all(&work);
        }
        return Err(e);
    }
    if revision.is_some() {
        std::fs::write(work.join(".installed"), b"")
            .map_err(io(format!("marking {} installed", work.display())))?;
        if let Err(e) = std::fs::rename(&work, &done) {
            let _ = std::fs::remove_dir_all(&work);
            // Another process installed the same revision first: use it.
            if !done.join(".installed").is_file() {
                return Err(io(format!("moving {} in place", done.display()))(e));
            }
        }
    }
    Ok(installed(&done))
}

fn install_into(
    work: &Path,
    root: &Path,
    files: &[PathBuf],
    reqs: &Requirements,
    say: &mut dyn FnMut(String),
) -> Result<(), RequirementsError> {
    let names: Vec<String> = files.iter().map(|f| relative(root, f)).collect();
    say(format!("installing requirements from {}", names.join(", ")));
    let opts = InstallOptions::default();
    // The installer's lines go to the caller and are kept for the error.
    let mut output: Vec<String> = Vec::new();
    let mut report = |line: Line| {
        let text = match line {
            Line::Info(t) => t,
            Line::Warning(t) => format!("[WARNING]: {t}"),
        };
        say(text.clone());
        output.push(text);
    };
    let what = names.join(", ");
    if !reqs.roles.is_empty() {
        let roles = work.join("roles");
        std::fs::create_dir_all(&roles).map_err(io(format!("creating {}", roles.display())))?;
        if let Err(source) = galaxy::install_roles(&reqs.roles, &roles, &opts, &mut report) {
            return Err(RequirementsError::Install {
                file: what,
                source,
                output,
            });
        }
    }
    if !reqs.collections.is_empty() {
        let colls = work.join("collections");
        let search = vec![colls.clone()];
        if let Err(source) =
            galaxy::install_collections(&reqs.collections, &colls, &search, &opts, &mut report)
        {
            return Err(RequirementsError::Install {
                file: what,
                source,
                output,
            });
        }
    }
    Ok(())
}
