//! A listening port: accepts connections up to a limit, each served on its own task, with a
//! graceful stop (stop accepting, let open connections finish their work) and a hard close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
                    tracing::warn!(%peer, "connection limit reached; closing the new connection");
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
