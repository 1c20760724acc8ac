//! Group commit: concurrent appends under `fsync=always` share writes and syncs.

use std::sync::Arc;

use opal_log::{Log, LogConfig};

use crate::support::rec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    const APPENDERS: usize = 16;
    const EACH: usize = 50;
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..EACH {
                    let value = format!("task {task} record {i}");
                    offsets.push(
                        log.append(vec![rec(i as i64, value)])
                            .await
                            .unwrap()
                            .base_offset,
                    );
                }
                offsets
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let offsets = task.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one task's appends keep their order"
        );
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..(APPENDERS * EACH) as u64).collect::<Vec<_>>(),
        "every offset given once"
    );
    let stats = log.stats();
    assert_eq!(stats.appends, (APPENDERS * EACH) as u64);
    assert_eq!(stats.writes, stats.syncs, "one write per sync under always");
    println!("{} appends, {} syncs", stats.appends, stats.syncs);
    assert!(
        stats.syncs * 3 <= stats.appends,
        "group commit should coalesce: {} syncs for {} appends",
        stats.syncs,
        stats.appends
    );
    let records = log.read(0, usize::MAX).unwrap();
    assert_eq!(records.len(), APPENDERS * EACH);
}
