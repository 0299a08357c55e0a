//! Bad input and the bounds on a connection: malformed frames, a silent peer, too many
//! connections, garbage, floods.

use super::*;

#[tokio::test]
async fn bad_frames_are_answered_change_nothing_and_too_many_close_the_connection() {
    let cfg = ServerConfig {
        max_frame_bytes: 256,
        max_bad_frames: 3,
        max_agents_per_connection: 2,
        ..vigil::config::Config::default().server_config()
    };
    let (server, rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"ok"})).await;
    c.expect("registered").await;

    c.raw(b"this is not json\n").await;
    c.expect_error("bad_frame").await;
    c.raw(&[b'x'; 1000]).await;
    c.raw(b"\n").await;
    c.expect_error("frame_too_large").await;
    // A good frame resets the count of bad ones in a row.
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    c.send(json!({"type":"launch","ref":"l"})).await;
    assert_eq!(c.expect_error("unknown_type").await["ref"], "l");
    c.send(json!({"type":"register"})).await;
    c.expect_error("missing_field").await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    c.send(json!({"type":"register","id":"no spaces"})).await;
    c.expect_error("invalid_field").await;
    c.send(json!({"type":"register","id":"fast","heartbeat_interval_ms":1}))
        .await;
    c.expect_error("invalid_field").await;
    assert!(rt.agent(&AgentId::new("fast").unwrap()).is_none());
    c.send(json!({"type":"subscribe"})).await;
    c.expect_error("forbidden").await;
    c.raw(b"\n\r\n").await; // blank lines are ignored
    c.send(json!({"type":"register","id":"two"})).await;
    c.expect("registered").await;
    c.send(json!({"type":"register","id":"three"})).await;
    c.expect_error("overloaded").await;
    // Three bad frames in a row: the third is answered, then a final error, then close.
    for _ in 0..3 {
        c.raw(b"{\n").await;
    }
    for _ in 0..3 {
        c.expect_error("bad_frame").await;
    }
    c.expect_error("bad_frame").await;
    assert_eq!(c.recv().await, None);
    // Nothing the bad frames said changed the agent.
    let record = record(&rt, "ok").await;
    assert_eq!((record.status, record.incarnation), (Status::Online, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut idle = Client::connect(server.local_addr()).await;
    let mut partial = Client::connect(server.local_addr()).await;
    partial.raw(b"{\"type\":\"hel").await; // half a frame, never finished
    idle.expect_error("hello_required").await;
    assert_eq!(idle.recv().await, None);
    partial.expect_error("hello_required").await;
    assert_eq!(partial.recv().await, None);
    // Meanwhile a well-behaved agent is served.
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_overloaded() {
    let cfg = ServerConfig {
        max_connections: 2,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let a = Client::hello(server.local_addr(), "agent", None).await;
    let mut b = Client::hello(server.local_addr(), "agent", None).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.expect_error("overloaded").await;
    assert_eq!(c.recv().await, None);
    // The two admitted connections are unaffected.
    b.send(json!({"type":"ping"})).await;
    b.expect("pong").await;
    // Once one closes (and the listener has seen it go), a new one is admitted.
    drop(a);
    let mut admitted = false;
    for _ in 0..200 {
        let mut d = Client::connect(server.local_addr()).await;
        d.send(json!({"type":"hello","protocol":1,"role":"agent"}))
            .await;
        match d.recv().await {
            Some(v) if v["type"] == "welcome" => {
                admitted = true;
                break;
            }
            Some(v) => assert_eq!(v["code"], "overloaded", "{v}"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(admitted, "no connection admitted after one of two closed");
    server.stop().await;
}

/// Random bytes, and random mixes of pieces of frames, sent over real connections: the
/// server answers or closes, never changes an agent it was not validly asked to, and keeps
/// serving everyone else.
#[tokio::test]
async fn garbage_over_the_socket_changes_nothing() {
    let (server, rt) = setup(ServerConfig {
        max_frame_bytes: 512,
        max_bad_frames: 1000,
        ..vigil::config::Config::default().server_config()
    })
    .await;
    let mut owner = Client::hello(server.local_addr(), "agent", None).await;
    owner.send(json!({"type":"register","id":"victim"})).await;
    owner.expect("registered").await;

    let pieces: [&[u8]; 12] = [
        b"{\"type\":\"heartbeat\",\"id\":\"victim\"",
        b"{\"type\":\"deregister\",\"id\":\"victim\"}",
        b"{\"type\":\"register\",\"id\":",
        b"\"victim\",\"takeover\":tru",
        b"\n",
        b"\r\n",
        b"}",
        b"{\"type\":\"ping\"}\n",
        b"\xff\xfe\x00",
        b"[[[[",
        b"\"ref\":{}",
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..40 {
        let mut c = Client::hello(server.local_addr(), "agent", None).await;
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            match next() % 3 {
                0 => bytes.extend((0..next() % 64).map(|_| next() as u8)),
                _ => bytes.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]),
            }
        }
        bytes.push(b'\n');
        c.raw(&bytes).await;
        c.send(json!({"type":"ping","ref":"end"})).await;
        // Read until the final pong: every reply is a JSON frame of the protocol.
        loop {
            let v = c.recv().await.expect("the server keeps the connection");
            assert!(
                ["error", "pong", "registered", "ack", "deregistered"]
                    .contains(&v["type"].as_str().unwrap_or("")),
                "{v}"
            );
            // A garbage connection may only ever be refused the victim.
            if v["type"] == "registered" || v["type"] == "deregistered" {
                assert_ne!(v["id"], "victim", "{v}");
            }
            if v["type"] == "pong" && v["ref"] == "end" {
                break;
            }
        }
    }
    // The victim is still its owner's, online, and nothing else happened to it.
    owner
        .send(json!({"type":"heartbeat","id":"victim","ref":1}))
        .await;
    owner.expect("ack").await;
    let record = record(&rt, "victim").await;
    assert_eq!((record.status, record.incarnation), (Status::Online, 1));
    server.stop().await;
}

#[tokio::test]
async fn frames_beyond_the_rate_limit_are_refused_with_rate_limited() {
    let cfg = ServerConfig {
        rate_limit: 5,
        rate_burst: 10,
        max_bad_frames: 1000,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    let mut burst = String::new();
    for i in 0..40 {
        burst.push_str(&format!("{{\"type\":\"ping\",\"ref\":{i}}}\n"));
    }
    c.raw(burst.as_bytes()).await;
    let (mut pongs, mut limited) = (0, 0);
    for i in 0..40 {
        let v = c.recv().await.expect("an answer to every frame");
        assert_eq!(v["ref"], i, "answers in order: {v}");
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("{v}"),
        }
    }
    // The burst of 10 passes (and at 5/s at most a few more while the 40 are read).
    assert!((10..=15).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 40);
    server.stop().await;
}

#[tokio::test]
async fn too_many_refused_frames_in_a_row_close_a_flooding_connection() {
    let cfg = ServerConfig {
        rate_limit: 1,
        rate_burst: 1,
        max_bad_frames: 5,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    let flood = "{\"type\":\"ping\"}\n".repeat(50);
    c.raw(flood.as_bytes()).await;
    c.expect("pong").await;
    for _ in 0..5 {
        c.expect_error("rate_limited").await;
    }
    c.expect_error("bad_frame").await;
    assert_eq!(c.recv().await, None, "closed");
    server.stop().await;
}
