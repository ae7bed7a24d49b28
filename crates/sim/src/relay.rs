//! The channel relay: what QEMU's virtio-serial chardev does between the host and the guest.
//!
//! The VM listens on the channel socket as `-chardev socket,server=on,wait=off` does and
//! serves one host connection at a time: a second host's `connect()` succeeds (the listen
//! backlog) but is only accepted once the first has gone. The guest daemon reaches the VM
//! through a private "port" socket; the relay copies bytes between the two connections.
//!
//! As in QEMU: while no host is connected the port is hung up (a guest that connects is closed
//! at once, so it backs off and retries); when the host leaves, the guest's connection is closed
//! (the guest reads EOF). Bytes the host writes while no guest is there, or while the VM is
//! paused or hung, are kept (up to [`MAX_HELD`]) and delivered to the next guest connection, so
//! a reset is invisible on the host's connection. While frozen (paused or hung) nothing moves
//! in either direction; with a `Slow` fault every guest → host byte waits for its delay.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use tokio::io::{Interest, Ready};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fault::Flow;
use crate::vm::VmShared;

/// Most bytes held in each direction; the host's excess is read and dropped (so that its
/// hang-up is still seen), the guest's excess waits in its socket.
pub const MAX_HELD: usize = 64 * 1024;

/// One VM's relay; runs until its task is aborted (VM quit) or the VM is dropped.
pub(crate) struct Relay {
    vm: Arc<VmShared>,
    channel: UnixListener,
    port: UnixListener,
    flow: watch::Receiver<Flow>,
    host: Option<UnixStream>,
    guest: Option<UnixStream>,
    guest_boot: u64,
    to_guest: Vec<u8>,
    to_host: VecDeque<(Instant, Vec<u8>)>,
    to_host_len: usize,
    dropped: u64,
}

enum Event {
    HostAccepted(io::Result<UnixStream>),
    GuestAccepted(io::Result<UnixStream>),
    HostReadable,
    GuestReadable,
    GuestWritable,
    HostWritable,
    FlowChanged(bool),
}

async fn ready(stream: Option<&UnixStream>, interest: Interest) -> io::Result<Ready> {
    match stream {
        Some(stream) => stream.ready(interest).await,
        None => std::future::pending().await,
    }
}

impl Relay {
    pub fn new(vm: Arc<VmShared>, channel: UnixListener, port: UnixListener) -> Relay {
        let flow = vm.flow.subscribe();
        Relay {
            vm,
            channel,
            port,
            flow,
            host: None,
            guest: None,
            guest_boot: 0,
            to_guest: Vec::new(),
            to_host: VecDeque::new(),
            to_host_len: 0,
            dropped: 0,
        }
    }

    pub async fn run(mut self) {
        let mut buf = vec![0u8; 8192];
        loop {
            match self.next_event().await {
                Event::HostAccepted(r) => self.on_host_accepted(r).await,
                Event::GuestAccepted(r) => self.on_guest_accepted(r),
                Event::HostReadable => self.read_host(&mut buf),
                Event::GuestReadable => self.read_guest(&mut buf),
                Event::GuestWritable => self.write_guest(),
                Event::HostWritable => self.write_host(),
                Event::FlowChanged(true) => {}
                Event::FlowChanged(false) => return,
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let flow = *self.flow.borrow_and_update();
        if flow.boot != self.guest_boot {
            self.guest = None; // that guest was reset or crashed: its connection is gone
        }
        let frozen = flow.frozen();
        let (host, guest) = (self.host.as_ref(), self.guest.as_ref());
        let read_guest = guest.is_some() && !frozen && self.to_host_len < MAX_HELD;
        let write_guest = guest.is_some() && !frozen && !self.to_guest.is_empty();
        let due = self.to_host.front().map(|(at, _)| *at);
        let write_host = host.is_some() && !frozen && due.is_some();
        let due = due.unwrap_or_else(Instant::now);
        tokio::select! {
            r = self.channel.accept(), if host.is_none() => Event::HostAccepted(r.map(|(s, _)| s)),
            r = self.port.accept() => Event::GuestAccepted(r.map(|(s, _)| s)),
            _ = ready(host, Interest::READABLE) => Event::HostReadable,
            _ = ready(guest, Interest::READABLE), if read_guest => Event::GuestReadable,
            _ = ready(guest, Interest::WRITABLE), if write_guest => Event::GuestWritable,
            _ = async {
                tokio::time::sleep_until(due).await;
                ready(host, Interest::WRITABLE).await
            }, if write_host => Event::HostWritable,
            r = self.flow.changed() => Event::FlowChanged(r.is_ok()),
        }
    }

    async fn on_host_accepted(&mut self, accepted: io::Result<UnixStream>) {
        match accepted {
            Ok(stream) => {
                tracing::debug!(vm = %self.vm.name, "host connected to the channel");
                self.host = Some(stream);
            }
            Err(e) => {
                // Out of descriptors or similar: do not spin on it.
                tracing::warn!(vm = %self.vm.name, error = %e, "accepting a host connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }

    fn on_guest_accepted(&mut self, accepted: io::Result<UnixStream>) {
        let Ok(stream) = accepted else { return };
        if self.host.is_none() {
            return; // hung up: the guest reads EOF and retries later
        }
        tracing::debug!(vm = %self.vm.name, "guest opened the port");
        self.guest = Some(stream);
        self.guest_boot = self.flow.borrow().boot;
    }

    fn read_host(&mut self, buf: &mut [u8]) {
        let Some(host) = &self.host else { return };
        match host.try_read(buf) {
            Ok(0) => self.host_gone(),
            Ok(n) => {
                let room = MAX_HELD - self.to_guest.len();
                self.to_guest.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    self.note_dropped(n - room);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.host_gone(),
        }
    }

    fn read_guest(&mut self, buf: &mut [u8]) {
        let Some(guest) = &self.guest else { return };
        let room = MAX_HELD - self.to_host_len;
        let cap = room.min(buf.len());
        match guest.try_read(&mut buf[..cap]) {
            Ok(0) => self.guest = None,
            Ok(n) => {
                let at = Instant::now() + self.flow.borrow().slow;
                self.to_host.push_back((at, buf[..n].to_vec()));
                self.to_host_len += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.guest = None,
        }
    }

    fn write_guest(&mut self) {
        let Some(guest) = &self.guest else { return };
        match guest.try_write(&self.to_guest) {
            Ok(n) => {
                self.to_guest.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.guest = None,
        }
    }

    fn write_host(&mut self) {
        let now = Instant::now();
        while let Some((at, bytes)) = self.to_host.front_mut() {
            let Some(host) = &self.host else { return };
            if *at > now {
                return;
            }
            match host.try_write(bytes) {
                Ok(n) if n == bytes.len() => {
                    self.to_host_len -= n;
                    self.to_host.pop_front();
                }
                Ok(n) => {
                    self.to_host_len -= n;
                    bytes.drain(..n);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.host_gone(),
            }
        }
    }

    /// The host hung up: the guest reads EOF, and what either side had in flight is gone.
    fn host_gone(&mut self) {
        tracing::debug!(vm = %self.vm.name, "host left the channel");
        self.host = None;
        self.guest = None;
        self.to_guest.clear();
        self.to_host.clear();
        self.to_host_len = 0;
    }

    fn note_dropped(&mut self, n: usize) {
        if self.dropped == 0 {
            tracing::warn!(vm = %self.vm.name, "host bytes beyond {MAX_HELD} held for an absent guest are dropped");
        }
        self.dropped += n as u64;
    }
}
