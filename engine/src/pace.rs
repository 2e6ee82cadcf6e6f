//! Pacing of background work that shares the machine with requests: a
//! snapshot's encoding and storing go at a byte rate instead of in a burst.
//!
//! A snapshot of a shard of a million-user system is 60–100 MiB. Encoded and
//! stored as fast as possible it took a core and the disk for 3–7 s, and the
//! requests answered meanwhile waited about three times as long as the others
//! (`docs/performance.md`, "Snapshots at a steady pace"). Spread over longer
//! at a steady rate, the same work leaves the request path its capacity, as a
//! database spreads a checkpoint's writes. The rate is a token bucket
//! (`async-speed-limit`): encoding sleeps between steps of [`STEP`] bytes
//! (on the follower's own thread), storing between chunks.

use async_speed_limit::Limiter;
use std::io;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// Bytes written between two looks at the rate: each look sleeps as long as
/// the bytes since the last one cost.
const STEP: usize = 256 << 10;

/// A byte rate for one piece of background work, or none ([`Pace::unpaced`]).
/// Clones share one budget.
#[derive(Clone, Debug, Default)]
pub struct Pace(Option<Limiter>);

impl Pace {
    /// At most `bytes_per_second` (0: as fast as possible).
    pub fn new(bytes_per_second: u64) -> Self {
        Self((bytes_per_second > 0).then(|| Limiter::new(bytes_per_second as f64)))
    }

    /// As fast as possible: for a snapshot something waits for (at shutdown).
    pub fn unpaced() -> Self {
        Self(None)
    }

    /// Whether a rate applies.
    pub fn is_paced(&self) -> bool {
        self.0.as_ref().is_some_and(|l| l.speed_limit().is_finite())
    }

    /// From now on as fast as possible, for this pace and all its clones,
    /// including work under way (a stop is waiting for it). Each waits out
    /// at most the sleep it is in: one step's worth at the old rate.
    pub fn lift(&self) {
        if let Some(limiter) = &self.0 {
            limiter.set_speed_limit(f64::INFINITY);
        }
    }

    /// Bytes that went through this pace (0 when unpaced).
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, Limiter::total_bytes_consumed)
    }

    /// A writer appending to `out` at this pace. It sleeps the calling thread,
    /// so it is for threads of their own, never for a runtime's.
    pub fn writer<'a>(&'a self, out: &'a mut Vec<u8>) -> PacedVec<'a> {
        PacedVec {
            out,
            limiter: self.0.as_ref(),
            unpaid: 0,
        }
    }

    /// `bytes` to read at this pace (async: it waits on timers, not threads).
    pub fn reader(&self, bytes: Vec<u8>) -> Pin<Box<dyn AsyncRead + Send>> {
        let cursor = io::Cursor::new(bytes);
        match &self.0 {
            Some(limiter) => Box::pin(limiter.clone().limit(cursor)),
            None => Box::pin(cursor),
        }
    }
}

/// A `Vec<u8>` written at a [`Pace`] ([`Pace::writer`]).
#[derive(Debug)]
pub struct PacedVec<'a> {
    out: &'a mut Vec<u8>,
    limiter: Option<&'a Limiter>,
    /// Bytes written since the last sleep.
    unpaid: usize,
}

impl PacedVec<'_> {
    /// Bytes in the vector so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Pays for the bytes written since the last step.
    pub fn finish(mut self) {
        self.pay();
    }

    fn pay(&mut self) {
        if let Some(limiter) = self.limiter {
            limiter.blocking_consume(std::mem::take(&mut self.unpaid));
        }
    }
}

impl io::Write for PacedVec<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        if self.limiter.is_some() {
            self.unpaid += buf.len();
            if self.unpaid >= STEP {
                self.pay();
            }
        }
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;

    #[test]
    fn a_paced_writer_writes_every_byte_and_counts_it() {
        let pace = Pace::new(1 << 30);
        let mut out = Vec::new();
        let mut w = pace.writer(&mut out);
        for i in 0..100_000u32 {
            w.write_all(&i.to_le_bytes()).unwrap();
        }
        assert_eq!(w.len(), 400_000);
        w.finish();
        assert_eq!(pace.bytes(), 400_000);
        let expected: Vec<u8> = (0..100_000u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn an_unpaced_writer_counts_nothing() {
        let pace = Pace::unpaced();
        let mut out = Vec::new();
        let mut w = pace.writer(&mut out);
        w.write_all(&[7; 1 << 20]).unwrap();
        w.finish();
        assert!(!pace.is_paced());
        assert_eq!(pace.bytes(), 0);
        assert_eq!(out.len(), 1 << 20);
        assert!(!Pace::new(0).is_paced());
    }

    /// A lower bound, not a speed: 1 MiB at 2 MiB/s cannot be written in
    /// less than about half a second (the bucket lets the first 0.1 s of the
    /// rate through at once).
    #[test]
    fn a_paced_writer_holds_to_its_rate() {
        let pace = Pace::new(2 << 20);
        let mut out = Vec::new();
        let started = Instant::now();
        let mut w = pace.writer(&mut out);
        for _ in 0..64 {
            w.write_all(&[1; 16 << 10]).unwrap();
        }
        w.finish();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    /// Lifted, a pace no longer holds back the work under way: 4 MiB at
    /// 128 KiB/s takes 32 s; lifted after its first step, it ends within
    /// the deadline.
    #[test]
    fn a_lifted_pace_lets_the_work_under_way_finish_at_once() {
        let pace = Pace::new(128 << 10);
        let writer_pace = pace.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut w = writer_pace.writer(&mut out);
            for _ in 0..256 {
                w.write_all(&[1; 16 << 10]).unwrap();
            }
            w.finish();
            let _ = done.send(out.len());
        });
        // Once it has started (its first step is paid), lift.
        while pace.bytes() == 0 {
            std::thread::yield_now();
        }
        pace.lift();
        assert!(!pace.is_paced());
        let written = finished.recv_timeout(Duration::from_secs(20));
        assert_eq!(written, Ok(4 << 20), "the lifted writer did not finish");
    }

    #[tokio::test]
    async fn a_paced_reader_gives_the_bytes_back_at_its_rate() {
        let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let pace = Pace::new(2 << 20);
        let started = Instant::now();
        let mut read = Vec::new();
        pace.reader(bytes.clone())
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert_eq!(read, bytes);
        assert_eq!(pace.bytes(), bytes.len());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
