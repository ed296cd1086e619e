//! Database modules: MySQL/MariaDB and PostgreSQL databases and accounts,
//! driven through the `mariadb`/`mysql` or `psql` client on the target (no
//! Python, no driver on the controller).
//!
//! Each module follows the query-then-apply shape of the other modules:
//! one SQL batch reads the server's state, the comparison runs on the
//! controller, and at most one more batch makes the change. Check mode
//! stops after the comparison. `postgresql_privs` compares what the server
//! itself computes: it tries its statement between two ACL reads in a
//! transaction that always rolls back, so its query changes nothing
//! either. [`kit::mysql`](super::kit::mysql) and
//! [`kit::postgres`](super::kit::postgres) hold the login arguments, SQL
//! quoting and the batch runners.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod mysql_db;
pub mod mysql_user;
pub mod postgresql_db;
pub mod postgresql_privs;
pub mod postgresql_user;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("mysql_db", Arc::new(mysql_db::MysqlDb));
    m.insert("mysql_user", Arc::new(mysql_user::MysqlUser));
    m.insert("postgresql_db", Arc::new(postgresql_db::PostgresqlDb));
    m.insert(
        "postgresql_privs",
        Arc::new(postgresql_privs::PostgresqlPrivs),
    );
    m.insert("postgresql_user", Arc::new(postgresql_user::PostgresqlUser));
}
