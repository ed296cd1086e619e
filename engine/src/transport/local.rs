//! Local transport. (To be implemented.)
use super::{Command, Output, TransportError};
pub struct LocalConnection;
impl LocalConnection {
    pub async fn exec(&self, _cmd: &Command) -> Result<Output, TransportError> {
        todo!()
    }
}
