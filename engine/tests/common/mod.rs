//! The harness the module tests share: one real sshd test host with an open
//! SSH connection, and helpers to run a module on it in normal, check or diff
//! mode. Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use keel::modules::{self, Args, ModuleError, ModuleResult, TaskContext};
use keel::template::{value_from_json, Scope, Templar, TemplateOrigin};
use keel::transport::{ConnectSpec, Connection, SshConnection};
use keel::vars::VarMap;
use keel_testhosts::TestHosts;
use minijinja::Value;
use serde_json::json;

#[derive(Clone, Copy)]
pub struct Mode {
    pub check: bool,
    pub diff: bool,
}

pub const NORMAL: Mode = Mode {
    check: false,
    diff: false,
};
pub const CHECK: Mode = Mode {
    check: true,
    diff: true,
};
pub const DIFF: Mode = Mode {
    check: false,
    diff: true,
};

/// One running test host with an open SSH connection.
pub struct Host {
    pub th: TestHosts,
    pub rt: tokio::runtime::Runtime,
    pub conn: Connection,
    pub templar: Arc<Templar>,
    pub scope: Scope,
    pub origin: TemplateOrigin,
    pub search: Vec<PathBuf>,
    /// The task environment (tests may override `PATH`).
    pub env: std::cell::RefCell<Vec<(String, String)>>,
    pub _dir: tempfile::TempDir,
}

impl Host {
    pub fn start() -> Host {
        Host::with_vars(json!({}))
    }

    pub fn with_vars(vars: serde_json::Value) -> Host {
        let th = TestHosts::start(1).expect("starting a test host");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = &th.hosts[0];
        let mut v = VarMap::new();
        v.insert("ansible_host".into(), Value::from(h.addr.clone()));
        v.insert("ansible_port".into(), Value::from(h.port));
        v.insert("ansible_user".into(), Value::from("root"));
        v.insert(
            "ansible_ssh_private_key_file".into(),
            Value::from(th.client_key.display().to_string()),
        );
        v.insert(
            "ansible_ssh_common_args".into(),
            Value::from(format!(
                "-o UserKnownHostsFile={}",
                th.known_hosts.display()
            )),
        );
        let spec = ConnectSpec::from_vars(&h.name, &v).unwrap();
        let conn = rt
            .block_on(SshConnection::connect(&h.name, &spec))
            .map(|c| Connection::Ssh(Box::new(c)))
            .expect("connecting to the test host");
        let mut layer = VarMap::new();
        for (k, val) in vars.as_object().unwrap() {
            layer.insert(k.clone(), value_from_json(val));
        }
        let mut scope = Scope::new();
        scope.push(Arc::new(layer));
        let dir = tempfile::tempdir().unwrap();
        let search = vec![dir.path().to_path_buf()];
        Host {
            origin: TemplateOrigin {
                search_paths: search.clone(),
                ..Default::default()
            },
            th,
            rt,
            conn,
            templar: Templar::new(),
            scope,
            search,
            env: Default::default(),
            _dir: dir,
        }
    }

    /// A controller-side file next to the "playbook".
    pub fn controller_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.search[0].join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn try_run(
        &self,
        module: &str,
        args: serde_json::Value,
        mode: Mode,
    ) -> Result<ModuleResult, ModuleError> {
        let m = modules::lookup(module).unwrap_or_else(|| panic!("{module} is not registered"));
        let args: Args = args
            .as_object()
            .expect("args must be an object")
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v)))
            .collect();
        let ctx = TaskContext {
            host: "h1",
            conn: &self.conn,
            templar: &self.templar,
            scope: &self.scope,
            origin: &self.origin,
            check_mode: mode.check,
            diff: mode.diff,
            no_log: false,
            become_: None,
            env: self.env.borrow().clone(),
            search_paths: &self.search,
            timeout: Some(std::time::Duration::from_secs(300)),
        };
        self.rt.block_on(m.run(&args, &ctx))
    }

    pub fn run(&self, module: &str, args: serde_json::Value, mode: Mode) -> ModuleResult {
        match self.try_run(module, args.clone(), mode) {
            Ok(r) => r,
            Err(e) => panic!("{module} {args}: {e}"),
        }
    }

    /// Runs `args` in check mode (must report a change and change nothing
    /// `probe` can see), then for real (changed), then again (unchanged).
    pub fn converge(&self, module: &str, args: serde_json::Value, probe: &str) -> ModuleResult {
        let before = self.out(probe);
        let check = self.run(module, args.clone(), CHECK);
        assert!(
            !check.failed,
            "{module} {args} (check) failed: {:?}",
            check.msg
        );
        assert!(
            check.changed,
            "{module} {args}: check mode should report a change"
        );
        assert_eq!(
            self.out(probe),
            before,
            "{module}: check mode changed the host"
        );
        let first = self.run(module, args.clone(), DIFF);
        assert!(!first.failed, "{module} {args} failed: {:?}", first.msg);
        assert!(first.changed, "{module} {args}: first run should change");
        assert_ne!(
            self.out(probe),
            before,
            "{module}: the change is not visible"
        );
        let second = self.run(module, args.clone(), NORMAL);
        assert!(
            !second.failed,
            "{module} {args} failed on rerun: {:?}",
            second.msg
        );
        assert!(
            !second.changed,
            "{module} {args}: second run should not change"
        );
        first
    }

    /// Runs a shell command in the host; panics if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        self.th.sh(0, cmd)
    }

    /// A command's stdout and stderr whatever its exit status.
    pub fn out(&self, cmd: &str) -> String {
        let o = self.th.exec(0, cmd);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

pub fn data<'a>(r: &'a ModuleResult, key: &str) -> &'a Value {
    r.data.get(key).unwrap_or_else(|| {
        panic!(
            "no '{key}' in result: {:?}",
            r.data.keys().collect::<Vec<_>>()
        )
    })
}
