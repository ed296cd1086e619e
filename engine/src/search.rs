//! Where relative file names are found: Ansible's search stack.
//!
//! Every task carries a *search stack* (Ansible's `ansible_search_path`): the
//! role it belongs to, then the roles that pulled that role in (dependency or
//! include chain, innermost first), then the directory of the task's own file,
//! then the playbook directory. The executor builds it once per task
//! ([`task_stack`]) and hands it to templating (lookups) and modules through
//! `TemplateOrigin::search_paths`; [`find`] then looks a relative name up the
//! way ansible-core's `DataLoader.path_dwim_relative_stack` does, so `copy`,
//! `template`, `include_vars`, `lookup('file')`, `first_found` and
//! `include_tasks` all agree on which file a name means.
//!
//! This sits below `template`, `modules`, `playbook` and `executor`, and
//! depends on nothing of theirs.

use std::path::{Path, PathBuf};

/// The search stack of a task: `roles` (the task's role first, then the roles
/// that brought it in, innermost first), then `file_dir`, then `playbook_dir`;
/// each directory once.
pub fn task_stack<'a>(
    roles: impl IntoIterator<Item = &'a Path>,
    file_dir: &Path,
    playbook_dir: &Path,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roles {
        if !out.iter().any(|p| p == r) {
            out.push(r.to_path_buf());
        }
    }
    for d in [file_dir, playbook_dir] {
        if !d.as_os_str().is_empty() && !out.iter().any(|p| p == d) {
            out.push(d.to_path_buf());
        }
    }
    out
}

/// A name that matched nothing; `tried` lists every candidate in order. It
/// displays as ansible-core's "Could not find or access" message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    pub name: String,
    pub tried: Vec<PathBuf>,
}

impl std::error::Error for NotFound {}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Could not find or access '{}'", self.name)?;
        if !self.tried.is_empty() {
            write!(f, "\nSearched in:")?;
            for p in &self.tried {
                write!(f, "\n\t{}", p.display())?;
            }
        }
        write!(
            f,
            " on the Ansible Controller.\nIf you are using a module and expect the file to exist \
             on the remote, see the remote_src option"
        )
    }
}

/// Expands a leading `~` or `~/` to `$HOME`.
fn expand_home(name: &str) -> PathBuf {
    if name == "~" {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h);
        }
    }
    if let Some(rest) = name.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    PathBuf::from(name)
}

/// Ansible's "imperfect role detection": a directory with `tasks/main.*` or
/// `meta/main.*`, or a `tasks` directory holding `main.*`.
fn looks_like_role(path: &Path) -> bool {
    let mains = ["main.yml", "main.yaml", "main"];
    let under = |dir: &Path| {
        ["tasks", "meta"]
            .iter()
            .any(|sub| mains.iter().any(|m| dir.join(sub).join(m).exists()))
    };
    if path.file_name().is_some_and(|n| n == "tasks") && mains.iter().any(|m| path.join(m).exists())
    {
        return true;
    }
    under(path) || path.parent().is_some_and(under)
}

/// The candidates [`find`] tries, in order. Like ansible-core, the last
/// entry of the stack (the playbook directory) is tried once more at the end,
/// so "Searched in" lists match its messages.
pub fn candidates(stack: &[PathBuf], subdir: Option<&str>, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    // ansible-core means to skip `<dir>/<subdir>/<name>` when the name starts
    // with the subdir, but compares bytes with text, so it never does.
    let plain = |dir: &Path, out: &mut Vec<PathBuf>| {
        if let Some(sub) = subdir {
            out.push(dir.join(sub).join(name));
        }
        out.push(dir.join(name));
    };
    for dir in stack {
        // A file under a role's `tasks/<sub>/`: also the role's `<subdir>/`
        // and its `tasks/`.
        if let Some(tasks) = dir
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "tasks"))
        {
            if looks_like_role(dir) || looks_like_role(tasks) {
                if let (Some(role), Some(sub)) = (tasks.parent(), subdir) {
                    out.push(role.join(sub).join(name));
                }
                out.push(tasks.join(name));
            }
        }
        plain(dir, &mut out);
    }
    if let Some(basedir) = stack.last() {
        plain(basedir, &mut out);
    }
    out
}

/// Finds `name` the way `path_dwim_relative_stack` does: absolute (or `~`)
/// names as they are; otherwise, for each directory of `stack` in order,
/// `<dir>/<subdir>/<name>` then `<dir>/<name>` (see [`candidates`]). The
/// stack's last entry is the playbook directory, the last resort.
pub fn find(stack: &[PathBuf], subdir: Option<&str>, name: &str) -> Result<PathBuf, NotFound> {
    if name.starts_with('/') || name.starts_with('~') {
        let p = expand_home(name);
        return if p.exists() {
            Ok(p)
        } else {
            Err(NotFound {
                name: name.to_string(),
                tried: vec![p],
            })
        };
    }
    let tried = candidates(stack, subdir, name);
    match tried.iter().find(|p| p.exists()) {
        Some(p) => Ok(p.clone()),
        None => Err(NotFound {
            name: name.to_string(),
            tried,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn role_files_win_over_the_playbook_dir() {
        let t = tempfile::tempdir().unwrap();
        let role = t.path().join("roles/r");
        touch(&role.join("tasks/main.yml"));
        touch(&role.join("files/a.txt"));
        touch(&t.path().join("a.txt"));
        let stack = task_stack([role.as_path()], &role.join("tasks"), t.path());
        assert_eq!(
            find(&stack, Some("files"), "a.txt").unwrap(),
            role.join("files/a.txt")
        );
    }

    #[test]
    fn a_role_task_finds_sibling_task_files() {
        let t = tempfile::tempdir().unwrap();
        let role = t.path().join("r");
        touch(&role.join("tasks/main.yml"));
        touch(&role.join("tasks/default.yml"));
        let stack = task_stack([role.as_path()], &role.join("tasks"), t.path());
        assert_eq!(
            find(&stack, None, "default.yml").unwrap(),
            role.join("tasks/default.yml")
        );
    }

    #[test]
    fn parent_roles_are_searched_after_the_task_role() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("parent");
        let dep = t.path().join("dep");
        touch(&parent.join("tasks/main.yml"));
        touch(&dep.join("tasks/main.yml"));
        touch(&parent.join("templates/x.j2"));
        let stack = task_stack(
            [dep.as_path(), parent.as_path()],
            &dep.join("tasks"),
            t.path(),
        );
        assert_eq!(
            find(&stack, Some("templates"), "x.j2").unwrap(),
            parent.join("templates/x.j2")
        );
    }

    #[test]
    fn a_task_file_in_a_tasks_subdir_sees_the_role_subdir() {
        let t = tempfile::tempdir().unwrap();
        let role = t.path().join("r");
        touch(&role.join("tasks/main.yml"));
        touch(&role.join("vars/v.yml"));
        let stack = task_stack([], &role.join("tasks/sub"), t.path());
        assert_eq!(
            find(&stack, Some("vars"), "v.yml").unwrap(),
            role.join("vars/v.yml")
        );
    }

    #[test]
    fn the_playbook_dir_is_tried_again_last() {
        let stack = vec![PathBuf::from("/pb")];
        assert_eq!(
            candidates(&stack, Some("files"), "files/x"),
            vec![
                PathBuf::from("/pb/files/files/x"),
                PathBuf::from("/pb/files/x"),
                PathBuf::from("/pb/files/files/x"),
                PathBuf::from("/pb/files/x")
            ]
        );
    }

    #[test]
    fn missing_names_report_what_was_tried() {
        let stack = vec![PathBuf::from("/nonexistent-keel")];
        let e = find(&stack, Some("vars"), "v.yml").unwrap_err();
        assert_eq!(
            e.tried,
            vec![
                PathBuf::from("/nonexistent-keel/vars/v.yml"),
                PathBuf::from("/nonexistent-keel/v.yml"),
                PathBuf::from("/nonexistent-keel/vars/v.yml"),
                PathBuf::from("/nonexistent-keel/v.yml")
            ]
        );
    }
}
