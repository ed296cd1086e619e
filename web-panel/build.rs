//! Build script: rebuild when a migration is added, because `sqlx::migrate!`
//! embeds the migrations directory at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
