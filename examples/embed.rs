//! Embedding vigil: supervise three in-process agents, watch their transitions, and operate
//! on them with admin messages. Run with `cargo run --example embed`.

use std::time::Duration;

use vigil::core::{
    AdminRequest, AgentId, Beat, EventBody, MemStore, Policy, Registration, Runtime, RuntimeConfig,
    SubscribeOptions, SubscriptionItem,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RuntimeConfig {
        policy: Policy {
            heartbeat_interval: Duration::from_millis(200),
            grace: Duration::from_millis(50),
            ..Policy::default()
        },
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(config, MemStore::new()).await?;
    let mut events = rt
        .subscribe(SubscribeOptions {
            snapshot: true,
            ..Default::default()
        })
        .await?;

    let mut agents = Vec::new();
    for name in ["planner", "coder", "tester"] {
        agents.push(
            rt.register(Registration::new(AgentId::new(name)?).kind("llm"))
                .await?,
        );
    }
    // The tester stops beating after a while; the others keep going.
    let beats = tokio::spawn(async move {
        for round in 0..20 {
            for a in &agents {
                if a.id().as_str() != "tester" || round < 5 {
                    let _ = a.heartbeat(Beat::healthy());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let mut offline_seen = false;
    while let Some(item) = events.next().await {
        match item {
            SubscriptionItem::Snapshot(s) => {
                println!("snapshot at seq {}: {} agents", s.seq, s.agents.len())
            }
            SubscriptionItem::Event(e) => {
                let who = e.agent.as_ref().map_or("-", |a| a.as_str());
                match &e.body {
                    EventBody::Registered { .. } => println!("#{} {who} registered", e.seq),
                    EventBody::Transition {
                        from, to, reason, ..
                    } => {
                        println!("#{} {who}: {from} -> {to} ({reason:?})", e.seq);
                        offline_seen |= *to == vigil::core::Status::Offline;
                    }
                    other => println!("#{} {who}: {other:?}", e.seq),
                }
            }
            other => println!("{other:?}"),
        }
        if offline_seen {
            break;
        }
    }
    // Operators act through admin messages.
    rt.admin(AdminRequest::Maintenance {
        id: AgentId::new("tester")?,
        on: true,
    })
    .await?;
    println!("{:#?}", rt.stats().await?.registry.agents);
    beats.await?;
    rt.shutdown().await?;
    Ok(())
}
