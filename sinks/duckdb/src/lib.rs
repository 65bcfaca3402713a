//! DuckDB warehouse sink (work in progress: only the dependency is wired, so its long C++ build
//! can be cached ahead of the sink itself).

pub use duckdb::Connection;
