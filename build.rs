//! Where the binary finds DuckDB's shared library at run time, without `LD_LIBRARY_PATH`: its
//! own folder first (`$ORIGIN`: a copy of libduckdb.so shipped beside the binary, as the
//! container image does), then the folder it was linked against (scripts/duckdb-lib.sh).
//! Nothing to do with `duckdb-bundled` (DuckDB linked in statically) or without DuckDB.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    let linked = std::env::var_os("CARGO_FEATURE_DUCKDB").is_some()
        && std::env::var_os("CARGO_FEATURE_DUCKDB_BUNDLED").is_none();
    if !linked {
        return;
    }
    let mut run_path = String::from("$ORIGIN");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        run_path.push(':');
        run_path.push_str(&dir);
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{run_path}");
}
