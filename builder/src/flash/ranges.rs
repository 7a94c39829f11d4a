//! Work over a bmap's ranges on several threads, for the two SHA-256
//! passes (reading the image, reading the target back).
//!
//! Why ranges are the unit: each has one SHA-256 in the bmap, and a hash is
//! sequential, so one range is one thread's work. Threads take the largest
//! range left, so they finish close together. A failure is reported as the
//! lowest range that failed, as a sequential pass would: ranges after a
//! known failure are skipped, ranges before it are still checked, as one
//! of them may fail too.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Result};

use super::Stopped;
use crate::artifact::bmap::Bmap;

/// Threads per pass: the machines this runs on have two cores or more, and
/// with SHA-NI one core hashes about 1.5 GB/s, about what a fast target
/// takes, so two threads keep hashing from being the bottleneck; more would
/// only interleave more streams on the device.
pub const THREADS: usize = 2;

/// Runs `work(index)` for every range of `bmap` on `threads` threads. A
/// stop ([`Stopped`]) wins over any other error; otherwise the lowest
/// failing range's error is returned.
pub fn par_ranges(
    bmap: &Bmap,
    threads: usize,
    work: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    let size = |i: &usize| {
        let s = bmap.byte_range(&bmap.ranges[*i]);
        s.end - s.start
    };
    let mut order: Vec<usize> = (0..bmap.ranges.len()).collect();
    order.sort_by_key(|i| Reverse(size(i)));
    let next = AtomicUsize::new(0);
    // The lowest range known to have failed (0 after a stop).
    let first_bad = AtomicUsize::new(usize::MAX);
    // Failures keyed for sorting: a stop 0, range i as i + 1.
    let thread = || -> Vec<(usize, anyhow::Error)> {
        let mut failed = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            if i > first_bad.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = work(i) {
                let key = if e.is::<Stopped>() { 0 } else { i + 1 };
                first_bad.fetch_min(key.saturating_sub(1), Ordering::Relaxed);
                failed.push((key, e));
            }
        }
        failed
    };
    let mut failed = std::thread::scope(|scope| -> Result<Vec<_>> {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(thread)).collect();
        // Join every thread before looking at any result: a thread left
        // unjoined that panicked would make the scope panic too.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let mut all = Vec::new();
        for j in joined {
            all.extend(j.map_err(|_| anyhow!("a range thread panicked"))?);
        }
        Ok(all)
    })?;
    failed.sort_by_key(|(key, _)| *key);
    match failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::bmap::MappedRange;
    use anyhow::bail;

    fn bmap(sizes: &[u64]) -> Bmap {
        let mut at = 0;
        let ranges = sizes
            .iter()
            .map(|&n| {
                at += n + 1;
                MappedRange {
                    blocks: at - n..at,
                    sha256: String::new(),
                }
            })
            .collect();
        Bmap {
            image_size: (at + 1) * 4096,
            block_size: 4096,
            blocks_count: at + 1,
            mapped_blocks: sizes.iter().sum(),
            ranges,
        }
    }

    #[test]
    fn every_range_once_and_the_lowest_failure_wins() {
        let b = bmap(&[1, 50, 2, 40, 3, 30]);
        let seen = std::sync::Mutex::new(Vec::new());
        par_ranges(&b, 2, |i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);

        for _ in 0..20 {
            let err = par_ranges(&b, 2, |i| match i {
                3 | 5 => bail!("range {i}"),
                _ => Ok(()),
            })
            .unwrap_err();
            assert_eq!(err.to_string(), "range 3");
        }
        let err = par_ranges(&b, 2, |i| match i {
            1 => Err(Stopped.into()),
            3 => bail!("range 3"),
            _ => Ok(()),
        })
        .unwrap_err();
        assert!(err.is::<Stopped>());
    }
}
