//! The playbook language: YAML → raw model → resolved [`plan`].
//!
//! `raw.rs` reads YAML nodes into a raw model and checks keywords (with "did
//! you mean" hints); `resolve.rs` expands roles (`roles.rs`: search path,
//! `meta/main.yml` dependencies as a DAG, `defaults`/`vars`), inlines imports,
//! copies inherited `when`/`tags`/`vars`/`become` onto children, indexes
//! handlers and checks references. Nothing here touches a host.

pub mod plan;
