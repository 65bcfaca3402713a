//! `cdc-agent verify` from tests: its JSON report, the tables and keys in it, and a writer that
//! keeps changing the source meanwhile.

use std::time::Duration;

use serde_json::Value as Json;

use super::Pipeline;

/// `verify --json` with `args`: exit code and report.
pub fn verify(p: &Pipeline, args: &[&str]) -> (i32, Json) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = p.run_cmd(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}), exit {code}: {}\n{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.log()
        )
    });
    (code, report)
}

/// `verify` in a blocking thread, so that a writer goes on meanwhile.
pub async fn verify_while_writing(p: &Pipeline, args: &[&str]) -> (i32, Json) {
    let config = p.config.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
            .arg("-c")
            .arg(&config)
            .args(["verify", "--json"])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.log()
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

pub fn table<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// The values of key column `column` in a list of keys.
pub fn keys(list: &Json, column: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|k| k[column].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

/// (key, columns) of the different rows.
pub fn different(t: &Json, column: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = t["different_rows"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| {
            (
                r["key"][column].as_str().unwrap_or_default().to_string(),
                r["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Changes `ledger (id, tx, v)` until `stop`: per transaction 20 updates of random rows among
/// the first 20,000, 5 inserts of new keys (from 1,000,000 on) and 5 deletes; returns the
/// transactions committed. Keys from 20,001 to 999,999 are never touched.
pub fn spawn_churn(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    spawn_churn_from(url, stop, 1_000_000)
}

/// [`spawn_churn`] inserting new keys from `first_new_key` on (a second writer of one table).
pub fn spawn_churn_from(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    first_new_key: i64,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = super::connect(&url).await;
        let mut next = first_new_key;
        let mut transactions = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            c.batch_execute(&format!(
                "BEGIN;
                 UPDATE ledger SET v = v + 1 WHERE id IN (SELECT (random() * 20000)::bigint FROM generate_series(1, 20));
                 INSERT INTO ledger SELECT g, 1, 1 FROM generate_series({next}, {next} + 4) g;
                 DELETE FROM ledger WHERE id IN (SELECT (random() * 20000)::bigint FROM generate_series(1, 5));
                 COMMIT"
            ))
            .await
            .unwrap();
            next += 5;
            transactions += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        transactions
    })
}
