//! Loom explorations of the client library's shared-memory structure, built only with
//! `RUSTFLAGS="--cfg squall_loom"` (see `.ci/run`): the hybrid logical clock every task of a
//! client stamps its writes with. (Routes, once a second shared structure, now live in the
//! client's state machine, which one task owns.)

#![cfg(squall_loom)]

use loom::sync::Arc;
use loom::thread;
use squall_cluster::client::Hlc;

/// What the clock scenario needs of a clock, so that the scenario that judges the production
/// [`Hlc`] is the very one shown to catch defective clocks.
trait Clock: Send + Sync + 'static {
    fn tick(&self, physical: u64) -> u64;
    fn observe(&self, time: u64);
}

impl Clock for Hlc {
    fn tick(&self, physical: u64) -> u64 {
        Hlc::tick(self, physical)
    }

    fn observe(&self, time: u64) {
        Hlc::observe(self, time);
    }
}

/// One thread ticks three times at the same physical time (readings 10, 11, 12 when alone)
/// while another observes 11 — a stamp between those readings — and then ticks: every reading
/// is distinct, each thread's readings increase, and the tick after the observation is above
/// it. An observation that can move the clock back (below a concurrent tick) hands out a
/// reading twice.
fn clock_scenario<C: Clock>(clock: C) {
    let clock = Arc::new(clock);
    let other = clock.clone();
    let t = thread::spawn(move || {
        let readings = vec![other.tick(10), other.tick(10), other.tick(10)];
        assert!(readings.windows(2).all(|w| w[0] < w[1]), "readings went back: {readings:?}");
        readings
    });
    clock.observe(11);
    let c = clock.tick(10);
    assert!(c > 11, "a tick after observing 11 read {c}");
    let mut all = t.join().expect("thread");
    all.push(c);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4, "two readings coincided");
}

#[test]
fn clock_readings_are_unique_increasing_and_past_observations() {
    loom::model(|| clock_scenario(Hlc::new()));
}

/// The clock scenario can fail: loom finds the interleaving that breaks a clock whose tick
/// reads and then writes (instead of one compare-and-swap), and one whose observation does.
#[test]
fn the_clock_scenario_catches_racy_clocks() {
    use loom::sync::atomic::{AtomicU64, Ordering};

    /// `tick` loads and stores separately: two threads can read the same value.
    struct RacyTick(AtomicU64);
    impl Clock for RacyTick {
        fn tick(&self, physical: u64) -> u64 {
            let next = physical.max(self.0.load(Ordering::Acquire) + 1);
            self.0.store(next, Ordering::Release);
            next
        }
        fn observe(&self, time: u64) {
            self.0.fetch_max(time, Ordering::AcqRel);
        }
    }

    /// `observe` loads and stores separately: it can move the clock back below a concurrent
    /// tick. (`tick` is the production compare-and-swap loop.)
    struct RacyObserve(AtomicU64);
    impl Clock for RacyObserve {
        fn tick(&self, physical: u64) -> u64 {
            let mut last = self.0.load(Ordering::Acquire);
            loop {
                let next = physical.max(last + 1);
                match self.0.compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return next,
                    Err(seen) => last = seen,
                }
            }
        }
        fn observe(&self, time: u64) {
            if self.0.load(Ordering::Acquire) < time {
                self.0.store(time, Ordering::Release);
            }
        }
    }

    let caught = |model: fn()| std::panic::catch_unwind(move || loom::model(model)).is_err();
    assert!(caught(|| clock_scenario(RacyTick(AtomicU64::new(0)))), "a racy tick escaped");
    assert!(caught(|| clock_scenario(RacyObserve(AtomicU64::new(0)))), "a racy observe escaped");
}
