//! Bounded concurrency without head-of-line blocking.
//!
//! `StreamExt::buffered` keeps the outputs in order by holding a finished future's slot until
//! every earlier one has finished, so one slow account (a resync Azure takes minutes over) would
//! stop a sweep from starting any other. Here a slot is freed as soon as its future ends, and the
//! order is restored at the end.

use std::future::Future;

use futures::{FutureExt, Stream, StreamExt};

/// Runs the futures of `work`, at most `limit` at a time, starting the next one whenever any
/// ends; calls `each` with every output as it arrives, and returns the outputs in `work`'s order.
pub(crate) async fn in_order<S>(
    work: S,
    limit: usize,
    mut each: impl FnMut(&<S::Item as Future>::Output),
) -> Vec<<S::Item as Future>::Output>
where
    S: Stream,
    S::Item: Future,
{
    let mut done: Vec<(usize, _)> = work
        .enumerate()
        .map(|(index, future)| future.map(move |output| (index, output)))
        .buffer_unordered(limit.max(1))
        .inspect(|(_, output)| each(output))
        .collect()
        .await;
    done.sort_unstable_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, output)| output).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A future that ends after `millis`, recording when it started and ended.
    async fn job(id: u64, millis: u64, log: &Mutex<Vec<String>>) -> u64 {
        log.lock().unwrap().push(format!("start {id}"));
        tokio::time::sleep(Duration::from_millis(millis)).await;
        log.lock().unwrap().push(format!("end {id}"));
        id
    }

    #[tokio::test]
    async fn a_slow_first_future_does_not_keep_the_next_ones_from_starting() {
        let log = Mutex::new(Vec::new());
        let arrived = Mutex::new(Vec::new());
        let work = futures::stream::iter([(0, 300), (1, 10), (2, 10), (3, 10)])
            .map(|(id, millis)| job(id, millis, &log));

        let outputs = in_order(work, 2, |id| arrived.lock().unwrap().push(*id)).await;

        assert_eq!(outputs, vec![0, 1, 2, 3], "outputs in the stream's order");
        assert_eq!(
            *arrived.lock().unwrap(),
            vec![1, 2, 3, 0],
            "reported as they end"
        );
        let log = log.into_inner().unwrap();
        let started_3 = log.iter().position(|l| l == "start 3").unwrap();
        let ended_0 = log.iter().position(|l| l == "end 0").unwrap();
        assert!(started_3 < ended_0, "{log:?}");
        // Never more than two at once.
        let mut running = 0;
        for line in &log {
            running += if line.starts_with("start") { 1 } else { -1 };
            assert!(running <= 2, "{log:?}");
        }
    }
}
