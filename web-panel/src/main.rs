//! `keel-panel`: the web panel binary (serve, worker, admin).
fn main() {
    println!("keel-panel: not yet built; see ARCHITECTURE.md");
}
