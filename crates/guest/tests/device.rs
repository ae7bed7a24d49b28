//! Character-device mode, with a pseudo-terminal standing in for the virtio-serial port (a
//! double: no virtio device exists here). The pty's slave side is a real character device the
//! daemon opens and drives exactly as it drives `/dev/virtio-ports/cgcs.heartbeat`; closing
//! the master makes the slave report `POLLHUP` for ever, as a port without a host does.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
use tether_proto::{encode, Decoder, Message};

const BIN: &str = env!("CARGO_BIN_EXE_tether-guest");

/// The master side of a pty in raw mode, and the path of its slave.
fn raw_pty() -> (OwnedFd, String) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let slave = rustix::fs::open(&path, OFlags::RDWR | OFlags::NOCTTY, Mode::empty()).unwrap();
    let mut termios = tcgetattr(&slave).unwrap();
    termios.make_raw();
    tcsetattr(&slave, OptionalActions::Now, &termios).unwrap();
    (master, path)
}

/// Reads from the master until a whole message arrives, for at most 10 s.
fn read_message(master: &OwnedFd, decoder: &mut Decoder, queue: &mut Vec<Message>) -> Message {
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.is_empty() {
        assert!(Instant::now() < deadline, "no message from the daemon");
        let mut fds = [PollFd::new(master, PollFlags::IN)];
        let wait = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        rustix::event::poll(&mut fds, Some(&wait)).unwrap();
        if fds[0].revents().contains(PollFlags::IN) {
            let mut buf = [0u8; 2048];
            match rustix::io::read(master, &mut buf[..]) {
                Ok(n) => decoder.feed(&buf[..n], |f| queue.push(f.unwrap())),
                // EIO until the daemon has opened the slave side.
                Err(rustix::io::Errno::IO) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("read from the pty: {e}"),
            }
        } else if fds[0].revents().contains(PollFlags::HUP) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    queue.remove(0)
}

fn cpu_ticks(child: &Child) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_character_device_is_driven_and_a_hangup_costs_no_cpu() {
    let dir = tether_testkit::temp_dir();
    let config = dir.path().join("guest_heartbeat.conf");
    std::fs::write(&config, "").unwrap();
    let (master, slave) = raw_pty();
    let mut child = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--device",
            &slave,
            "--name",
            "pty-vm",
            "--api-socket",
            dir.path().join("api.sock").to_str().unwrap(),
        ])
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut decoder = Decoder::new();
    let mut queue = Vec::new();
    let Message::Init(init) = read_message(&master, &mut decoder, &mut queue) else {
        panic!("expected init");
    };
    assert_eq!(init.name, "pty-vm");
    let ack = Message::InitAck {
        invocation_id: init.invocation_id,
    };
    let challenge = Message::Challenge {
        heartbeat_challenge: 31337,
    };
    let mut bytes = encode(1, &ack);
    bytes.extend(encode(2, &challenge));
    rustix::io::write(&master, &bytes).unwrap();
    let Message::ChallengeResponse(response) = read_message(&master, &mut decoder, &mut queue)
    else {
        panic!("expected a challenge response");
    };
    assert_eq!(response.heartbeat_response, 31337);
    // The host side goes away: the slave hangs up for good. The daemon must not spin.
    drop(master);
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(&child);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(&child) - before;
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    assert!(running, "the daemon keeps running");
    assert!(
        used <= 5,
        "the daemon used {used} ticks of CPU in 2 s with the host gone"
    );
}
