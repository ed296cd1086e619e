//! `keel galaxy install`, through the binary, next to the reference
//! `ansible-galaxy` on the same inputs: roles from git repositories (with
//! versions and `meta/main.yml` dependencies), tarballs and directories;
//! collections from git, directories and tarballs; `--force`, `-p`, and
//! `roles_path`/`collections_path` from `ansible.cfg`. Everything is local:
//! the tests make their repositories and tarballs themselves.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/reference.rs"]
mod reference;

use cli::{git, run, text, write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(dir);
    reference::scrub(&mut c, dir);
    c
}

fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn commit_and_tag(dir: &Path, tag: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", tag]);
    git(dir, &["tag", tag]);
}

/// A role repository with tags v1.0 and v2.0 (the task's message says
/// which), depending on a second repository through `git+file://`.
fn role_repos(root: &Path) -> (String, String) {
    let dep = root.join("repos/deprole");
    write(&dep.join("tasks/main.yml"), "- debug: msg=dep\n");
    write(
        &dep.join("meta/main.yml"),
        "galaxy_info:\n  author: t\ndependencies: []\n",
    );
    git(&dep, &["init", "-q"]);
    commit_and_tag(&dep, "d1");
    let dep_url = format!("git+file://{}", dep.display());
    let web = root.join("repos/webby");
    write(&web.join("tasks/main.yml"), "- debug: msg=v1\n");
    write(
        &web.join("meta/main.yml"),
        &format!(
            "galaxy_info:\n  author: t\ndependencies:\n  - src: {dep_url}\n    name: deprole\n  - common\n"
        ),
    );
    git(&web, &["init", "-q"]);
    commit_and_tag(&web, "v1.0");
    write(&web.join("tasks/main.yml"), "- debug: msg=v2\n");
    commit_and_tag(&web, "v2.0");
    (format!("git+file://{}", web.display()), dep_url)
}

/// A collection source tree (`acme.tools` 1.0.0, then 1.1.0) in git, with a
/// module, a role and a `meta/runtime.yml`.
fn collection_repo(root: &Path) -> PathBuf {
    let c = root.join("repos/tools");
    write(
        &c.join("galaxy.yml"),
        "namespace: acme\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [t]\nlicense: GPL-3.0-or-later\ndependencies: {}\nbuild_ignore: ['*.orig']\n",
    );
    write(&c.join("README.md"), "# tools\n");
    write(&c.join("notes.orig"), "left out by build_ignore\n");
    write(
        &c.join("meta/runtime.yml"),
        "requires_ansible: '>=2.15'\nplugin_routing:\n  modules:\n    old_hello:\n      redirect: acme.tools.hello\n",
    );
    write(
        &c.join("plugins/modules/hello.py"),
        "#!/usr/bin/python\nfrom ansible.module_utils.basic import AnsibleModule\n\ndef main():\n    m = AnsibleModule(argument_spec=dict(name=dict(default='world')), supports_check_mode=True)\n    m.exit_json(changed=False, greeting='hello ' + m.params['name'])\n\nif __name__ == '__main__':\n    main()\n",
    );
    write(
        &c.join("roles/thing/tasks/main.yml"),
        "- debug: msg=thing\n",
    );
    git(&c, &["init", "-q"]);
    commit_and_tag(&c, "1.0.0");
    let galaxy = std::fs::read_to_string(c.join("galaxy.yml")).unwrap();
    write(&c.join("galaxy.yml"), &galaxy.replace("1.0.0", "1.1.0"));
    commit_and_tag(&c, "1.1.0");
    c
}

/// Every file under `dir`, relative, with its content; the install date
/// (which differs from run to run) left out, and FILES.json read as a set
/// of entries (ansible-galaxy lists a directory in `os.listdir` order).
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.push((rel.clone() + "/", String::new()));
                walk(base, &p, out);
            } else {
                let mut content = std::fs::read_to_string(&p).unwrap_or_default();
                if rel.ends_with(".galaxy_install_info") {
                    content = content
                        .lines()
                        .filter(|l| !l.starts_with("install_date:"))
                        .collect::<Vec<_>>()
                        .join("\n");
                }
                if rel.ends_with("FILES.json") {
                    let v: serde_json::Value = serde_json::from_str(&content).unwrap();
                    let mut entries: Vec<String> = v["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e.to_string())
                        .collect();
                    entries.sort();
                    content = entries.join("\n");
                }
                if rel.ends_with("MANIFEST.json") {
                    // Its FILES.json checksum follows the listing order.
                    let mut v: serde_json::Value = serde_json::from_str(&content).unwrap();
                    v["file_manifest_file"]["chksum_sha256"] = serde_json::Value::Null;
                    content = v.to_string();
                }
                out.push((rel, content));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Two project directories with the same `ansible.cfg`: one for Keel, one
/// for the reference.
struct Twin {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    keel: PathBuf,
    ansible: PathBuf,
    reference: Option<PathBuf>,
}

impl Twin {
    fn new(cfg: &str) -> Twin {
        let tmp = workdir();
        let root = tmp.path().to_path_buf();
        let keel = root.join("keel");
        let ansible = root.join("ansible");
        for d in [&keel, &ansible] {
            write(&d.join("ansible.cfg"), cfg);
        }
        Twin {
            _tmp: tmp,
            root,
            keel,
            ansible,
            reference: reference::reference_bin(),
        }
    }

    fn write_both(&self, rel: &str, content: &str) {
        write(&self.keel.join(rel), content);
        write(&self.ansible.join(rel), content);
    }

    /// Runs `keel galaxy ARGS` and, when the reference exists,
    /// `ansible-galaxy ARGS`; checks both exit the same way, print the same
    /// lines (with their own directory in them) and leave the same trees
    /// under `compare`. Returns Keel's standard output and error.
    fn galaxy(&self, args: &[&str], compare: &[&str]) -> (bool, String, String) {
        let k = run(keel(&self.keel).arg("galaxy").args(args));
        let kout = text(&k.stdout).replace(self.keel.to_str().unwrap(), "<dir>");
        let kerr = text(&k.stderr).replace(self.keel.to_str().unwrap(), "<dir>");
        if let Some(bin) = &self.reference {
            let a = run(reference::tool(bin, "ansible-galaxy", &self.ansible).args(args));
            let aout = text(&a.stdout).replace(self.ansible.to_str().unwrap(), "<dir>");
            assert_eq!(k.status.success(), a.status.success(), "exit status");
            assert_eq!(kout, aout, "standard output");
            for c in compare {
                assert_eq!(tree(&self.keel.join(c)), tree(&self.ansible.join(c)), "{c}");
            }
        }
        (k.status.success(), kout, kerr)
    }
}

#[test]
fn roles_from_git_install_with_versions_dependencies_and_force_as_ansible_galaxy_does() {
    let t = Twin::new("[defaults]\nroles_path = ./roles\n");
    let (web, _dep) = role_repos(&t.root);
    t.write_both(
        "requirements.yml",
        &format!("roles:\n  - src: {web}\n    name: webby\n    version: v1.0\n"),
    );
    let (ok, out, _) = t.galaxy(&["install", "-r", "requirements.yml"], &["roles"]);
    assert!(ok);
    assert_eq!(
        out,
        "Starting galaxy role install process\n\
         - extracting webby to <dir>/roles/webby\n\
         - webby (v1.0) was installed successfully\n\
         - adding dependency: deprole\n\
         - extracting deprole to <dir>/roles/deprole\n\
         - deprole was installed successfully\n"
    );
    let roles = t.keel.join("roles");
    assert_eq!(
        std::fs::read_to_string(roles.join("webby/tasks/main.yml")).unwrap(),
        "- debug: msg=v1\n"
    );
    assert!(
        !roles.join("webby/.git").exists(),
        "a clone's history is not installed"
    );
    let info = std::fs::read_to_string(roles.join("webby/meta/.galaxy_install_info")).unwrap();
    assert!(info.ends_with("version: v1.0\n"), "{info}");
    assert!(info.starts_with("install_date: "), "{info}");
    // `- common` names a role of the play's own path: not installed.
    assert!(!roles.join("common").exists());

    // Again: nothing to do.
    let (ok, out, _) = t.galaxy(&["install", "-r", "requirements.yml"], &["roles"]);
    assert!(ok);
    assert!(
        out.contains("- webby (v1.0) is already installed, skipping."),
        "{out}"
    );

    // Another version is only taken with --force.
    t.write_both(
        "requirements.yml",
        &format!("roles:\n  - src: {web}\n    name: webby\n    version: v2.0\n"),
    );
    let (ok, _, err) = t.galaxy(&["install", "-r", "requirements.yml"], &["roles"]);
    assert!(ok);
    assert!(
        err.contains("- webby (v1.0) is already installed - use --force to change version to v2.0"),
        "{err}"
    );
    let (ok, out, _) = t.galaxy(
        &["install", "-r", "requirements.yml", "--force"],
        &["roles"],
    );
    assert!(ok);
    assert!(
        out.contains("- changing role webby from v1.0 to v2.0"),
        "{out}"
    );
    assert!(
        out.contains("- dependency deprole is already installed, skipping."),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(roles.join("webby/tasks/main.yml")).unwrap(),
        "- debug: msg=v2\n"
    );
}

#[test]
fn role_names_on_the_command_line_and_tarballs_install_under_dash_p() {
    let t = Twin::new("[defaults]\n");
    let (web, _) = role_repos(&t.root);
    // A role tarball, as a release page would have it.
    let tarball = t.root.join("deprole.tar.gz");
    let st = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .args(["--exclude=.git", "-C"])
        .arg(t.root.join("repos"))
        .arg("deprole")
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, out, _) = t.galaxy(
        &[
            "role",
            "install",
            "-p",
            "myroles",
            &format!("{web},v2.0,other"),
        ],
        &["myroles"],
    );
    assert!(ok);
    assert!(
        out.contains("- other (v2.0) was installed successfully"),
        "{out}"
    );
    t.write_both(
        "req.yml",
        &format!(
            "- src: {0}\n  name: tarred\n- src: file://{0}\n  name: tarred2\n",
            tarball.display()
        ),
    );
    let (ok, out, _) = t.galaxy(
        &["install", "-r", "req.yml", "-p", "tarroles"],
        &["tarroles"],
    );
    assert!(ok);
    assert!(
        out.contains(&format!(
            "- downloading role from file://{}",
            tarball.display()
        )),
        "{out}"
    );
    assert!(t.keel.join("tarroles/tarred2/tasks/main.yml").is_file());
}

#[test]
fn collections_install_from_git_directories_and_tarballs() {
    let t = Twin::new("[defaults]\ncollections_path = ./collections\n");
    let repo = collection_repo(&t.root);
    let url = format!("git+file://{}", repo.display());
    t.write_both(
        "requirements.yml",
        &format!("collections:\n  - name: {url}\n    type: git\n    version: 1.0.0\n"),
    );
    let (ok, out, _) = t.galaxy(
        &["collection", "install", "-r", "requirements.yml"],
        &["collections"],
    );
    assert!(ok);
    assert_eq!(
        out,
        "Starting galaxy collection install process\n\
         Process install dependency map\n\
         Starting collection install process\n\
         Installing 'acme.tools:1.0.0' to '<dir>/collections/ansible_collections/acme/tools'\n\
         Created collection for acme.tools:1.0.0 at <dir>/collections/ansible_collections/acme/tools\n\
         acme.tools:1.0.0 was installed successfully\n"
    );
    let coll = t.keel.join("collections/ansible_collections/acme/tools");
    assert!(coll.join("plugins/modules/hello.py").is_file());
    assert!(
        !coll.join("galaxy.yml").exists(),
        "a build leaves galaxy.yml out"
    );
    assert!(
        !coll.join("notes.orig").exists(),
        "build_ignore is honoured"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(coll.join("MANIFEST.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["collection_info"]["version"], "1.0.0");
    assert_eq!(
        manifest["collection_info"]["license"],
        serde_json::json!(["GPL-3.0-or-later"])
    );

    // A git requirement is always fetched again (its collection is known
    // only after cloning), and takes the new ref.
    t.write_both(
        "requirements.yml",
        &format!("collections:\n  - name: {url}\n    type: git\n    version: 1.1.0\n"),
    );
    let (ok, out, _) = t.galaxy(
        &["collection", "install", "-r", "requirements.yml"],
        &["collections"],
    );
    assert!(ok);
    assert!(
        out.contains("acme.tools:1.1.0 was installed successfully"),
        "{out}"
    );

    // The installed tree, tarred, is a built collection. Installing it
    // elsewhere does nothing while a configured path holds that version.
    let tarball = t.root.join("acme-tools-1.1.0.tar.gz");
    // Entries named as a build names them (`MANIFEST.json`, not
    // `./MANIFEST.json`, which ansible-galaxy does not find).
    let mut top: Vec<String> = std::fs::read_dir(&coll)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let st = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&coll)
        .args(&top)
        .status()
        .unwrap();
    assert!(st.success());
    let tar = tarball.display().to_string();
    let (ok, out, err) = t.galaxy(&["collection", "install", "-p", "other", &tar], &["other"]);
    assert!(ok);
    assert!(err.contains("The specified collections path '<dir>/other' is not part of the configured Ansible collections paths"), "{err}");
    assert!(
        out.contains("Nothing to do. All requested collections are already installed."),
        "{out}"
    );
    let (ok, out, _) = t.galaxy(
        &["collection", "install", "-p", "other", &tar, "--force"],
        &["other"],
    );
    assert!(ok);
    assert!(
        out.contains("acme.tools:1.1.0 was installed successfully"),
        "{out}"
    );

    // A source directory (its version from galaxy.yml; installed already,
    // so only with --force).
    let dir = repo.display().to_string();
    let (ok, out, _) = t.galaxy(
        &["collection", "install", "-p", "fromdir", &dir],
        &["fromdir"],
    );
    assert!(ok);
    assert!(out.contains("Nothing to do."), "{out}");
    let (ok, out, _) = t.galaxy(
        &["collection", "install", "-p", "fromdir", &dir, "--force"],
        &["fromdir"],
    );
    assert!(ok);
    assert!(
        out.contains("Created collection for acme.tools:1.1.0"),
        "{out}"
    );
}

#[test]
fn install_dash_r_installs_roles_and_collections_to_the_configured_paths() {
    let t = Twin::new("[defaults]\nroles_path = ./roles\ncollections_path = ./collections\n");
    let (web, _) = role_repos(&t.root);
    let repo = collection_repo(&t.root);
    let req = format!(
        "roles:\n  - src: {web}\n    name: webby\n    version: v2.0\ncollections:\n  - name: git+file://{}\n    type: git\n    version: 1.1.0\n",
        repo.display()
    );
    t.write_both("requirements.yml", &req);
    let (ok, out, _) = t.galaxy(
        &["install", "-r", "requirements.yml"],
        &["roles", "collections"],
    );
    assert!(ok);
    assert!(
        out.starts_with("Starting galaxy role install process\n"),
        "{out}"
    );
    assert!(
        out.contains("Starting galaxy collection install process\n"),
        "{out}"
    );
    assert!(t
        .keel
        .join("roles/webby/meta/.galaxy_install_info")
        .is_file());
    assert!(t
        .keel
        .join("collections/ansible_collections/acme/tools/MANIFEST.json")
        .is_file());

    // With -p the collections are left out, with a warning.
    let (ok, _, err) = t.galaxy(
        &["install", "-r", "requirements.yml", "-p", "elsewhere"],
        &["elsewhere"],
    );
    assert!(ok);
    assert!(
        err.contains("contains collections which will be ignored"),
        "{err}"
    );
    assert!(!t.keel.join("elsewhere/ansible_collections").exists());
}

#[test]
fn a_collection_dependency_nothing_provides_is_an_error_naming_it() {
    let tmp = workdir();
    let c = tmp.path().join("src/acme/needy");
    write(
        &c.join("galaxy.yml"),
        "namespace: acme\nname: needy\nversion: 0.1.0\nreadme: README.md\nauthors: [t]\ndependencies:\n  acme.missing: '>=1.0.0'\n",
    );
    write(&c.join("README.md"), "x\n");
    write(
        &tmp.path().join("ansible.cfg"),
        "[defaults]\ncollections_path = ./collections\n",
    );
    let out = run(keel(tmp.path())
        .args(["galaxy", "collection", "install"])
        .arg(&c));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("* acme.missing:>=1.0.0 (dependency of acme.needy:0.1.0)"),
        "{err}"
    );
    assert!(!tmp
        .path()
        .join("collections/ansible_collections/acme/needy")
        .exists());
    // With --no-deps it installs.
    let out = run(keel(tmp.path())
        .args(["galaxy", "collection", "install", "--no-deps"])
        .arg(&c));
    assert!(out.status.success());
    assert!(tmp
        .path()
        .join("collections/ansible_collections/acme/needy/MANIFEST.json")
        .is_file());
    // A Galaxy name is met only by what is installed.
    let out = run(keel(tmp.path()).args(["galaxy", "collection", "install", "acme.needy:>=0.1"]));
    assert!(out.status.success(), "already installed");
    assert!(text(&out.stdout).contains("Nothing to do."));
    let out = run(keel(tmp.path()).args(["galaxy", "collection", "install", "acme.other"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no Galaxy server"),
        "{}",
        text(&out.stderr)
    );
}
