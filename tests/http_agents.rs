//! Agents that hold no connection, over the HTTP listener with a real HTTP client: register,
//! heartbeat, job reports and deregister; the same state machine and events as over TCP; the
//! agent role's tokens; and the ownership rules shared with the TCP listener (a connection's
//! agent is not beaten over HTTP; `takeover` evicts the connection; an HTTP agent is taken by
//! a TCP registration without `takeover`).

mod common;

use std::time::Duration;

use common::{http_client, Client, Node};
use serde_json::{json, Value};
use vigil::serve::http::HttpConfig;
use vigil_actors::{
    AdminRequest, AdminResponse, AgentId, AgentRecord, Event, EventBody, Filter, MemStore, Policy,
    Reason, RuntimeConfig, Status, SubscribeOptions, Subscription, SubscriptionItem,
};

/// A POST to `path` with `token` and a JSON `body` (none: no body at all, as
/// `curl -X POST` sends); the status and the JSON answer.
async fn post(node: &Node, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = http_client().post(node.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v)
}

/// The error code of an answer.
fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The agent's record as the runtime holds it.
async fn record(node: &Node, id: &str) -> AgentRecord {
    let id = AgentId::new(id).unwrap();
    match node.rt.admin(AdminRequest::Get { id }).await.unwrap() {
        AdminResponse::Agent(a) => *a,
        other => panic!("{other:?}"),
    }
}

/// A subscription to `id`'s events from now on.
async fn watch(node: &Node, id: &str) -> Subscription {
    let filter = Filter {
        ids: vec![AgentId::new(id).unwrap()],
        ..Filter::default()
    };
    let opts = SubscribeOptions {
        filter,
        since: None,
        snapshot: false,
    };
    node.rt.subscribe(opts).await.unwrap()
}

/// The subscription's next event, within 20 s.
async fn next_event(sub: &mut Subscription) -> Event {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("an event within 20 s")
            .expect("the subscription goes on");
        if let SubscriptionItem::Event(e) = item {
            return std::sync::Arc::unwrap_or_clone(e);
        }
    }
}

/// Asserts the next event is a transition `from` → `to` for `reason`.
async fn expect_transition(sub: &mut Subscription, from: Status, to: Status, reason: Reason) {
    let e = next_event(sub).await;
    match e.body {
        EventBody::Transition {
            from: f,
            to: t,
            reason: r,
            ..
        } => assert_eq!((f, t, r), (from, to, reason), "{e:?}"),
        other => panic!("expected a transition {from} -> {to}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agent_goes_through_the_same_state_machine_and_events() {
    // One healthy beat brings an offline agent back (no race between two beats and a
    // deadline on a busy machine).
    let cfg = RuntimeConfig {
        policy: Policy {
            recovery: 1,
            ..Policy::default()
        },
        ..RuntimeConfig::default()
    };
    let node = Node::start(cfg, MemStore::new()).await;
    let mut events = watch(&node, "backup").await;
    // First with a long interval: nothing is due while the reports are checked.
    let reg = json!({
        "id": "backup",
        "kind": "cron",
        "name": "nightly backup",
        "metadata": {"host": "db1"},
        "capabilities": ["dump"],
        "heartbeat_interval_ms": 60_000,
    });
    let (status, v) = post(&node, "/api/v1/agents", None, Some(reg)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v,
        json!({"id": "backup", "status": "online", "heartbeat_interval_ms": 60_000, "incarnation": 1})
    );
    // Answered once durable: the record and its event are there already. No connection
    // holds it.
    let r = record(&node, "backup").await;
    assert_eq!((r.status, r.connected), (Status::Online, false));
    assert_eq!((&*r.kind, r.name.as_str()), ("cron", "nightly backup"));
    match next_event(&mut events).await.body {
        EventBody::Registered {
            from, incarnation, ..
        } => assert_eq!((from, incarnation), (None, 1)),
        other => panic!("{other:?}"),
    }

    // A beat with no body at all (as a cron job's curl sends), then one with the heartbeat
    // frame's fields: metrics on the record, the activity an event.
    let (status, v) = post(&node, "/api/v1/agents/backup/heartbeat", None, None).await;
    assert_eq!((status, v), (200, json!({"id": "backup"})));
    let beat = json!({"metrics": {"bytes": 1024}, "activity": "working"});
    let (status, v) = post(&node, "/api/v1/agents/backup/heartbeat", None, Some(beat)).await;
    assert_eq!(status, 200, "{v}");
    match next_event(&mut events).await.body {
        EventBody::Activity { to, .. } => assert_eq!(to, "working"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        record(&node, "backup").await.metrics.get("bytes"),
        Some(&1024.0)
    );

    // A job report is a job event.
    let job = json!({"job": "dump-1", "state": "running", "progress": 0.5});
    let (status, v) = post(&node, "/api/v1/agents/backup/jobs", None, Some(job)).await;
    assert_eq!((status, v), (200, json!({"id": "backup", "job": "dump-1"})));
    match next_event(&mut events).await.body {
        EventBody::Job {
            job, to, progress, ..
        } => assert_eq!(
            (job.as_str(), to.as_str(), progress),
            ("dump-1", "running", Some(0.5))
        ),
        other => panic!("{other:?}"),
    }
    // Bad reports change nothing: the frame's limits, the body's id against the path's.
    let bad = json!({"job": "dump-1", "state": "running", "progress": 2});
    let (status, v) = post(&node, "/api/v1/agents/backup/jobs", None, Some(bad)).await;
    assert_eq!((status, code(&v)), (400, "invalid_field"));
    let (status, v) = post(&node, "/api/v1/agents/backup/jobs", None, Some(json!({}))).await;
    assert_eq!((status, code(&v)), (400, "missing_field"));
    let other = json!({"id": "someone-else"});
    let (status, v) = post(&node, "/api/v1/agents/backup/heartbeat", None, Some(other)).await;
    assert_eq!((status, code(&v)), (400, "invalid_field"));

    // Registered again, now with a short interval: 200, incarnation 2.
    let reg = json!({"id": "backup", "kind": "cron", "heartbeat_interval_ms": 300});
    let (status, v) = post(&node, "/api/v1/agents", None, Some(reg)).await;
    assert_eq!((status, v["incarnation"].clone()), (200, json!(2)));
    match next_event(&mut events).await.body {
        EventBody::Registered {
            from, incarnation, ..
        } => assert_eq!((from, incarnation), (Some(Status::Online), 2)),
        other => panic!("{other:?}"),
    }
    // No beats: degraded after one interval, offline after three, as over TCP.
    expect_transition(
        &mut events,
        Status::Online,
        Status::Degraded,
        Reason::HeartbeatMissed,
    )
    .await;
    expect_transition(
        &mut events,
        Status::Degraded,
        Status::Offline,
        Reason::HeartbeatMissed,
    )
    .await;
    // Its unfinished job fails with it.
    match next_event(&mut events).await.body {
        EventBody::Job { to, error, .. } => {
            assert_eq!(
                (to.as_str(), error.as_deref()),
                ("failed", Some("agent_offline"))
            )
        }
        other => panic!("{other:?}"),
    }
    // A beat brings it back.
    let (status, _) = post(&node, "/api/v1/agents/backup/heartbeat", None, None).await;
    assert_eq!(status, 200);
    expect_transition(
        &mut events,
        Status::Offline,
        Status::Online,
        Reason::HeartbeatRecovered,
    )
    .await;

    // It leaves: the `deregistered` event is durable when the answer comes.
    let (status, v) = post(&node, "/api/v1/agents/backup/deregister", None, None).await;
    assert_eq!((status, v), (200, json!({"id": "backup"})));
    assert_eq!(record(&node, "backup").await.status, Status::Left);
    loop {
        match next_event(&mut events).await.body {
            // Its deadline may have passed meanwhile (300 ms on a busy machine).
            EventBody::Transition {
                reason: Reason::HeartbeatMissed,
                ..
            } => continue,
            EventBody::Deregistered { reason, .. } => {
                assert_eq!(reason, Reason::Deregistered);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Gone: its beats and its deregistration are `not_registered` (404).
    let (status, v) = post(&node, "/api/v1/agents/backup/heartbeat", None, None).await;
    assert_eq!((status, code(&v)), (404, "not_registered"));
    let (status, v) = post(&node, "/api/v1/agents/backup/deregister", None, None).await;
    assert_eq!((status, code(&v)), (404, "not_registered"));
    let (status, v) = post(&node, "/api/v1/agents/never-seen/heartbeat", None, None).await;
    assert_eq!((status, code(&v)), (404, "not_registered"));
}

#[tokio::test]
async fn agent_routes_take_the_agent_roles_tokens() {
    let tokens = vigil::config::Config {
        auth: vigil::config::Auth {
            agent_tokens: vec!["agt".into()],
            monitor_tokens: vec!["mon".into()],
            admin_tokens: vec!["adm".into()],
            ..Default::default()
        },
        ..vigil::config::Config::default()
    };
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        tokens.server_config(),
        tokens.http_config(),
    )
    .await;
    let reg = Some(json!({"id": "probe"}));
    let (status, v) = post(&node, "/api/v1/agents", None, reg.clone()).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let (status, v) = post(&node, "/api/v1/agents", Some("nope"), reg.clone()).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    // Another role's token is known, and refused here.
    for other in ["mon", "adm"] {
        let (status, v) = post(&node, "/api/v1/agents", Some(other), reg.clone()).await;
        assert_eq!((status, code(&v)), (403, "forbidden"), "{other}");
    }
    let (status, _) = post(&node, "/api/v1/agents", Some("agt"), reg.clone()).await;
    assert_eq!(status, 201);
    let beat = "/api/v1/agents/probe/heartbeat";
    let (status, v) = post(&node, beat, Some("mon"), None).await;
    assert_eq!((status, code(&v)), (403, "forbidden"));
    let (status, v) = post(&node, beat, None, None).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let (status, _) = post(&node, &format!("{beat}?token=agt"), None, None).await;
    assert_eq!(status, 200);
    // The admin's routes still take the admin's token, not the agent's.
    let r = http_client()
        .delete(node.url("/api/v1/agents/probe"))
        .bearer_auth("agt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A body must be JSON (a cross-site form cannot send one), and no page of another origin
    // may send these.
    let r = http_client()
        .post(node.url(beat))
        .bearer_auth("agt")
        .header("content-type", "text/plain")
        .body(r#"{"status":"degraded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http_client()
        .post(node.url(beat))
        .bearer_auth("agt")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn without_agent_tokens_only_a_name_of_this_machine_is_answered() {
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        vigil::config::Config::default().server_config(),
        HttpConfig {
            monitor_tokens: vec!["mon".into()],
            ..vigil::config::Config::default().http_config()
        },
    )
    .await;
    let rebound = http_client()
        .post(node.url("/api/v1/agents"))
        .header("host", "rebound.example")
        .header("content-type", "application/json")
        .body(r#"{"id":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let (status, _) = post(&node, "/api/v1/agents", None, Some(json!({"id": "a"}))).await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_a_connection_holds_is_not_acted_on_over_http_but_taken_over() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let mut tcp = Client::hello(node.tcp.local_addr(), "agent", None).await;
    tcp.send(json!({"type":"register","id":"held","ref":1}))
        .await;
    assert_eq!(tcp.expect("registered").await["incarnation"], 1);

    let (status, v) = post(&node, "/api/v1/agents/held/heartbeat", None, None).await;
    assert_eq!((status, code(&v)), (409, "not_owner"));
    let job = Some(json!({"job": "j", "state": "running"}));
    let (status, v) = post(&node, "/api/v1/agents/held/jobs", None, job).await;
    assert_eq!((status, code(&v)), (409, "not_owner"));
    let (status, v) = post(&node, "/api/v1/agents/held/deregister", None, None).await;
    assert_eq!((status, code(&v)), (409, "not_owner"));
    let reg = json!({"id": "held"});
    let (status, v) = post(&node, "/api/v1/agents", None, Some(reg)).await;
    assert_eq!((status, code(&v)), (409, "conflict"));
    // Nothing changed: still the connection's, online, connected.
    let r = record(&node, "held").await;
    assert_eq!(
        (r.status, r.connected, r.incarnation),
        (Status::Online, true, 1)
    );

    // `takeover`: the connection is told, exactly as by another connection.
    let reg = json!({"id": "held", "takeover": true});
    let (status, v) = post(&node, "/api/v1/agents", None, Some(reg)).await;
    assert_eq!((status, v["incarnation"].clone()), (200, json!(2)));
    let evicted = tcp.expect("evicted").await;
    assert_eq!(
        (evicted["id"].clone(), evicted["reason"].clone()),
        (json!("held"), json!("taken_over"))
    );
    // The connection no longer has it; HTTP does.
    tcp.send(json!({"type":"heartbeat","id":"held","ref":2}))
        .await;
    tcp.expect_error("not_registered").await;
    let (status, _) = post(&node, "/api/v1/agents/held/heartbeat", None, None).await;
    assert_eq!(status, 200);
    let r = record(&node, "held").await;
    assert_eq!(
        (r.status, r.connected, r.incarnation),
        (Status::Online, false, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_registers_an_http_agent_without_takeover_and_holds_it() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let (status, _) = post(&node, "/api/v1/agents", None, Some(json!({"id": "moved"}))).await;
    assert_eq!(status, 201);
    let mut tcp = Client::hello(node.tcp.local_addr(), "agent", None).await;
    tcp.send(json!({"type":"register","id":"moved","ref":1}))
        .await;
    assert_eq!(tcp.expect("registered").await["incarnation"], 2);
    assert!(record(&node, "moved").await.connected);
    // From then on the connection holds it.
    let (status, v) = post(&node, "/api/v1/agents/moved/heartbeat", None, None).await;
    assert_eq!((status, code(&v)), (409, "not_owner"));
    tcp.send(json!({"type":"heartbeat","id":"moved","ref":2}))
        .await;
    tcp.expect("ack").await;

    // The connection closes: nothing holds the agent, and HTTP beats are taken again.
    drop(tcp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.tcp.connections() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = post(&node, "/api/v1/agents/moved/heartbeat", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_http_agent_must_register_again() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let (status, _) = post(&node, "/api/v1/agents", None, Some(json!({"id": "ev"}))).await;
    assert_eq!(status, 201);
    let r = http_client()
        .delete(node.url("/api/v1/agents/ev?reason=gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, v) = post(&node, "/api/v1/agents/ev/heartbeat", None, None).await;
    assert_eq!((status, code(&v)), (404, "not_registered"));
    let (status, v) = post(&node, "/api/v1/agents", None, Some(json!({"id": "ev"}))).await;
    assert_eq!((status, v["incarnation"].clone()), (200, json!(2)));
    let (status, _) = post(&node, "/api/v1/agents/ev/heartbeat", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agent_beats_on_after_a_restart_without_registering_again() {
    let store = MemStore::new();
    let node = Node::start(RuntimeConfig::default(), store.clone()).await;
    let (status, _) = post(&node, "/api/v1/agents", None, Some(json!({"id": "cron"}))).await;
    assert_eq!(status, 201);
    let Node { rt, hub, tcp, http } = node;
    http.stop().await;
    tcp.stop().await;
    drop(hub);
    rt.shutdown_shared().await.unwrap();

    let node = Node::start(RuntimeConfig::default(), store).await;
    let (status, v) = post(&node, "/api/v1/agents/cron/heartbeat", None, None).await;
    assert_eq!(status, 200, "{v}");
    let r = record(&node, "cron").await;
    assert_eq!((r.incarnation, r.connected), (1, false));
}
