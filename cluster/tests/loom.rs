//! Loom explorations of what the cluster shares between threads, built only with
//! `RUSTFLAGS="--cfg squall_loom"` (see `.ci/run`): the hybrid logical clock every task of a
//! client (and every executor of a worker) stamps its writes with, and an executor's mailbox —
//! how an executor thread waits for the worker's answer while other messages arrive. (Routes,
//! once a shared structure, now live in the client's state machine, which one task owns.)

#![cfg(squall_loom)]

use loom::sync::Arc;
use loom::sync::mpsc;
use loom::thread;
use squall_cluster::client::Hlc;
use squall_cluster::exec::{Answer, Mailbox};
use squall_proto::NodeId;
use squall_proto::session::{CallId, Level, SessionId};
use squall_proto::worker::ExecMsg;

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

/// What the mailbox scenario needs of an executor's mailbox, so the scenario that judges the
/// production [`Mailbox`] is the one shown to catch a defective one.
trait Waits {
    fn next_invoke(&mut self) -> Option<ExecMsg>;
    fn answer(&mut self, call: CallId, req: u32) -> Answer;
}

impl Waits for Mailbox {
    fn next_invoke(&mut self) -> Option<ExecMsg> {
        Mailbox::next_invoke(self)
    }

    fn answer(&mut self, call: CallId, req: u32) -> Answer {
        Mailbox::answer(self, call, req)
    }
}

fn call(seq: u64) -> CallId {
    (SessionId { scheduler: NodeId(1), seq }, 0)
}

fn invoke(seq: u64) -> ExecMsg {
    let (call, level) = (call(seq), Level::Lww);
    ExecMsg::Invoke { call, function: "f".into(), level, args: vec![], reads: Default::default() }
}

/// An executor runs call 1 and waits for the answer to its read 0, while the worker's task
/// answers it — after a late answer to an earlier run (call 0) — and a second thread of the
/// worker hands it call 2 and cancels call 0 again. Whatever the interleaving: the wait ends
/// with exactly the awaited answer, and the next run is call 2, which no message overtook or
/// lost. A cancel of call 1 instead ends the wait as cancelled.
fn mailbox_scenario<M: Waits>(make: fn(mpsc::Receiver<ExecMsg>) -> M) {
    let (tx, rx) = mpsc::channel();
    tx.send(invoke(1)).expect("open");
    let mut mailbox = make(rx);
    let other = tx.clone();
    let worker = thread::spawn(move || {
        let stale = ExecMsg::GetOk { call: call(0), req: 0, value: Ok(None) };
        other.send(stale).expect("open");
        other.send(ExecMsg::GetOk { call: call(1), req: 0, value: Ok(None) }).expect("open");
    });
    let dispatcher = thread::spawn(move || {
        tx.send(invoke(2)).expect("open");
        tx.send(ExecMsg::Cancel { call: call(0) }).expect("open");
    });
    assert_eq!(mailbox.next_invoke(), Some(invoke(1)));
    let got = mailbox.answer(call(1), 0);
    assert_eq!(got, Answer::Got(ExecMsg::GetOk { call: call(1), req: 0, value: Ok(None) }));
    assert_eq!(mailbox.next_invoke(), Some(invoke(2)), "the next run was lost or overtaken");
    worker.join().expect("worker");
    dispatcher.join().expect("dispatcher");
}

#[test]
fn an_executor_hears_its_answer_and_keeps_every_invoke() {
    loom::model(|| mailbox_scenario(Mailbox::new));
}

/// The same with a mailbox that polls before it sleeps (`functions.executor_spin_us`): the
/// polls may find the channel empty or not at any point of the interleaving.
#[test]
fn a_polling_executor_hears_its_answer_and_keeps_every_invoke() {
    loom::model(|| {
        mailbox_scenario(|rx| Mailbox::polling(rx, std::time::Duration::from_micros(1)))
    });
}

/// The mailbox scenario can fail: a mailbox that drops an `Invoke` arriving while its
/// executor waits for an answer loses call 2 when the dispatcher overtakes the worker.
#[test]
fn the_mailbox_scenario_catches_a_mailbox_that_drops_invokes() {
    struct Forgetful(mpsc::Receiver<ExecMsg>);
    impl Waits for Forgetful {
        fn next_invoke(&mut self) -> Option<ExecMsg> {
            loop {
                match self.0.recv().ok()? {
                    msg @ ExecMsg::Invoke { .. } => return Some(msg),
                    _ => continue,
                }
            }
        }
        fn answer(&mut self, call: CallId, req: u32) -> Answer {
            loop {
                match self.0.recv() {
                    Ok(msg @ ExecMsg::GetOk { call: c, req: r, .. }) if c == call && r == req => {
                        return Answer::Got(msg);
                    }
                    Ok(_) => continue,
                    Err(_) => return Answer::Stopped,
                }
            }
        }
    }
    let caught = std::panic::catch_unwind(|| loom::model(|| mailbox_scenario(Forgetful)));
    assert!(caught.is_err(), "a mailbox that drops invokes escaped");
}
