//! SSH transport. (To be implemented.)
use super::{Command, Output, TransportError};
pub struct SshConnection;
impl SshConnection {
    pub async fn exec(&self, _cmd: &Command) -> Result<Output, TransportError> {
        todo!()
    }
    pub async fn close(&self) {}
}
