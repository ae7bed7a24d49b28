//! The live event stream (Server-Sent Events) over real TCP.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{event, Harness, TOKEN};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open `GET /v1/events/stream`, read as raw text.
struct StreamClient {
    stream: TcpStream,
    text: String,
}

impl StreamClient {
    /// Connects with HTTP/1.0, so the body comes unchunked until the server closes it.
    async fn open(h: &Harness, extra_header: &str) -> StreamClient {
        // A small receive buffer, so a client that stops reading soon holds the server back.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(h.addr).await.unwrap();
        let request = format!(
            "GET /v1/events/stream HTTP/1.0\r\nHost: localhost\r\n\
             Authorization: Bearer {TOKEN}\r\n{extra_header}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = StreamClient {
            stream,
            text: String::new(),
        };
        client.read_until("\r\n\r\n").await;
        assert!(
            client.text.starts_with("HTTP/1.0 200") || client.text.starts_with("HTTP/1.1 200"),
            "{}",
            client.text
        );
        assert!(client
            .text
            .to_lowercase()
            .contains("content-type: text/event-stream"));
        client
    }

    /// Reads until `needle` and the end of the event holding it have arrived (within 10 s).
    async fn read_until(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        let complete = |text: &str| {
            text.find(needle).is_some_and(|at| {
                text[at + needle.len()..].contains("\n\n") || needle.ends_with("\r\n\r\n")
            })
        };
        while !complete(&self.text) {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await;
            let n = read
                .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {:?}", self.text))
                .unwrap();
            assert!(
                n > 0,
                "stream closed before {needle:?}; got {:?}",
                self.text
            );
            self.text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
    }

    /// The events received so far: (id, event name, data).
    fn events(&self) -> Vec<(u64, String, Value)> {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.split("\n\n")
            .filter_map(|block| {
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::to_owned))
                };
                let id = field("id: ")?.parse().ok()?;
                let data = serde_json::from_str(&field("data: ")?).ok()?;
                Some((id, field("event: ")?, data))
            })
            .collect()
    }
}

#[tokio::test]
async fn a_connected_client_receives_new_events_and_a_reconnect_gets_what_it_missed() {
    let h = Harness::start().await;
    h.register("c0", &[("u1", "heartbeating")]).await;
    assert_eq!(
        h.post_events("c0", &[event(1, "u1", "heartbeat_missed", json!({}))])
            .await
            .0,
        200
    );

    // A new client with no Last-Event-ID gets the events stored from now on.
    let mut client = StreamClient::open(&h, "").await;
    h.post_events(
        "c0",
        &[event(2, "u1", "heartbeat_lost", json!({"misses": 3}))],
    )
    .await;
    client.read_until("event: heartbeat_lost").await;
    let events = client.events();
    assert_eq!(events.len(), 1, "{}", client.text);
    let (id, name, data) = &events[0];
    let raw = format!("id: {id}\nevent: heartbeat_lost\ndata: {{");
    assert!(client.text.contains(&raw), "{}", client.text);
    assert_eq!(name, "heartbeat_lost");
    assert_eq!(data["id"], *id);
    assert_eq!(
        (data["host"].as_str(), data["seq"].as_u64()),
        (Some("c0"), Some(2))
    );
    assert_eq!(data["details"], json!({"misses": 3}));
    let last_seen = *id;
    drop(client);

    // While it is away, two more events are stored; the reconnect gets exactly those.
    let more = [
        event(3, "u1", "recovery_started", json!({"action": "reboot"})),
        event(4, "u1", "heartbeat_started", json!({})),
    ];
    h.post_events("c0", &more).await;
    let mut client = StreamClient::open(&h, &format!("Last-Event-ID: {last_seen}\r\n")).await;
    client.read_until("event: heartbeat_started").await;
    let names: Vec<_> = client
        .events()
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(names, ["recovery_started", "heartbeat_started"]);

    // `?after=` does the same for clients that cannot set headers.
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let request = format!(
        "GET /v1/events/stream?after={} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        last_seen + 1
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut after = StreamClient {
        stream,
        text: String::new(),
    };
    after.read_until("event: heartbeat_started").await;
    assert_eq!(after.events().len(), 1, "{}", after.text);
}

#[tokio::test]
async fn many_events_posted_at_once_reach_a_stream_in_order_without_loss() {
    let h = Harness::start().await;
    h.register("c0", &[]).await;
    let mut client = StreamClient::open(&h, "").await;
    // The client reads nothing while 6,000 events of 1 KiB are stored: far more than the
    // socket buffers and the broadcast hold, so its feeder must catch up from the store.
    let pad = "x".repeat(1024);
    for batch in 0..12u64 {
        let events: Vec<_> = (1..=500)
            .map(|n| {
                event(
                    batch * 500 + n,
                    "u1",
                    "heartbeat_missed",
                    json!({"pad": pad}),
                )
            })
            .collect();
        assert_eq!(h.post_events("c0", &events).await.0, 200);
    }
    client.read_until("id: 6000\n").await;
    let ids: Vec<u64> = client.events().into_iter().map(|(id, _, _)| id).collect();
    let in_order = ids.iter().copied().eq(1..=6000);
    assert!(
        in_order,
        "{} events, first {:?}, last {:?}",
        ids.len(),
        ids.first(),
        ids.last()
    );
}

#[tokio::test]
async fn a_bad_last_event_id_is_refused_and_streams_end_when_the_controller_stops() {
    let mut h = Harness::start().await;
    let (code, answer) = common::request(
        h.addr,
        "GET",
        "/v1/events/stream?after=soon",
        Some(&format!("Bearer {TOKEN}")),
        "",
    )
    .await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let mut client = StreamClient::open(&h, "").await;
    tokio::time::timeout(Duration::from_secs(4), h.stop())
        .await
        .expect("the controller stops while a stream is open");
    client.read_until(": the controller is stopping").await;
}
