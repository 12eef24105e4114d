//! A listening port: accepts connections up to a limit, each served on its own task, with a
//! graceful stop (stop accepting, let open connections finish their work) and a hard close.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

/// A port being served.
#[derive(Debug)]
pub struct Port {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Port {
    /// Serves `listener`: each accepted connection runs `serve` on its own task, with at most
    /// `max_connections` open; a connection over the limit is sent `refusal` (if any) and closed.
    pub fn spawn<F, Fut>(
        listener: TcpListener,
        max_connections: usize,
        refusal: Option<&'static [u8]>,
        serve: F,
    ) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(max_connections));
        let task = tokio::spawn(async move {
            // Owned by this task: closing the port aborts every connection with it.
            let mut connections = JoinSet::new();
            let mut over_limit = Throttle::new(WARN_EVERY);
            loop {
                while connections.try_join_next().is_some() {}
                let (mut stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = stopped.changed() => break,
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if let Some(refused) = over_limit.note(Instant::now()) {
                        tracing::warn!(
                            %peer,
                            refused,
                            "connection limit reached; closing new connections"
                        );
                    }
                    if let Some(refusal) = refusal {
                        let _ = stream.write_all(refusal).await;
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let served = serve(stream);
                connections.spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            // Stopped: no new connections; the open ones go on until the port is closed.
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        Self { task, stop }
    }

    /// Stops accepting connections; open ones keep being served.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Closes the port and every open connection at once.
    pub fn close(self) {
        self.task.abort();
    }
}

/// How often a repeated warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning logged at most once per period, with how many times it happened meanwhile.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    /// A throttle logging at most once per `period`.
    pub(crate) fn new(period: Duration) -> Self {
        Self { period, last: None, count: 0 }
    }

    /// The thing happened at `now`: the number of times it happened since it was last
    /// logged (this one included) if it is to be logged now, else `None`.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|last| now.duration_since(last) < self.period) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_goes_out_once_a_period_with_the_count_since() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.note(t0), Some(1), "the first one at once");
        for s in 1..10 {
            assert_eq!(throttle.note(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.note(t0 + Duration::from_secs(10)), Some(10));
        assert_eq!(throttle.note(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(30)), Some(2));
    }
}
