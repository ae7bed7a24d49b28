//! A host-side double of the channel: a plain client of a VM's heartbeat socket that reads
//! what the guest sends, decoded with `tether-proto`.
//!
//! It checks the boot path on its own (kernel, image, modules, port links, guest start-up)
//! without the host agent: the first `init` the guest sends proves all of it works.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_proto::{Decoder, Message};

/// Why the double got no message.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    /// Connecting or reading failed.
    #[error("Channel I/O on {}", .path.display())]
    Io {
        /// The channel socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the channel.
    #[error("Channel {} closed", .0.display())]
    Closed(PathBuf),
    /// Nothing decodable arrived in time.
    #[error("No message on the channel within {0:?}")]
    Timeout(Duration),
}

/// A connected channel double.
#[derive(Debug)]
pub struct ChannelDouble {
    path: PathBuf,
    stream: UnixStream,
    decoder: Decoder,
    pending: Vec<Message>,
    /// Frames that did not decode, as text (what the guest sent wrong).
    pub rejected: Vec<String>,
}

impl ChannelDouble {
    /// Connects to the channel socket.
    pub fn connect(path: &Path) -> Result<ChannelDouble, DoubleError> {
        let stream = UnixStream::connect(path).map_err(|source| DoubleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ChannelDouble {
            path: path.to_path_buf(),
            stream,
            decoder: Decoder::new(),
            pending: Vec::new(),
            rejected: Vec::new(),
        })
    }

    /// The next message the guest sends, waiting up to `timeout`.
    pub fn next_message(&mut self, timeout: Duration) -> Result<Message, DoubleError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while self.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DoubleError::Timeout(timeout));
            }
            let io = |source| DoubleError::Io {
                path: self.path.clone(),
                source,
            };
            self.stream.set_read_timeout(Some(left)).map_err(io)?;
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err(DoubleError::Closed(self.path.clone())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(source) => {
                    return Err(DoubleError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            let (pending, rejected) = (&mut self.pending, &mut self.rejected);
            self.decoder.feed(&buf[..n], |frame| match frame {
                Ok(message) => pending.push(message),
                Err(e) => rejected.push(e.to_string()),
            });
        }
        Ok(self.pending.remove(0))
    }
}
