//! Per-minute metric rows: stored once, merged by addition when the same minute is put again
//! (a partial minute written at shutdown, then more of it after a restart), read by range,
//! pruned by age.

use nimbus_store::{MetricMinute, SqliteStore, Store};

fn minute(function: &str, version: &str, minute_ms: i64) -> MetricMinute {
    MetricMinute {
        function: function.into(),
        version: version.into(),
        minute_ms,
        invocations: 3,
        errors: 1,
        throttles: 0,
        cold_starts: 1,
        provisioned_invocations: 0,
        duration_sum_ms: 30.0,
        duration_max_ms: 20.0,
        duration_buckets: vec![(40, 2), (55, 1)],
        init_duration_max_ms: 100.0,
        init_duration_buckets: vec![(70, 1)],
        concurrency_max: 2,
        provisioned_utilization_max: None,
    }
}

#[tokio::test]
async fn rows_round_trip_and_read_by_range_and_version() {
    let s = SqliteStore::in_memory().unwrap();
    let rows = vec![
        minute("f", "$LATEST", 60_000),
        minute("f", "$LATEST", 120_000),
        minute("f", "2", 120_000),
        minute("g", "$LATEST", 120_000),
    ];
    s.put_metric_minutes(rows.clone()).await.unwrap();

    let all = s.metric_minutes("f", None, 0, 1_000_000).await.unwrap();
    assert_eq!(all, rows[..3].to_vec(), "ordered by version, then minute");
    // The range is [from, until).
    let one = s.metric_minutes("f", None, 120_000, 180_000).await.unwrap();
    assert_eq!(
        one.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(),
        ["$LATEST", "2"]
    );
    assert!(s
        .metric_minutes("f", None, 0, 60_000)
        .await
        .unwrap()
        .is_empty());
    let v2 = s
        .metric_minutes("f", Some("2"), 0, 1_000_000)
        .await
        .unwrap();
    assert_eq!(v2, vec![rows[2].clone()]);
    assert!(s
        .metric_minutes("nobody", None, 0, 1_000_000)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn putting_the_same_minute_again_adds_counts_and_keeps_maxima() {
    let s = SqliteStore::in_memory().unwrap();
    s.put_metric_minutes(vec![minute("f", "$LATEST", 60_000)])
        .await
        .unwrap();
    let more = MetricMinute {
        invocations: 2,
        errors: 0,
        throttles: 4,
        cold_starts: 0,
        provisioned_invocations: 1,
        duration_sum_ms: 5.0,
        duration_max_ms: 4.0,
        duration_buckets: vec![(10, 1), (40, 1)],
        init_duration_max_ms: 0.0,
        init_duration_buckets: vec![],
        concurrency_max: 5,
        provisioned_utilization_max: Some(0.5),
        ..minute("f", "$LATEST", 60_000)
    };
    s.put_metric_minutes(vec![more]).await.unwrap();
    let got = s.metric_minutes("f", None, 0, 1_000_000).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        (
            m.invocations,
            m.errors,
            m.throttles,
            m.cold_starts,
            m.provisioned_invocations
        ),
        (5, 1, 4, 1, 1)
    );
    assert_eq!(m.duration_sum_ms, 35.0);
    assert_eq!(m.duration_max_ms, 20.0);
    assert_eq!(m.duration_buckets, vec![(10, 1), (40, 3), (55, 1)]);
    assert_eq!(m.init_duration_max_ms, 100.0);
    assert_eq!(m.init_duration_buckets, vec![(70, 1)]);
    assert_eq!(m.concurrency_max, 5);
    assert_eq!(m.provisioned_utilization_max, Some(0.5));
}

#[tokio::test]
async fn rows_in_one_put_for_the_same_minute_add_up_too() {
    let s = SqliteStore::in_memory().unwrap();
    let m = minute("f", "$LATEST", 60_000);
    s.put_metric_minutes(vec![m.clone(), m]).await.unwrap();
    let got = s.metric_minutes("f", None, 0, 1_000_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].invocations, 6);
    assert_eq!(got[0].duration_buckets, vec![(40, 4), (55, 2)]);
}

#[tokio::test]
async fn prune_removes_minutes_before_the_cutoff() {
    let s = SqliteStore::in_memory().unwrap();
    s.put_metric_minutes(vec![
        minute("f", "$LATEST", 60_000),
        minute("f", "$LATEST", 120_000),
        minute("g", "1", 60_000),
    ])
    .await
    .unwrap();
    assert_eq!(s.prune_metric_minutes(120_000).await.unwrap(), 2);
    let left = s.metric_minutes("f", None, 0, 1_000_000).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.minute_ms).collect::<Vec<_>>(),
        [120_000]
    );
    assert_eq!(s.prune_metric_minutes(120_000).await.unwrap(), 0);
}

#[tokio::test]
async fn minutes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.put_metric_minutes(vec![minute("f", "$LATEST", 60_000)])
            .await
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let got = s.metric_minutes("f", None, 0, 1_000_000).await.unwrap();
    assert_eq!(got, vec![minute("f", "$LATEST", 60_000)]);
}
