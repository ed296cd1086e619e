//! Which collection a native module belongs to, so a fully qualified name
//! maps onto Keel's implementation only where the collection really has
//! that module: `community.general.ini_file` is the native `ini_file`,
//! `community.general.copy` is not `copy` (it names nothing, and is looked
//! for in the installed collections like any other name).
//!
//! `ansible.builtin`/`ansible.legacy` reach every native module (ansible-core
//! redirects the modules it moved out, such as `ansible.builtin.ini_file`,
//! to their collections). The lists below are the upstream collections'
//! module names, not Keel's: a name here that the registry lacks is still
//! unknown. Only `registry.rs` reads this file.

/// The collections whose modules Keel may implement natively, with their
/// module names (as of ansible 12: ansible.posix 2.x, community.general 11,
/// community.crypto 3, community.mysql 3, community.postgresql 4).
const OWNERS: &[(&str, &[&str])] = &[
    (
        "ansible.posix",
        &[
            "acl",
            "at",
            "authorized_key",
            "firewalld",
            "firewalld_info",
            "mount",
            "patch",
            "rhel_facts",
            "rhel_rpm_ostree",
            "rpm_ostree_upgrade",
            "seboolean",
            "selinux",
            "synchronize",
            "sysctl",
        ],
    ),
    (
        "community.general",
        &[
            "alternatives",
            "apache2_module",
            "capabilities",
            "cronvar",
            "django_manage",
            "filesystem",
            "gem",
            "git_config",
            "ini_file",
            "java_cert",
            "locale_gen",
            "lvg",
            "lvol",
            "make",
            "modprobe",
            "npm",
            "pam_limits",
            "parted",
            "pids",
            "pipx",
            "sefcontext",
            "snap",
            "supervisorctl",
            "timezone",
            "ufw",
            "xml",
        ],
    ),
    (
        "community.crypto",
        &[
            "openssh_keypair",
            "openssl_csr",
            "openssl_csr_pipe",
            "openssl_dhparam",
            "openssl_pkcs12",
            "openssl_privatekey",
            "openssl_privatekey_pipe",
            "openssl_publickey",
            "x509_certificate",
            "x509_certificate_pipe",
            "x509_crl",
        ],
    ),
    (
        "community.mysql",
        &[
            "mysql_db",
            "mysql_info",
            "mysql_query",
            "mysql_replication",
            "mysql_role",
            "mysql_user",
            "mysql_variables",
        ],
    ),
    (
        "community.postgresql",
        &[
            "postgresql_db",
            "postgresql_ext",
            "postgresql_info",
            "postgresql_lang",
            "postgresql_membership",
            "postgresql_owner",
            "postgresql_pg_hba",
            "postgresql_privs",
            "postgresql_query",
            "postgresql_schema",
            "postgresql_sequence",
            "postgresql_set",
            "postgresql_slot",
            "postgresql_table",
            "postgresql_tablespace",
            "postgresql_user",
        ],
    ),
];

/// The short name a fully qualified name maps onto, when its collection is
/// `ansible.builtin`/`ansible.legacy` or has a module of that name; `None`
/// for other names (a bare name is its own short name: also `None`).
pub(super) fn native_short(name: &str) -> Option<&str> {
    let (collection, short) = name.rsplit_once('.')?;
    if collection == "ansible.builtin" || collection == "ansible.legacy" {
        return Some(short);
    }
    OWNERS
        .iter()
        .any(|(c, names)| *c == collection && names.contains(&short))
        .then_some(short)
}

/// A native module's fully qualified name, as ansible-core names it in
/// messages: the collection that has it, else `ansible.builtin`.
pub(super) fn qualified(short: &str) -> String {
    let owner = OWNERS
        .iter()
        .find(|(_, names)| names.contains(&short))
        .map_or("ansible.builtin", |(c, _)| *c);
    format!("{owner}.{short}")
}

/// The collections that hold native modules, for messages.
pub(super) fn native_collections() -> Vec<&'static str> {
    let mut v = vec!["ansible.builtin"];
    v.extend(OWNERS.iter().map(|(c, _)| *c));
    v
}

/// Whether `collection` has a module called `short` that Keel could run
/// natively (the play's `collections:` keyword resolves bare names this way).
pub(super) fn collection_has(collection: &str, short: &str) -> bool {
    collection == "ansible.builtin"
        || collection == "ansible.legacy"
        || OWNERS
            .iter()
            .any(|(c, names)| *c == collection && names.contains(&short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_maps_only_the_modules_it_has() {
        assert_eq!(native_short("ansible.builtin.copy"), Some("copy"));
        assert_eq!(native_short("ansible.builtin.ini_file"), Some("ini_file"));
        assert_eq!(native_short("community.general.ini_file"), Some("ini_file"));
        assert_eq!(native_short("community.general.copy"), None);
        assert_eq!(native_short("ansible.posix.sysctl"), Some("sysctl"));
        assert_eq!(native_short("community.mysql.sysctl"), None);
        assert_eq!(native_short("acme.tools.hello"), None);
        assert_eq!(native_short("copy"), None);
        assert!(collection_has("community.postgresql", "postgresql_db"));
    }
}
