//! A TCP proxy the tests can take down and bring back: a target that refuses connections, then
//! returns, without stopping a shared server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    /// A proxy in front of the server `url` points at (`port` is that server's port), and `url`
    /// with the proxy's port instead.
    pub async fn in_front_of(url: &str, port: &str) -> (Proxy, String) {
        let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
        let proxied = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
        (proxy, proxied)
    }

    pub async fn start(upstream: String) -> Proxy {
        Proxy::start_at("127.0.0.1", upstream).await
    }

    /// A proxy listening on `address` (e.g. `127.0.0.2`: a name the test certificates do not
    /// hold, for the host-name checks of TLS).
    pub async fn start_at(address: &str, upstream: String) -> Proxy {
        let listener = TcpListener::bind((address, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Notify::new());
        let (d, c) = (Arc::clone(&down), Arc::clone(&cut));
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client); // refused, as far as the agent can tell
                    continue;
                }
                let upstream = upstream.clone();
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Proxy { port, down, cut }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn bring_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
