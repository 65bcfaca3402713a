//! The sink's own tests load DuckDB's shared library from the folder it was linked against
//! (scripts/duckdb-lib.sh), without `LD_LIBRARY_PATH`. The binary sets its run path itself.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
