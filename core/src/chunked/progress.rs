//! Requests and progress of chunked snapshots, kept in a source's state tree.
//!
//! - `snapshot/request/{table}` → `{"generation": g}`: the newest copy asked for; with
//!   `"ranges": [{"from": c, "through": k}, ...]` only those key ranges (`cdc-agent verify
//!   --repair`).
//! - `snapshot/progress/{table}/{g:010}/{at:016x}` → `{"from": f, "cursor": c, "rows": n}`: the
//!   chunk of keys in (f, c] (`c` = `"done"`: to the end of the table), `n` rows, went down the
//!   pipeline in the watermark transaction at stream order `at`. It counts once the checkpoint has
//!   passed `at`, i.e. once the sink made the chunk durable (the ack rule).
//!
//! Workers copy chunks of one table side by side, so their high watermarks, and entries, come in
//! any order: a copy resumes after the longest run of durable chunks from the table's start, and
//! copies again whatever lies beyond a gap. Entries without `from` (written by versions that
//! copied a table with one worker, rows counted from the start) mean the same: `from` the start.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use super::{Cursor, Key, TablePlan};
use crate::{PipelineError, StateTree};

/// Every key the chunked snapshot keeps in a source's state tree starts with this.
pub const STATE_PREFIX: &str = "snapshot/";

/// A chunk that was sent: keys in (`from`, `to`] of one copy of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    pub table: String,
    pub generation: u64,
    pub from: Cursor,
    /// `Done`: to the end of the table.
    pub to: Cursor,
    pub rows: u64,
}

fn request_key(table: &str) -> String {
    format!("snapshot/request/{table}")
}

fn progress_prefix(table: &str, generation: u64) -> String {
    format!("snapshot/progress/{table}/{generation:010}/")
}

fn state_error(what: &str, key: &str) -> PipelineError {
    PipelineError::definite(
        "state",
        format!("unreadable {what} at {key} in the state store"),
    )
    .with_hint("run `cdc-agent reset --yes` to start this pipeline over")
}

/// Asks for a (new) copy of `tables`: each gets the next generation, so the progress of an
/// earlier copy no longer counts. Returns the generations.
pub fn request(tree: &dyn StateTree, tables: &[String]) -> Result<Vec<u64>, PipelineError> {
    let current = requests(tree)?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let generation = current.get(table).copied().unwrap_or(0) + 1;
        tree.put(
            &request_key(table),
            json!({ "generation": generation }).to_string().as_bytes(),
        )?;
        out.push(generation);
    }
    Ok(out)
}

/// Asks for a copy of only these key ranges (from, through] of `table` (the rows `cdc-agent
/// verify` found divergent): the next generation, whose plan has no frontier and a hole per
/// range. A later request of the whole table replaces it. Returns the generation.
pub fn request_ranges(
    tree: &dyn StateTree,
    table: &str,
    ranges: &[(Cursor, Key)],
) -> Result<u64, PipelineError> {
    let generation = requests(tree)?.get(table).copied().unwrap_or(0) + 1;
    let ranges = ranges_json(ranges);
    tree.put(
        &request_key(table),
        json!({ "generation": generation, "ranges": ranges })
            .to_string()
            .as_bytes(),
    )?;
    Ok(generation)
}

/// The key ranges of `table`'s newest request, if it asked for ranges only.
fn requested_ranges(
    tree: &dyn StateTree,
    table: &str,
) -> Result<Option<Vec<(Cursor, Key)>>, PipelineError> {
    let key = request_key(table);
    let Some((_, value)) = tree.scan(&key)?.into_iter().find(|(k, _)| *k == key) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&value).map_err(|_| state_error("snapshot request", &key))?;
    let Some(ranges) = v.get("ranges") else {
        return Ok(None);
    };
    parse_ranges(ranges)
        .map(Some)
        .ok_or_else(|| state_error("snapshot request", &key))
}

/// Key ranges as JSON: `[{"from": "start" | {"after": [..]}, "through": [..]}, ...]`.
pub fn ranges_json(ranges: &[(Cursor, Key)]) -> serde_json::Value {
    ranges
        .iter()
        .map(|(from, through)| json!({ "from": cursor_json(from), "through": through }))
        .collect()
}

/// Key ranges from their JSON ([`ranges_json`]); `None` when malformed.
pub fn parse_ranges(v: &serde_json::Value) -> Option<Vec<(Cursor, Key)>> {
    v.as_array()?
        .iter()
        .map(|r| {
            let from = parse_cursor(&r["from"])?;
            let through = r["through"]
                .as_array()?
                .iter()
                .map(|k| match k {
                    serde_json::Value::Null => Some(None),
                    other => other.as_str().map(|s| Some(s.to_string())),
                })
                .collect::<Option<Key>>()?;
            Some((from, through))
        })
        .collect()
}

/// A ranged copy's plan: the ranges no durable chunk covers yet, as holes.
fn ranged_plan(
    table: String,
    generation: u64,
    ranges: Vec<(Cursor, Key)>,
    entries: &[Entry],
) -> TablePlan {
    let covered = |from: &Cursor, through: &Key| {
        entries
            .iter()
            .any(|e| e.from == *from && e.to == Cursor::After(through.clone()))
    };
    TablePlan {
        rows: entries.iter().map(|e| e.rows).sum(),
        holes: ranges
            .into_iter()
            .filter(|(from, through)| !covered(from, through))
            .collect(),
        table,
        generation,
        cursor: Cursor::Done,
    }
}

/// Asks once for the initial copy of `tables` (a restart before the first checkpoint keeps the
/// request, and its progress).
pub fn request_initial(tree: &dyn StateTree, tables: &[String]) -> Result<(), PipelineError> {
    let asked = requests(tree)?;
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !asked.contains_key(*t))
        .cloned()
        .collect();
    request(tree, &missing).map(|_| ())
}

/// Every table ever asked for, with its newest generation.
pub fn requests(tree: &dyn StateTree) -> Result<BTreeMap<String, u64>, PipelineError> {
    let mut out = BTreeMap::new();
    for (key, value) in tree.scan("snapshot/request/")? {
        let generation = serde_json::from_slice::<serde_json::Value>(&value)
            .ok()
            .and_then(|v| v["generation"].as_u64())
            .ok_or_else(|| state_error("snapshot request", &key))?;
        let table = key.trim_start_matches("snapshot/request/").to_string();
        out.insert(table, generation);
    }
    Ok(out)
}

/// Which progress entries [`load_plans`] trusts and keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// At start-up: the checkpoint is at this stream order (`None`: there is none). Entries at
    /// or after it belong to chunks an earlier run sent but the sink never made durable: their
    /// rows are gone with that run, so the entries are removed (else a later checkpoint, passing
    /// their position, would make them count).
    Resume(Option<u64>),
    /// While streaming: no entry counts as durable and none is removed.
    Running,
}

/// The copy each requested table needs, after the longest run of durable chunks from its start.
/// Entries of older generations are removed; the durable run from the start is merged into one.
///
/// Beyond that run, workers that finish chunks out of order can leave durable chunks past a
/// gap (the chunk one worker had in flight when the agent stopped). The chunks after a gap are
/// chained by their bounds, but where the gap *ends* is known only when a single run of chunks
/// lies beyond it (its first chunk starts where the gap ends): then that run is kept and only the
/// gap is copied again (a hole of the plan). Two workers, the default, leave at most one gap.
/// With more gaps their order is not known here (keys compare in the database's order, not
/// ours): the chunks past the first gap are removed and copied again.
pub fn load_plans(
    tree: &dyn StateTree,
    durability: Durability,
) -> Result<Vec<TablePlan>, PipelineError> {
    let mut plans = Vec::new();
    for (table, generation) in requests(tree)? {
        let current = progress_prefix(&table, generation);
        let mut durable = Vec::new();
        for (key, value) in tree.scan(&format!("snapshot/progress/{table}/"))? {
            if !key.starts_with(&current) {
                tree.remove(&key)?; // an older generation's
                continue;
            }
            let entry = Entry::parse(&key, &value)?;
            match durability {
                Durability::Resume(Some(checkpoint)) if entry.at < checkpoint => {
                    durable.push(entry)
                }
                Durability::Resume(_) => tree.remove(&key)?,
                Durability::Running => {}
            }
        }
        if let Some(ranges) = requested_ranges(tree, &table)? {
            plans.push(ranged_plan(table, generation, ranges, &durable));
            continue;
        }
        let (chained, cursor, rows) = chain(&durable, &Cursor::Start);
        let newest = chained.iter().map(|&i| &durable[i]).max_by_key(|e| e.at);
        if let Some(newest) = newest {
            // One entry for the whole run from the start, where its newest chunk was.
            let merged = ChunkSpan {
                table: table.clone(),
                generation,
                from: Cursor::Start,
                to: cursor.clone(),
                rows,
            };
            tree.put(&newest.key, &encode(&merged))?;
        }
        let beyond = beyond_the_gap(&durable, &chained, &cursor);
        let mut kept: HashSet<&str> = newest.map(|e| e.key.as_str()).into_iter().collect();
        let mut plan = TablePlan {
            table,
            generation,
            cursor,
            rows,
            holes: Vec::new(),
        };
        if let Some((gap_end, run, end, run_rows)) = beyond {
            kept.extend(run.iter().map(|&i| durable[i].key.as_str()));
            plan.holes.push((plan.cursor.clone(), gap_end));
            plan.cursor = end;
            plan.rows += run_rows;
        }
        for entry in durable.iter().filter(|e| !kept.contains(e.key.as_str())) {
            tree.remove(&entry.key)?;
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// Where each requested copy stands as far as the source has sent it (durable or not):
/// (table, generation, rows sent, finished).
pub fn request_status(
    tree: &dyn StateTree,
) -> Result<Vec<(String, u64, u64, bool)>, PipelineError> {
    let mut out = Vec::new();
    for (table, generation) in requests(tree)? {
        let entries = tree
            .scan(&progress_prefix(&table, generation))?
            .iter()
            .map(|(key, value)| Entry::parse(key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = entries.iter().map(|e| e.rows).sum();
        let done = match requested_ranges(tree, &table)? {
            Some(ranges) => ranged_plan(table.clone(), generation, ranges, &entries).finished(),
            None => chain(&entries, &Cursor::Start).1 == Cursor::Done,
        };
        out.push((table, generation, rows, done));
    }
    Ok(out)
}

/// Records that the chunk `span` went down the pipeline in the watermark transaction at stream
/// order `at`. Counts once the checkpoint passes `at`.
pub fn save_progress(tree: &dyn StateTree, span: &ChunkSpan, at: u64) -> Result<(), PipelineError> {
    tree.put(
        &format!("{}{at:016x}", progress_prefix(&span.table, span.generation)),
        &encode(span),
    )
}

/// One progress entry.
struct Entry {
    key: String,
    at: u64,
    from: Cursor,
    to: Cursor,
    rows: u64,
}

impl Entry {
    fn parse(key: &str, value: &[u8]) -> Result<Entry, PipelineError> {
        let parsed = || {
            let at = u64::from_str_radix(key.rsplit('/').next()?, 16).ok()?;
            let v: serde_json::Value = serde_json::from_slice(value).ok()?;
            let from = match v.get("from") {
                None => Cursor::Start,
                Some(from) => parse_cursor(from)?,
            };
            Some(Entry {
                key: key.to_string(),
                at,
                from,
                to: parse_cursor(&v["cursor"])?,
                rows: v["rows"].as_u64()?,
            })
        };
        parsed().ok_or_else(|| state_error("snapshot progress", key))
    }
}

/// The single run of durable chunks past the gap at `gap_start` (the end of the run from the
/// table's start, `chained`), if there is exactly one: where the gap ends (the run's first
/// key bound), the run's entries, where it ends, and its rows.
fn beyond_the_gap(
    entries: &[Entry],
    chained: &[usize],
    gap_start: &Cursor,
) -> Option<(Key, Vec<usize>, Cursor, u64)> {
    if *gap_start == Cursor::Done {
        return None;
    }
    let rest: Vec<usize> = (0..entries.len())
        .filter(|i| !chained.contains(i))
        .collect();
    // A run's first chunk starts where no durable chunk ends.
    let mut heads = rest
        .iter()
        .filter(|&&i| !entries.iter().any(|e| e.to == entries[i].from));
    let (Some(&head), None) = (heads.next(), heads.next()) else {
        return None;
    };
    let Cursor::After(gap_end) = entries[head].from.clone() else {
        return None;
    };
    let (run, end, rows) = chain(entries, &entries[head].from);
    Some((gap_end, run, end, rows))
}

/// The longest run of chunks from `start`, each starting where the previous one ends (of two
/// from the same place, the newer): their indexes, where the run ends, and its rows.
fn chain(entries: &[Entry], start: &Cursor) -> (Vec<usize>, Cursor, u64) {
    let mut cursor = start.clone();
    let mut rows = 0;
    let mut chained = Vec::new();
    let mut seen = HashSet::new();
    while cursor != Cursor::Done {
        let next = (0..entries.len())
            .filter(|&i| entries[i].from == cursor && !seen.contains(&i))
            .max_by_key(|&i| entries[i].at);
        let Some(i) = next else { break };
        seen.insert(i);
        chained.push(i);
        cursor = entries[i].to.clone();
        rows += entries[i].rows;
    }
    (chained, cursor, rows)
}

fn encode(span: &ChunkSpan) -> Vec<u8> {
    json!({ "from": cursor_json(&span.from), "cursor": cursor_json(&span.to), "rows": span.rows })
        .to_string()
        .into_bytes()
}

fn cursor_json(cursor: &Cursor) -> serde_json::Value {
    match cursor {
        Cursor::Start => json!("start"),
        Cursor::After(key) => json!({ "after": key }),
        Cursor::Done => json!("done"),
    }
}

fn parse_cursor(v: &serde_json::Value) -> Option<Cursor> {
    match v {
        serde_json::Value::String(s) if s == "start" => Some(Cursor::Start),
        serde_json::Value::String(s) if s == "done" => Some(Cursor::Done),
        serde_json::Value::Object(o) => Some(Cursor::After(
            o.get("after")?
                .as_array()?
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTree;

    fn after(key: &str) -> Cursor {
        Cursor::After(vec![Some(key.to_string())])
    }

    fn span(from: Cursor, to: Cursor, rows: u64) -> ChunkSpan {
        ChunkSpan {
            table: "public.t".into(),
            generation: 1,
            from,
            to,
            rows,
        }
    }

    fn plan(tree: &MemoryTree, durability: Durability) -> TablePlan {
        load_plans(tree, durability).unwrap().remove(0)
    }

    #[test]
    fn a_copy_resumes_after_the_durable_run_from_the_start() {
        let tree = MemoryTree::default();
        assert_eq!(request(&tree, &["public.t".into()]).unwrap(), vec![1]);
        // Two workers: the second chunk's high watermark came first.
        save_progress(&tree, &span(after("10"), after("20"), 10), 0x100).unwrap();
        save_progress(&tree, &span(Cursor::Start, after("10"), 10), 0x200).unwrap();
        save_progress(&tree, &span(after("30"), after("40"), 10), 0x300).unwrap();

        assert_eq!(plan(&tree, Durability::Running).cursor, Cursor::Start);
        assert_eq!(
            request_status(&tree).unwrap(),
            vec![("public.t".into(), 1, 30, false)]
        );
        assert_eq!(tree.scan("snapshot/progress/").unwrap().len(), 3);

        // Only the second chunk durable: the first is copied again, the second is kept.
        let resumed = plan(&tree, Durability::Resume(Some(0x150)));
        assert_eq!(
            (resumed.cursor, resumed.rows, resumed.holes),
            (
                after("20"),
                10,
                vec![(Cursor::Start, vec![Some("10".to_string())])]
            ),
            "chunk 10..20 is kept, the gap before it is copied again"
        );
        assert_eq!(tree.scan("snapshot/progress/").unwrap().len(), 1);
    }

    #[test]
    fn durable_chunks_merge_and_only_the_gap_before_a_later_run_is_copied_again() {
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        save_progress(&tree, &span(after("10"), after("20"), 10), 0x100).unwrap();
        save_progress(&tree, &span(Cursor::Start, after("10"), 10), 0x200).unwrap();
        save_progress(&tree, &span(after("30"), after("40"), 10), 0x300).unwrap();
        save_progress(&tree, &span(after("40"), Cursor::Done, 5), 0x500).unwrap();

        let resumed = plan(&tree, Durability::Resume(Some(0x400)));
        assert_eq!(
            (resumed.cursor, resumed.rows, resumed.holes),
            (
                after("40"),
                30,
                vec![(after("20"), vec![Some("30".to_string())])]
            )
        );
        let left = tree.scan("snapshot/progress/").unwrap();
        assert_eq!(
            left.len(),
            2,
            "one merged entry and the run past the gap; the unsent one goes"
        );
        assert!(left[0].0.ends_with("0000000000000200"));
        // The merged entries read back the same.
        assert_eq!(
            plan(&tree, Durability::Resume(Some(0x400))).cursor,
            after("40")
        );

        // The gap and the rest, copied by the next run, close the chain.
        save_progress(&tree, &span(after("20"), after("30"), 12), 0x600).unwrap();
        save_progress(&tree, &span(after("40"), Cursor::Done, 25), 0x610).unwrap();
        let done = plan(&tree, Durability::Resume(Some(0x700)));
        assert!(done.finished());
        assert_eq!((done.cursor, done.rows), (Cursor::Done, 67));
        assert_eq!(
            request_status(&tree).unwrap(),
            vec![("public.t".into(), 1, 67, true)]
        );
    }

    #[test]
    fn with_two_gaps_the_chunks_past_the_first_are_copied_again() {
        // Three workers: which run past a gap comes first is not known without the key order.
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        save_progress(&tree, &span(Cursor::Start, after("10"), 10), 0x100).unwrap();
        save_progress(&tree, &span(after("20"), after("30"), 10), 0x200).unwrap();
        save_progress(&tree, &span(after("40"), after("50"), 10), 0x300).unwrap();
        let resumed = plan(&tree, Durability::Resume(Some(0x400)));
        assert_eq!(
            (resumed.cursor, resumed.rows, resumed.holes.len()),
            (after("10"), 10, 0)
        );
        assert_eq!(tree.scan("snapshot/progress/").unwrap().len(), 1);
    }

    #[test]
    fn unsent_entries_of_an_earlier_run_never_count() {
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        save_progress(&tree, &span(Cursor::Start, after("10"), 10), 0x100).unwrap();
        save_progress(&tree, &span(after("10"), after("20"), 10), 0x200).unwrap();
        // Crash with the checkpoint at 0x150: the second chunk's rows are lost.
        assert_eq!(
            plan(&tree, Durability::Resume(Some(0x150))).cursor,
            after("10")
        );
        // Later the checkpoint passes 0x200 without that chunk being copied again.
        assert_eq!(
            plan(&tree, Durability::Resume(Some(0x900))).cursor,
            after("10")
        );
    }

    #[test]
    fn entries_without_from_cover_the_table_from_its_start() {
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        for (at, to, rows) in [(0x100, "10", 10), (0x200, "20", 20)] {
            tree.put(
                &format!("snapshot/progress/public.t/0000000001/{at:016x}"),
                json!({ "cursor": { "after": [to] }, "rows": rows })
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
        }
        let resumed = plan(&tree, Durability::Resume(Some(0x300)));
        assert_eq!((resumed.cursor, resumed.rows), (after("20"), 20));
    }

    #[test]
    fn a_ranged_request_copies_its_ranges_only_and_resumes_the_rest() {
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        let ranges = vec![
            (after("9"), vec![Some("10".to_string())]),
            (Cursor::Start, vec![Some("1".to_string())]),
        ];
        assert_eq!(request_ranges(&tree, "public.t", &ranges).unwrap(), 2);
        let planned = plan(&tree, Durability::Running);
        assert_eq!(
            (
                planned.generation,
                planned.cursor.clone(),
                planned.holes.clone()
            ),
            (2, Cursor::Done, ranges.clone())
        );
        assert!(!planned.finished());
        // The first range's chunk went out and became durable; the second did not.
        save_progress(&tree, &span2(after("9"), after("10"), 1), 0x100).unwrap();
        assert_eq!(
            request_status(&tree).unwrap(),
            vec![("public.t".into(), 2, 1, false)]
        );
        let resumed = plan(&tree, Durability::Resume(Some(0x200)));
        assert_eq!(resumed.holes, vec![ranges[1].clone()]);
        save_progress(&tree, &span2(Cursor::Start, after("1"), 1), 0x300).unwrap();
        assert!(plan(&tree, Durability::Resume(Some(0x400))).finished());
        assert_eq!(
            request_status(&tree).unwrap(),
            vec![("public.t".into(), 2, 2, true)]
        );
        // A whole-table request replaces it.
        assert_eq!(request(&tree, &["public.t".into()]).unwrap(), vec![3]);
        assert_eq!(plan(&tree, Durability::Running).cursor, Cursor::Start);
    }

    fn span2(from: Cursor, to: Cursor, rows: u64) -> ChunkSpan {
        ChunkSpan {
            generation: 2,
            ..span(from, to, rows)
        }
    }

    #[test]
    fn a_new_request_starts_the_table_over() {
        let tree = MemoryTree::default();
        request(&tree, &["public.t".into()]).unwrap();
        save_progress(&tree, &span(Cursor::Start, after("10"), 10), 0x100).unwrap();
        assert_eq!(request(&tree, &["public.t".into()]).unwrap(), vec![2]);
        let again = plan(&tree, Durability::Resume(Some(0x300)));
        assert_eq!((again.generation, again.cursor), (2, Cursor::Start));
        assert!(tree.scan("snapshot/progress/").unwrap().is_empty());
    }
}
