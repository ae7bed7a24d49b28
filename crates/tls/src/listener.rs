//! Server side: a TCP listener whose connections come out TLS-wrapped, for `axum::serve`.
//!
//! [`TlsListener::new`] starts a task that accepts TCP connections and runs each TLS
//! handshake in a task of its own, limited to [`HANDSHAKE_TIMEOUT`]; finished handshakes are
//! handed to `axum::serve` through a channel. So a client that connects and says nothing, is
//! slow, or speaks plain HTTP holds only its own task, never the accept loop. At most
//! [`MAX_HANDSHAKES`] handshakes run at once; connections beyond that are closed at once.
//!
//! A client whose first byte is not a TLS handshake record (a plain `http://` client) is
//! answered `400` with a one-line text that says to use `https://`, then closed. Every failed
//! handshake is logged at `warn`, at most once per [`LOG_PERIOD`] (the rest are counted in the
//! next line), so a scanner cannot flood the log.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take from connecting to the end of its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// At most one log line about failed handshakes per period.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY: usize = 64;
/// Pause after a failed `accept` (out of file descriptors, …) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// What a plain HTTP client is told.
const PLAIN_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 44\r\nConnection: close\r\n\r\nThis port serves HTTPS: use an https:// URL\n";

/// A connection after its TLS handshake.
pub type TlsConnection = TlsStream<TcpStream>;

/// A listener of TLS connections; see the module's text. Dropping it stops accepting.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsConnection, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`, each handshake limited to [`HANDSHAKE_TIMEOUT`].
    /// Must be called within a tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        TlsListener::with_handshake_timeout(tcp, config, HANDSHAKE_TIMEOUT)
    }

    /// Like [`TlsListener::new`] with another handshake limit.
    pub fn with_handshake_timeout(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(READY);
        let handshakes = Handshakes {
            acceptor: TlsAcceptor::from(config),
            timeout: handshake_timeout,
            ready: sender,
            failures: Arc::new(Mutex::new(FailureLog::default())),
        };
        let accepting = tokio::spawn(accept_loop(tcp, handshakes));
        Ok(TlsListener {
            local_addr,
            ready,
            accepting,
        })
    }
}

/// Serves `app` on `tcp` in a task until `signal` completes: over TLS with `tls` when given,
/// plain HTTP otherwise. The task answers how serving ended.
pub fn serve(
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: axum::Router,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let Some(tls) = tls else {
        let server = axum::serve(tcp, app).with_graceful_shutdown(signal);
        return Ok(tokio::spawn(async move { server.await }));
    };
    let server = axum::serve(TlsListener::new(tcp, tls)?, app).with_graceful_shutdown(signal);
    Ok(tokio::spawn(async move { server.await }))
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ended (it only does when aborted): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// What every handshake task shares.
#[derive(Clone)]
struct Handshakes {
    acceptor: TlsAcceptor,
    timeout: Duration,
    ready: mpsc::Sender<(TlsConnection, SocketAddr)>,
    failures: Arc<Mutex<FailureLog>>,
}

async fn accept_loop(tcp: TcpListener, handshakes: Handshakes) {
    let running = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                handshakes.failed(None, &format!("accept failed: {error}"));
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = running.clone().try_acquire_owned() else {
            handshakes.failed(Some(peer), "too many handshakes in progress; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(handshakes.timeout, handshakes.run(stream)).await;
            drop(permit);
            match outcome {
                Ok(Ok(connection)) => {
                    let _ = handshakes.ready.send((connection, peer)).await;
                }
                Ok(Err(why)) => handshakes.failed(Some(peer), &why),
                Err(_) => {
                    let secs = handshakes.timeout.as_secs_f64();
                    handshakes.failed(Some(peer), &format!("no handshake within {secs} s"));
                }
            }
        });
    }
}

impl Handshakes {
    /// The handshake of one connection; a plain HTTP client is answered and refused.
    async fn run(&self, mut stream: TcpStream) -> Result<TlsConnection, String> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err("closed before the handshake".to_owned()),
            Ok(_) if first[0] != TLS_HANDSHAKE => {
                let _ = stream.write_all(PLAIN_ANSWER).await;
                let _ = stream.shutdown().await;
                return Err("not TLS (a plain http:// client?); answered 400".to_owned());
            }
            Ok(_) => {}
            Err(error) => return Err(format!("cannot read: {error}")),
        }
        self.acceptor
            .accept(stream)
            .await
            .map_err(|error| format!("TLS handshake failed: {error}"))
    }

    /// Logs a failure unless one was logged within [`LOG_PERIOD`].
    fn failed(&self, peer: Option<SocketAddr>, why: &str) {
        let suppressed = match self.failures.lock() {
            Ok(mut log) => log.allow(Instant::now()),
            Err(_) => return,
        };
        if let Some(suppressed) = suppressed {
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(peer, error = why, suppressed, "A TLS client was refused");
        }
    }
}

/// When a failure was last logged and how many were not logged since.
#[derive(Debug, Default)]
struct FailureLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    /// `Some(failures not logged since the last line)` when this one may be logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + LOG_PERIOD) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests;
