//! The baseline (`tether bench null-agent`): a bare epoll echo of the agent's traffic.
//!
//! It connects to every channel socket in a directory, and every interval writes the same
//! `challenge` bytes the agent would send to each guest and reads whatever comes back, with no
//! decoding, no state and one timer: each interval it writes to every guest in one pass, the
//! fewest wake-ups the traffic allows. Its CPU per heartbeat is therefore the floor any agent
//! pays for the same bytes through the same kernel: the bench reports the agent's cost as a
//! multiple of it.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::Timespec;
use tether_proto::{encode, Message};

use crate::{io_err, BenchError};

/// Flags of `tether bench null-agent`.
#[derive(Debug, Clone, Args)]
pub struct NullAgentArgs {
    /// Directory holding the channel sockets (`*.sock`) to connect to.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Interval between two challenges to the same guest.
    #[arg(long, value_name = "MS")]
    pub interval_ms: u64,
}

/// Connects to every socket and echoes challenges until killed.
pub fn run_null_agent(args: NullAgentArgs) -> Result<(), BenchError> {
    let streams = connect_all(&args.dir)?;
    let epoll =
        epoll::create(CreateFlags::CLOEXEC).map_err(|e| io_err("create an epoll")(e.into()))?;
    for (index, stream) in streams.iter().enumerate() {
        epoll::add(
            &epoll,
            stream,
            EventData::new_u64(index as u64),
            EventFlags::IN,
        )
        .map_err(|e| io_err("watch a channel socket")(e.into()))?;
    }
    let challenge = encode(
        1,
        &Message::Challenge {
            heartbeat_challenge: 1_234_567,
        },
    );
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let mut due = Instant::now();
    let mut events = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= due {
            for mut stream in &streams {
                let _ = stream.write(&challenge);
            }
            due += interval;
            continue;
        }
        let wait = due - now;
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: wait.subsec_nanos().into(),
        };
        events.clear();
        match epoll::wait(&epoll, spare_capacity(&mut events), Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err("wait for channel sockets")(e.into())),
        }
        for event in &events {
            let index = event.data.u64() as usize;
            if let Some(stream) = streams.get(index) {
                if !drain(stream, &mut buf) {
                    let _ = epoll::delete(&epoll, stream);
                }
            }
        }
    }
}

/// Reads everything waiting; `false` once the peer has gone.
fn drain(mut stream: &UnixStream, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Non-blocking connections to every `*.sock` in `dir`, in name order.
fn connect_all(dir: &Path) -> Result<Vec<UnixStream>, BenchError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    paths.sort();
    let mut streams = Vec::with_capacity(paths.len());
    for path in paths {
        let stream =
            UnixStream::connect(&path).map_err(io_err(format!("connect to {}", path.display())))?;
        stream
            .set_nonblocking(true)
            .map_err(io_err("make a socket non-blocking"))?;
        streams.push(stream);
    }
    Ok(streams)
}
