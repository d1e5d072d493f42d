//! `sqlx::migrate!` embeds the migrations at compile time, but cargo does
//! not see a migration file added later: without this, an incremental
//! build keeps the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
