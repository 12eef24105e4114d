//! Loom explorations of the client's shared-memory structures, built only with
//! `RUSTFLAGS="--cfg squall_loom"` (see `.ci/run`): the hybrid logical clock and the route
//! cache, shared by every task of a client.

#![cfg(squall_loom)]

use loom::sync::Arc;
use loom::thread;
use squall_cluster::client::{Hlc, RouteCache};
use squall_proto::NodeId;
use squall_proto::kvs::Epoch;

/// Two threads tick the clock at the same physical time while one also observes a stamp read
/// from the store: every reading is distinct, each thread's readings increase, and a tick
/// after an observation is above the observed stamp.
#[test]
fn clock_readings_are_unique_increasing_and_past_observations() {
    loom::model(|| {
        let clock = Arc::new(Hlc::new());
        let other = clock.clone();
        let t = thread::spawn(move || {
            let a = other.tick(10);
            let b = other.tick(10);
            assert!(a < b);
            vec![a, b]
        });
        clock.observe(100);
        let c = clock.tick(10);
        assert!(c > 100, "a tick after observing 100 read {c}");
        let mut all = t.join().expect("thread");
        all.push(c);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3, "two readings coincided");
    });
}

/// Two threads learn routes for one key from different epochs while a third reads it: the
/// newest epoch wins whatever the order, and a reader never sees the epoch go back.
#[test]
fn routes_only_move_to_newer_epochs() {
    loom::model(|| {
        let cache = Arc::new(RouteCache::new(16));
        let (a, b, r) = (cache.clone(), cache.clone(), cache.clone());
        let ta = thread::spawn(move || a.learn("k", Epoch(2), vec![NodeId(2)], Epoch(1)));
        let tb = thread::spawn(move || b.learn("k", Epoch(3), vec![NodeId(3)], Epoch(1)));
        let tr = thread::spawn(move || {
            let first = r.get("k").map(|(e, _)| e);
            let second = r.get("k").map(|(e, _)| e);
            assert!(first <= second, "the route went back from {first:?} to {second:?}");
        });
        ta.join().expect("a");
        assert!(tb.join().expect("b"), "the newest epoch is always learned");
        tr.join().expect("reader");
        assert_eq!(cache.get("k"), Some((Epoch(3), vec![NodeId(3)])));
        assert!(!cache.learn("k", Epoch(1), vec![NodeId(1)], Epoch(1)), "a stale route is refused");
    });
}

/// The clock test can fail: a clock that reads and then writes (instead of one atomic
/// compare-and-swap) hands two threads the same reading, and loom finds the interleaving.
#[test]
fn a_racy_clock_is_caught() {
    use loom::sync::atomic::{AtomicU64, Ordering};
    struct Racy(AtomicU64);
    impl Racy {
        fn tick(&self, physical: u64) -> u64 {
            let next = physical.max(self.0.load(Ordering::Acquire) + 1);
            self.0.store(next, Ordering::Release);
            next
        }
    }
    let caught = std::panic::catch_unwind(|| {
        loom::model(|| {
            let clock = Arc::new(Racy(AtomicU64::new(0)));
            let other = clock.clone();
            let t = thread::spawn(move || other.tick(10));
            let mine = clock.tick(10);
            assert_ne!(mine, t.join().expect("thread"), "two readings coincided");
        });
    });
    assert!(caught.is_err(), "loom must find the lost update");
}
