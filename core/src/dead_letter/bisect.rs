//! Finding the changes a target refuses inside a batch it refused as a whole.
//!
//! ```text
//!  [a b c d e f g h] refused ─▶ [a b c d] ok  [e f g h] refused ─▶ [e f] ok  [g h] refused
//!                                                                  ─▶ [g] ok  [h] refused: poison
//! ```
//!
//! Halves are applied in order, each on its own and all or nothing (the sink's savepoint); a
//! refused half is split again, down to single changes. When the target says where a part failed
//! (a COPY line), the search jumps there instead: the changes before it are applied as one part,
//! the named change on its own, then the rest. A hint is only a shortcut: a change is refused only
//! when it fails alone, so a wrong hint costs an attempt, never a good change.
//!
//! A target may also apply a part while leaving out single changes it refused (a warehouse sink
//! that copies rows in small chunks and drops the row a COPY line names): those come back from
//! `apply_part` as refused, the rest of the part is in.

use async_trait::async_trait;

use crate::error::PipelineError;

/// Changes of a part refused one by one, by index in the part, with the target's error.
pub type Refusals = Vec<(usize, PipelineError)>;

#[async_trait]
pub trait ApplyPart<T: Sync>: Send {
    /// Applies `part` on its own: `Ok` once it is in, but for the changes it returns (refused
    /// one by one, usually none); a poison error when the target refused it as a whole (and none
    /// of it is in). Any other error ends the search.
    async fn apply_part(&mut self, part: &[T]) -> Result<Refusals, PipelineError>;

    /// Where in the part last refused the target said it failed, if it did.
    fn failed_at(&mut self) -> Option<usize> {
        None
    }
}

/// Applies `all`; when the target refuses it as a whole, applies it around the changes it
/// refuses (see [`apply_around_poison`]). Returns the refused changes' indexes with their errors.
pub async fn apply_or_search<T: Sync, A: ApplyPart<T>>(
    applier: &mut A,
    all: &[T],
    stop_at_first: bool,
) -> Result<Refusals, PipelineError> {
    match applier.apply_part(all).await {
        Ok(refused) => Ok(refused),
        Err(error) if error.is_poison() => {
            let searching = std::time::Instant::now();
            let refused = apply_around_poison(applier, all, error, stop_at_first).await?;
            tracing::debug!(
                changes = all.len(),
                refused = refused.len(),
                ms = searching.elapsed().as_millis() as u64,
                "dead-letter search done"
            );
            Ok(refused)
        }
        Err(error) => Err(error),
    }
}

/// Applies `all`, which the target refused as a whole with `error`, around the changes it
/// refuses: returns their indexes in `all`, in order, each with its error; everything else is
/// applied. With `stop_at_first` it returns at the first refused change (the caller stops).
pub async fn apply_around_poison<T: Sync, A: ApplyPart<T>>(
    applier: &mut A,
    all: &[T],
    error: PipelineError,
    stop_at_first: bool,
) -> Result<Vec<(usize, PipelineError)>, PipelineError> {
    let mut refused = Vec::new();
    let hint = applier.failed_at();
    // Ranges still to apply, the next one last, with the error of one known to fail.
    let mut work: Vec<(usize, usize, Option<PipelineError>)> = Vec::new();
    push_split(&mut work, 0, all.len(), error, hint);
    while let Some((start, end, known)) = work.pop() {
        if start >= end {
            continue;
        }
        let error = match known {
            Some(e) => e,
            None => match applier.apply_part(&all[start..end]).await {
                Ok(inline) => {
                    refused.extend(inline.into_iter().map(|(i, e)| (start + i, e)));
                    if stop_at_first && !refused.is_empty() {
                        refused.truncate(1);
                        return Ok(refused);
                    }
                    continue;
                }
                Err(e) if e.is_poison() => e,
                Err(e) => return Err(e),
            },
        };
        if end - start == 1 {
            refused.push((start, error));
            if stop_at_first {
                return Ok(refused);
            }
            continue;
        }
        let hint = applier.failed_at();
        push_split(&mut work, start, end, error, hint);
    }
    Ok(refused)
}

/// Queues the parts of the refused range `start..end`: around the change the target named, or
/// the two halves.
fn push_split(
    work: &mut Vec<(usize, usize, Option<PipelineError>)>,
    start: usize,
    end: usize,
    error: PipelineError,
    hint: Option<usize>,
) {
    if end - start == 1 {
        work.push((start, end, Some(error)));
        return;
    }
    match hint.filter(|&i| i < end - start) {
        Some(i) => {
            let at = start + i;
            work.push((at + 1, end, None));
            work.push((at, at + 1, None));
            work.push((start, at, None));
        }
        None => {
            let mid = start + (end - start) / 2;
            work.push((mid, end, None));
            work.push((start, mid, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses every part holding a value in `bad`; names the first one when `hints`.
    struct Target {
        bad: Vec<u32>,
        applied: Vec<u32>,
        attempts: usize,
        hints: bool,
        last: Option<usize>,
    }

    #[async_trait]
    impl ApplyPart<u32> for Target {
        async fn apply_part(&mut self, part: &[u32]) -> Result<Refusals, PipelineError> {
            self.attempts += 1;
            self.last = part.iter().position(|v| self.bad.contains(v));
            match self.last {
                Some(_) => Err(PipelineError::poison("data", "bad value")),
                None => {
                    self.applied.extend_from_slice(part);
                    Ok(Refusals::new())
                }
            }
        }

        fn failed_at(&mut self) -> Option<usize> {
            self.last.filter(|_| self.hints)
        }
    }

    async fn run(hints: bool, all: &[u32], bad: &[u32]) -> (Vec<u32>, Vec<u32>, usize) {
        let mut target = Target {
            bad: bad.to_vec(),
            applied: Vec::new(),
            attempts: 0,
            hints,
            last: None,
        };
        let error = target.apply_part(all).await.unwrap_err();
        let refused = apply_around_poison(&mut target, all, error, false)
            .await
            .unwrap();
        let refused = refused.into_iter().map(|(i, _)| all[i]).collect();
        (refused, target.applied, target.attempts)
    }

    #[tokio::test]
    async fn the_refused_changes_are_found_and_the_rest_applied_in_order() {
        let all: Vec<u32> = (0..1000).collect();
        for hints in [false, true] {
            let (refused, applied, attempts) = run(hints, &all, &[3, 500, 501, 999]).await;
            assert_eq!(refused, [3, 500, 501, 999]);
            let want: Vec<u32> = all
                .iter()
                .copied()
                .filter(|v| ![3, 500, 501, 999].contains(v))
                .collect();
            assert_eq!(applied, want, "hints {hints}");
            if hints {
                assert!(attempts <= 14, "{attempts} attempts with hints");
            }
        }
    }

    #[tokio::test]
    async fn a_wrong_hint_costs_an_attempt_not_a_good_change() {
        struct Liar(Target);
        #[async_trait]
        impl ApplyPart<u32> for Liar {
            async fn apply_part(&mut self, part: &[u32]) -> Result<Refusals, PipelineError> {
                self.0.apply_part(part).await
            }
            fn failed_at(&mut self) -> Option<usize> {
                Some(0)
            }
        }
        let mut liar = Liar(Target {
            bad: vec![7],
            applied: Vec::new(),
            attempts: 0,
            hints: false,
            last: None,
        });
        let all: Vec<u32> = (0..10).collect();
        let error = PipelineError::poison("data", "bad");
        let refused = apply_around_poison(&mut liar, &all, error, false)
            .await
            .unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(all[refused[0].0], 7);
        assert_eq!(liar.0.applied.len(), 9);
    }

    #[tokio::test]
    async fn another_error_ends_the_search() {
        struct Down;
        #[async_trait]
        impl ApplyPart<u32> for Down {
            async fn apply_part(&mut self, _: &[u32]) -> Result<Refusals, PipelineError> {
                Err(PipelineError::transient("sink", "connection lost"))
            }
        }
        let error = PipelineError::poison("data", "bad");
        let result = apply_around_poison(&mut Down, &[1, 2, 3], error, false).await;
        assert!(result.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn changes_a_part_leaves_out_count_as_refused_at_their_place_in_the_whole() {
        /// Applies every part, leaving out the bad values (as a chunked COPY does).
        struct LeavesOut(Vec<u32>, Vec<u32>);
        #[async_trait]
        impl ApplyPart<u32> for LeavesOut {
            async fn apply_part(&mut self, part: &[u32]) -> Result<Refusals, PipelineError> {
                let mut refused = Refusals::new();
                for (i, v) in part.iter().enumerate() {
                    if self.0.contains(v) {
                        refused.push((i, PipelineError::poison("data", "bad")));
                    } else {
                        self.1.push(*v);
                    }
                }
                Ok(refused)
            }
        }
        let all: Vec<u32> = (0..10).collect();
        let mut target = LeavesOut(vec![7], Vec::new());
        // The whole was refused for another change (2), which the search finds by halves; the
        // half holding 7 leaves it out on its own.
        let refused = apply_around_poison(
            &mut target,
            &all[..],
            PipelineError::poison("data", "2"),
            false,
        )
        .await
        .unwrap();
        let refused: Vec<u32> = refused.into_iter().map(|(i, _)| all[i]).collect();
        assert_eq!(refused, [7]);
        assert_eq!(target.1, [0, 1, 2, 3, 4, 5, 6, 8, 9]);
    }
}
