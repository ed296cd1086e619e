//! `keel-testhosts up N` / `down`: the test hosts for use by hand and by
//! scripts (see `tests/hosts/up`). Hosts started here outlive this process.

use anyhow::{bail, Result};
use keel_testhosts::TestHosts;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => {
            let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
            let th = TestHosts::start_detached(n)?;
            let inv = th.dir.join("inventory.ini");
            std::fs::write(&inv, th.inventory_ini(""))?;
            println!("inventory: {}", inv.display());
            println!("known_hosts: {}", th.known_hosts.display());
            println!("client_key: {}", th.client_key.display());
            Ok(())
        }
        Some("down") => TestHosts::stop_detached(),
        Some("preflight") => keel_testhosts::preflight(),
        _ => bail!("usage: keel-testhosts up [N] | down | preflight"),
    }
}
