//! Bisection by key ranges: compare a range's row count and hash sum on both sides; equal ranges
//! are done, unequal ones are split (by key value for integer keys, by key quantiles otherwise)
//! until a range holds at most `leaf_rows` rows, whose (key, row hash) pairs are then fetched
//! from both sides and diffed by key. The work grows with the number of differences, not with
//! the table: an equal table costs one hashing pass over each side and a query per top range.
//!
//! ```text
//!  (−∞, +∞) ─split─▶ [r1][r2][r3]…      ranges of ~top_range_rows (no whole-table pass first)
//!  r2: count+sum differ ─split─▶ [r2a][r2b]…  (fanout parts)
//!  r2b: ≤ leaf_rows ─▶ (key, md5) both sides ─▶ missing / extra / different keys
//! ```

use std::collections::HashMap;

use anyhow::Result;

use super::side::{Key, Range, Side};

/// How the bisection cuts and how much it lists.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A range with at most this many rows on each side is diffed row by row.
    pub leaf_rows: u64,
    /// Parts an unequal range is cut into.
    pub fanout: u64,
    /// Rows per range at the start (the table is cut before anything is hashed).
    pub top_range_rows: u64,
    /// Keys listed per category; beyond it divergent rows are only counted.
    pub max_listed: usize,
    /// Rows per bucket of the first pass over a table with an integer key.
    pub bucket_rows: u64,
    /// Buckets of that pass at most.
    pub max_buckets: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            leaf_rows: 1000,
            fanout: 16,
            // A range is one query per side: ~50 of them for 5M rows.
            top_range_rows: 100_000,
            max_listed: 10_000,
            // One scan of each side sums 5,000-row buckets: an unequal bucket costs little to
            // bisect, and 1,000 groups cost the scan little.
            bucket_rows: 5_000,
            max_buckets: 20_000,
        }
    }
}

/// What the bisection found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Source rows in the ranges compared.
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: Listed,
    pub extra: Listed,
    pub different: Listed,
}

/// Keys of one category: the first ones listed, all counted.
#[derive(Debug, Default)]
pub struct Listed {
    pub keys: Vec<Key>,
    pub count: u64,
}

impl Listed {
    fn add(&mut self, key: Key, max: usize) {
        self.count += 1;
        if self.keys.len() < max {
            self.keys.push(key);
        }
    }
}

impl Findings {
    pub fn divergent(&self) -> u64 {
        self.missing.count + self.extra.count + self.different.count
    }
}

/// The ranges a key-ordered table is cut into before anything is hashed: about
/// `estimated_rows / range_rows` of them (one when the table is small or its size unknown).
pub async fn top_ranges(
    source: &mut dyn Side,
    target: &mut dyn Side,
    int_key: bool,
    estimated_rows: u64,
    range_rows: u64,
) -> Result<Vec<Range>> {
    let parts = estimated_rows.div_ceil(range_rows.max(1));
    if parts <= 1 {
        return Ok(vec![Range::default()]);
    }
    split(
        source,
        target,
        int_key,
        &Range::default(),
        estimated_rows,
        parts,
        false,
    )
    .await
}

/// The first pass over a table with a single integer key: every bucket's summary from one scan
/// of each side (see `Side::bucket_summaries`); equal buckets are counted into `found`, the
/// ranges of unequal ones returned to be bisected. `None` when a side cannot.
pub async fn first_pass(
    source: &mut dyn Side,
    target: &mut dyn Side,
    estimated_rows: u64,
    limits: Limits,
    found: &mut Findings,
) -> Result<Option<Vec<Range>>> {
    let whole = Range::default();
    let (a, b) = tokio::try_join!(source.int_span(&whole), target.int_span(&whole))?;
    let (low, high) = match (a, b) {
        (Some((l1, h1)), Some((l2, h2))) => (l1.min(l2), h1.max(h2)),
        (Some(span), None) | (None, Some(span)) => span,
        (None, None) => return Ok(Some(vec![])),
    };
    let width = (high - low + 1).max(1);
    // Without statistics, the key span stands in for the row count.
    let rows = if estimated_rows > 0 {
        estimated_rows
    } else {
        u64::try_from(width).unwrap_or(u64::MAX)
    };
    let buckets = i128::from(
        rows.div_ceil(limits.bucket_rows.max(1))
            .clamp(1, limits.max_buckets),
    )
    .min(width);
    let throughs: Vec<i128> = (1..buckets)
        .map(|i| low - 1 + (width * i + buckets - 1) / buckets)
        .collect();
    let (a, b) = tokio::try_join!(
        source.bucket_summaries(&throughs),
        target.bucket_summaries(&throughs)
    )?;
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(None);
    };
    let a: HashMap<usize, super::side::Summary> = a.into_iter().collect();
    let b: HashMap<usize, super::side::Summary> = b.into_iter().collect();
    let mut unequal: Vec<usize> = a
        .keys()
        .chain(b.keys())
        .copied()
        .filter(|i| a.get(i) != b.get(i))
        .collect();
    unequal.sort_unstable();
    unequal.dedup();
    for (i, s) in &a {
        if b.get(i) == Some(s) {
            found.source_rows += s.rows;
            found.target_rows += s.rows;
        }
    }
    let bound = |i: usize| -> Option<Vec<String>> { throughs.get(i).map(|t| vec![t.to_string()]) };
    Ok(Some(
        unequal
            .into_iter()
            .map(|i| Range {
                after: i.checked_sub(1).and_then(bound),
                through: bound(i),
            })
            .collect(),
    ))
}

/// Cuts `range` (holding about `rows` rows) into up to `parts` ranges that cover it exactly.
async fn split(
    source: &mut dyn Side,
    target: &mut dyn Side,
    int_key: bool,
    range: &Range,
    rows: u64,
    parts: u64,
    boundaries_from_target: bool,
) -> Result<Vec<Range>> {
    let throughs: Vec<Key> = if int_key {
        let (a, b) = tokio::try_join!(source.int_span(range), target.int_span(range))?;
        let span = match (a, b) {
            (Some((l1, h1)), Some((l2, h2))) => Some((l1.min(l2), h1.max(h2))),
            (one, other) => one.or(other),
        };
        let Some((low, high)) = span else {
            return Ok(vec![range.clone()]);
        };
        let width = (high - low + 1).max(1);
        let parts = i128::from(parts.max(1)).min(width);
        (1..parts)
            .map(|i| vec![(low - 1 + (width * i + parts - 1) / parts).to_string()])
            .collect()
    } else {
        let every = rows.div_ceil(parts.max(1)).max(1);
        let side: &mut dyn Side = if boundaries_from_target {
            target
        } else {
            source
        };
        side.boundaries(range, every).await?
    };
    let mut out = Vec::with_capacity(throughs.len() + 1);
    let mut after = range.after.clone();
    for through in throughs {
        if Some(&through) == range.through.as_ref() {
            break;
        }
        out.push(Range {
            after: after.clone(),
            through: Some(through.clone()),
        });
        after = Some(through);
    }
    out.push(Range {
        after,
        through: range.through.clone(),
    });
    Ok(out)
}

/// Compares `ranges` (which cover what is to be compared) down to the divergent keys.
pub async fn bisect(
    source: &mut dyn Side,
    target: &mut dyn Side,
    int_key: bool,
    ranges: Vec<Range>,
    limits: Limits,
    mut found: Findings,
) -> Result<Findings> {
    let mut stack: Vec<Range> = ranges.into_iter().rev().collect();
    while let Some(range) = stack.pop() {
        let (s, t) = tokio::try_join!(source.summary(&range), target.summary(&range))?;
        if s == t {
            found.source_rows += s.rows;
            found.target_rows += t.rows;
            continue;
        }
        let rows = s.rows.max(t.rows);
        if rows > limits.leaf_rows {
            // One side empty: every row of the other diverges; no need to cut further unless
            // the keys are still to be listed.
            let listed = found.missing.keys.len().max(found.extra.keys.len());
            let room = listed < limits.max_listed;
            if (s.rows == 0 || t.rows == 0) && !room {
                found.source_rows += s.rows;
                found.target_rows += t.rows;
                found.missing.count += s.rows;
                found.extra.count += t.rows;
                continue;
            }
            let parts = split(
                source,
                target,
                int_key,
                &range,
                rows,
                limits.fanout,
                t.rows > s.rows,
            )
            .await?;
            if parts.len() > 1 {
                stack.extend(parts.into_iter().rev());
                continue;
            }
        }
        diff_leaf(source, target, &range, limits.max_listed, &mut found).await?;
    }
    Ok(found)
}

/// Fetches (key, md5) of `range` from both sides and sorts the keys into the findings.
async fn diff_leaf(
    source: &mut dyn Side,
    target: &mut dyn Side,
    range: &Range,
    max_listed: usize,
    found: &mut Findings,
) -> Result<()> {
    let (src, tgt) = tokio::try_join!(source.row_hashes(range), target.row_hashes(range))?;
    found.source_rows += src.len() as u64;
    found.target_rows += tgt.len() as u64;
    let mut in_target: HashMap<Key, String> = tgt.into_iter().map(|r| (r.key, r.hash)).collect();
    for row in src {
        match in_target.remove(&row.key) {
            None => found.missing.add(row.key, max_listed),
            Some(hash) if hash != row.hash => found.different.add(row.key, max_listed),
            Some(_) => {}
        }
    }
    let mut extra: Vec<Key> = in_target.into_keys().collect();
    extra.sort();
    for key in extra {
        found.extra.add(key, max_listed);
    }
    Ok(())
}
