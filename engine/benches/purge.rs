//! Log purge benchmark (`cargo bench -p reddit-engine --bench purge`): what
//! removing the records a snapshot covers does to the shard's appends. A log
//! is filled with `PURGE_MIB` (default 48) MiB of `PURGE_RECORD_BYTES` (default
//! 3072) byte records, as a shard's log holds between two snapshots of a
//! million-user run; then, while one append at a time goes on (as a shard's
//! group commit does), every record but the last few is purged, either in
//! one request (what the engine did before its log had segments) or in steps
//! of `PURGE_STEP_KIB` (default 2048) KiB of records, an alternative
//! measured and not kept; or, the engine's way now, the log is in segments
//! of the records filled in, the appends go on in the next segment, and the
//! full one is deleted whole. Each way is run `PURGE_ROUNDS` (default 3) times, alternately, on a fresh log,
//! after `PURGE_IDLE_SECONDS` (default 15) of no activity, so that the broker
//! has let its caches of the old blocks go as it would in a long run.
//! Reported per run: the purge's time and the slowest append that waited
//! while it ran.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support.rs"]
mod support;

use bytes::Bytes;
use reddit_engine::wal::Log;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the records are removed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// One purge request through the last few records (the engine's way
    /// before segments).
    Once,
    /// Purge requests of `PURGE_STEP_KIB` each.
    Stepped,
    /// The log in segments of the records filled in: the appends go on in
    /// the next while the full one is deleted whole (the engine's way since
    /// segments).
    DeleteOther,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env = support::env_u64;
    let mib = env("PURGE_MIB", 48);
    let size = env("PURGE_RECORD_BYTES", 3072);
    let rounds = env("PURGE_ROUNDS", 3);
    let idle = Duration::from_secs(env("PURGE_IDLE_SECONDS", 15));
    let step_bytes = env("PURGE_STEP_KIB", 2048) << 10;
    let count = (mib << 20) / size;
    let server = support::JetStreamServer::start("purge");
    let client = server.connect().await;
    let js = async_nats::jetstream::new(client.clone());
    let record = Bytes::from(vec![0x5au8; size as usize]);
    println!(
        "purging {count} records of {size} B ({mib} MiB) while appending one at a time; \
         steps of {} KiB",
        step_bytes >> 10
    );
    let step = (step_bytes / size).max(1);
    let mut shard = 0u32;
    for round in 0..rounds {
        for (way, how) in [
            ("one request", How::Once),
            ("in steps", How::Stepped),
            ("segment deleted", How::DeleteOther),
        ] {
            // One stream for the whole log (as before segments), or
            // segments of exactly the records filled in, so that the appends
            // then go on in the next.
            let segment = if how == How::DeleteOther {
                count
            } else {
                1 << 40
            };
            let log = Log::open(&client, shard, 64, 1)
                .await
                .unwrap()
                .with_segment_records(segment)
                // Sized by records alone: segments of exactly `segment`.
                .with_segment_bytes(1 << 60);
            let stream = reddit_engine::wal::stream_name(shard);
            shard += 1;
            let last = support::append_pipelined(&log, &record, 16, |n| n < count).await;
            tokio::time::sleep(idle).await;
            // The appender: one record at a time, each latency kept.
            let stop = Arc::new(AtomicBool::new(false));
            let appender = tokio::spawn({
                let (log, record, stop) = (log.clone(), record.clone(), stop.clone());
                async move {
                    let mut seq = last;
                    let mut took = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        seq = log
                            .append(record.clone(), &format!("a.{seq}"), seq)
                            .await
                            .unwrap();
                        took.push((t, t.elapsed()));
                    }
                    took
                }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            let upto = last - 8;
            let mut steps = 0;
            if how == How::DeleteOther {
                assert_eq!(log.delete_through(count).await.unwrap(), 1);
                steps = 1;
            } else {
                let stream = js.get_stream(&stream).await.unwrap();
                let stepped = how == How::Stepped;
                let mut through = if stepped { step.min(upto) } else { upto };
                loop {
                    stream.purge().sequence(through + 1).await.unwrap();
                    steps += 1;
                    if through == upto {
                        break;
                    }
                    through = (through + step).min(upto);
                }
            }
            let purge = started.elapsed();
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            let took = appender.await.unwrap();
            let ended = started + purge;
            // The appends that waited while the purge ran (not those before
            // it: the first after the idle time is slow for reasons of its own).
            let during: Vec<_> = took
                .iter()
                .filter(|(t, d)| *t + *d >= started && *t <= ended)
                .collect();
            let slowest = |v: &[&(Instant, Duration)]| {
                v.iter()
                    .map(|(_, d)| *d)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3
            };
            let after: Vec<_> = took.iter().filter(|(t, _)| *t > ended).collect();
            println!(
                "round {round}, {way:>20}: purge {:>6.1} ms in {steps:>3} request(s); \
                 {} appends waited on it, the slowest {:>6.1} ms (after it: {:.1} ms)",
                purge.as_secs_f64() * 1e3,
                during.len(),
                slowest(&during),
                slowest(&after),
            );
        }
    }
    drop(server);
}
