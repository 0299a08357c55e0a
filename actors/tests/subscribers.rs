//! What a session leaves behind: subscribers that went away.

mod common;

use common::*;
use vigil_actors::*;

async fn subscribers(rt: &Runtime) -> usize {
    rt.stats().await.unwrap().broadcast.subscribers
}

#[tokio::test(start_paused = true)]
async fn a_dropped_subscription_is_forgotten_even_if_no_event_ever_matches_it() {
    let (rt, _) = start(config()).await;
    let baseline = subscribers(&rt).await;
    let never = Filter {
        ids: vec![id("nobody-is-called-this")],
        ..Filter::default()
    };
    for _ in 0..500 {
        let sub = rt
            .subscribe(SubscribeOptions {
                filter: never.clone(),
                ..SubscribeOptions::default()
            })
            .await
            .unwrap();
        drop(sub);
    }
    // Events that match none of them: nothing ever finds their channels closed.
    rt.register(Registration::new(id("a1"))).await.unwrap();
    // The removals were cast before the stats request: they are handled first.
    assert_eq!(subscribers(&rt).await, baseline);
    rt.shutdown().await.unwrap();
}
