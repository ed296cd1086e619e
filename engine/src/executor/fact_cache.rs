//! The fact cache (`fact_caching`): where gathered facts outlive a run.
//!
//! `memory` keeps them for the run only (facts already persist across the
//! plays of one run in [`Persistent`](super::host::Persistent)). `jsonfile`
//! keeps one file per host in `fact_caching_connection`, in ansible-core
//! 2.19's layout, so Keel and ansible-playbook share a cache: the file is
//! `<dir>/<prefix>s1_<host>` and holds `{"__payload__": "<the facts as a
//! JSON text>"}`; a file older than `fact_caching_timeout` seconds (0: never)
//! is stale. The play loop loads a host's cached facts when it first meets
//! the host and the run stores every host's facts when it ends.
//!
//! It sits beside `options.rs`, below everything else in the executor.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::vars::VarMap;

/// Which cache, from `fact_caching` and its options.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FactCache {
    #[default]
    Memory,
    JsonFile {
        dir: PathBuf,
        /// `fact_caching_timeout` (0: entries never expire).
        timeout: Duration,
        /// `fact_caching_prefix`, when set.
        prefix: String,
    },
}

/// A fact cache entry that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FactCacheError {
    #[error("fact cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fact cache {path} holds no facts: {reason}")]
    Content { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FactCacheError + '_ {
    move |source| FactCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// ansible-core 2.19 tags cache keys with its serialisation schema.
const SCHEMA_PREFIX: &str = "s1_";
const PAYLOAD: &str = "__payload__";

impl FactCache {
    fn file(dir: &Path, prefix: &str, host: &str) -> PathBuf {
        dir.join(format!("{prefix}{SCHEMA_PREFIX}{host}"))
    }

    /// The cached facts of `host`, if a fresh entry exists. A file that
    /// cannot be read as a cache entry is treated as absent (ansible-core
    /// warns and does the same).
    pub fn load(&self, host: &str) -> Result<Option<VarMap>, FactCacheError> {
        let FactCache::JsonFile {
            dir,
            timeout,
            prefix,
        } = self
        else {
            return Ok(None);
        };
        let path = Self::file(dir, prefix, host);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        if !timeout.is_zero() {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age > *timeout {
                return Ok(None);
            }
        }
        let content = |reason: String| FactCacheError::Content {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let outer: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| content(e.to_string()))?;
        let facts = match outer.get(PAYLOAD).and_then(|p| p.as_str()) {
            Some(inner) => serde_json::from_str::<serde_json::Value>(inner)
                .map_err(|e| content(e.to_string()))?,
            None => outer,
        };
        let serde_json::Value::Object(map) = facts else {
            return Err(content("not a mapping".into()));
        };
        Ok(Some(
            map.into_iter()
                .map(|(k, v)| (k, crate::template::value_from_json(&v)))
                .collect(),
        ))
    }

    /// Drops the cache entry of `host` (`--flush-cache`).
    pub fn forget(&self, host: &str) -> Result<(), FactCacheError> {
        let FactCache::JsonFile { dir, prefix, .. } = self else {
            return Ok(());
        };
        let path = Self::file(dir, prefix, host);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Writes `facts` as the cache entry of `host` (atomically: a reader
    /// never sees half a file).
    pub fn store(&self, host: &str, facts: &VarMap) -> Result<(), FactCacheError> {
        let FactCache::JsonFile { dir, prefix, .. } = self else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let inner: serde_json::Map<String, serde_json::Value> = facts
            .iter()
            .map(|(k, v)| (k.clone(), crate::template::value_to_json(v)))
            .collect();
        let payload = serde_json::Value::Object(inner).to_string();
        let text = serde_json::json!({ PAYLOAD: payload }).to_string();
        let path = Self::file(dir, prefix, host);
        let tmp = path.with_extension(format!("keel-{}", std::process::id()));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Value;

    #[test]
    fn round_trip_in_ansible_layout() {
        let d = tempfile::tempdir().unwrap();
        let cache = FactCache::JsonFile {
            dir: d.path().to_path_buf(),
            timeout: Duration::from_secs(60),
            prefix: String::new(),
        };
        let mut facts = VarMap::new();
        facts.insert("ansible_hostname".into(), Value::from("h1"));
        cache.store("h1", &facts).unwrap();
        let text = std::fs::read_to_string(d.path().join("s1_h1")).unwrap();
        let outer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(outer["__payload__"]
            .as_str()
            .unwrap()
            .contains("ansible_hostname"));
        let back = cache.load("h1").unwrap().unwrap();
        assert_eq!(back.get("ansible_hostname"), Some(&Value::from("h1")));
        assert!(cache.load("h2").unwrap().is_none());
    }

    #[test]
    fn stale_entries_are_absent() {
        let d = tempfile::tempdir().unwrap();
        let cache = FactCache::JsonFile {
            dir: d.path().to_path_buf(),
            timeout: Duration::from_secs(1),
            prefix: "p_".into(),
        };
        cache.store("h1", &VarMap::new()).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.path().join("p_s1_h1"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(5))
            .unwrap();
        assert!(cache.load("h1").unwrap().is_none());
    }
}
