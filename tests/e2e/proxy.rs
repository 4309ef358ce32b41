//! A TCP proxy in front of RabbitMQ or PostgreSQL that a test can cut and restore: "the broker
//! (or database) is unreachable" for this test's services only, while other tests keep using it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub(crate) struct Proxy {
    addr: SocketAddr,
    // Cancelled on `cut`: every proxied connection ends and new ones are refused until `restore`.
    generation: Arc<Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let (gen_for_loop, stop_for_loop) = (generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    () = stop_for_loop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                };
                let current = gen_for_loop.lock().unwrap().clone();
                let Some(alive) = current else {
                    drop(inbound); // cut: refuse
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        () = alive.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            generation,
            stop,
        }
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub(crate) fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Drops every proxied connection and refuses new ones.
    pub(crate) fn cut(&self) {
        if let Some(alive) = self.generation.lock().unwrap().take() {
            alive.cancel();
        }
    }

    /// Accepts connections again.
    pub(crate) fn restore(&self) {
        *self.generation.lock().unwrap() = Some(CancellationToken::new());
    }
}
