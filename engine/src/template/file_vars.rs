//! The variables a template file sees about itself (`template_host`,
//! `template_path`, `template_mtime`, `template_uid`, `template_run_date`,
//! `template_destpath`, `template_fullpath`), as ansible-core's
//! `generate_ansible_template_vars` makes them. The `template` module and the
//! `template` lookup both layer them under the host's variables.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chrono::{DateTime, Local};
use minijinja::Value;

use super::datetime::PyDateTime;
use crate::vars::VarMap;

/// `path` as the task named it, `fullpath` the file found, `dest` where the
/// result goes (the module's `dest`; none for the lookup).
pub fn template_file_vars(path: &str, fullpath: &Path, dest: Option<&str>) -> VarMap {
    let mut m = VarMap::new();
    m.insert("template_host".into(), Value::from(hostname()));
    m.insert("template_path".into(), Value::from(path));
    m.insert(
        "template_fullpath".into(),
        Value::from(fullpath.display().to_string()),
    );
    m.insert(
        "template_destpath".into(),
        dest.map(Value::from).unwrap_or(Value::from(())),
    );
    if let Ok(meta) = std::fs::metadata(fullpath) {
        // Python's `datetime.fromtimestamp`: local time, no zone.
        if let Some(t) = DateTime::from_timestamp(meta.mtime(), meta.mtime_nsec() as u32) {
            let local = t.with_timezone(&Local).naive_local();
            m.insert(
                "template_mtime".into(),
                Value::from_object(PyDateTime(local)),
            );
        }
        let uid = meta.uid();
        m.insert(
            "template_uid".into(),
            user_name(uid).map(Value::from).unwrap_or(Value::from(uid)),
        );
    }
    m.insert(
        "template_run_date".into(),
        Value::from_object(PyDateTime(Local::now().naive_local())),
    );
    m
}

/// The controller's host name (Python's `os.uname()[1]`).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The name of user `uid` from the password database (`/etc/passwd`), as
/// Python's `pwd.getpwuid` finds it for local users.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}
