//! A registration again (a takeover by another connection) supersedes the earlier one's
//! handle: it can no longer beat, nor disconnect the agent from its new owner. A registration
//! that no connection holds (over HTTP) leaves the agent not `connected`.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

#[tokio::test(start_paused = true)]
async fn a_superseded_handle_can_neither_beat_nor_disconnect_the_agent() {
    let cfg = RuntimeConfig {
        policy: Policy {
            heartbeat_interval: Duration::from_secs(1),
            on_disconnect: OnDisconnect::Offline,
            ..Policy::default()
        },
        ..config()
    };
    let (rt, _) = start(cfg).await;
    let old = rt.register(Registration::new(id("x"))).await.unwrap();
    let new = rt.register(Registration::new(id("x"))).await.unwrap();
    assert_eq!((old.incarnation(), new.incarnation()), (1, 2));
    assert!(!old.is_current() && new.is_current());

    assert!(matches!(
        old.heartbeat(Beat::healthy()),
        Err(BeatError::Superseded(_))
    ));
    // The old owner's connection closes: nothing happens to the agent.
    assert!(matches!(old.disconnected(), Err(BeatError::Superseded(_))));
    new.heartbeat(Beat::healthy()).unwrap();
    sleep(Duration::from_millis(200)).await;
    let a = get(&rt, "x").await;
    assert_eq!(a.status, Status::Online);
    assert!(a.connected, "still connected under its new owner");
    // The new owner's close does disconnect it.
    new.disconnected().unwrap();
    sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&rt, "x").await.status, Status::Offline);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connectionless_registration_is_not_connected_until_a_connection_registers_it() {
    let (rt, _) = start(config()).await;
    let quiet = Registration {
        connectionless: true,
        ..Registration::new(id("cron"))
    };
    let first = rt.register(quiet.clone()).await.unwrap();
    let a = get(&rt, "cron").await;
    assert_eq!((a.status, a.connected), (Status::Online, false));
    first.heartbeat(Beat::healthy()).unwrap();
    // A connection registers it: from then on it is connected.
    rt.register(Registration::new(id("cron"))).await.unwrap();
    assert!(get(&rt, "cron").await.connected);
    // And without one again (re-registered over HTTP): not connected.
    rt.register(quiet).await.unwrap();
    let a = get(&rt, "cron").await;
    assert_eq!((a.incarnation, a.connected), (3, false));
    rt.shutdown().await.unwrap();
}
