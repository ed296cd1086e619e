//! Connection settings of one host. (To be implemented.)
/// Everything needed to open a connection to one host, taken from its
/// connection variables (`ansible_host`, `ansible_port`, `ansible_user`, ...).
#[derive(Debug, Clone, Default)]
pub struct ConnectSpec {}
