//! One connection per host. (To be implemented.)
#[derive(Default)]
pub struct ConnectionPool {}
