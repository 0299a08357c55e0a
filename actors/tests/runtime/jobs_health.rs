//! Activity and jobs as events, and the fleet's health: alerts and the health report.

use super::*;

fn job(j: &str, state: JobState, progress: Option<f64>) -> JobReport {
    JobReport {
        job: j.into(),
        state,
        progress,
        error: None,
    }
}

fn job_event(e: &Event) -> (String, Option<String>, String, Option<String>) {
    match &e.body {
        EventBody::Job {
            job,
            from,
            to,
            error,
            ..
        } => (job.clone(), from.clone(), to.clone(), error.clone()),
        other => panic!("expected a job event, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn activity_and_jobs_are_events_only_on_change_and_jobs_fail_with_their_agent() {
    let store = MemStore::new();
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    let a = id("a");
    rt.register(Registration::new(a.clone())).await.unwrap();
    next_event(&mut sub).await; // registered

    rt.report_activity(&a, "working", Some("step 1".into()))
        .unwrap();
    rt.report_activity(&a, "working", Some("step 2".into()))
        .unwrap(); // same activity: no event
    rt.report_activity(&a, "tool_calling", None).unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.body,
        EventBody::Activity {
            from: None,
            to: "working".into(),
            detail: Some("step 1".into())
        }
    );
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.body,
        EventBody::Activity {
            from: Some("working".into()),
            to: "tool_calling".into(),
            detail: None
        }
    );
    assert_eq!(
        get(&rt, "a").await.activity.as_deref(),
        Some("tool_calling")
    );

    rt.report_job(&a, job("j1", JobState::Running, Some(0.2)))
        .unwrap();
    rt.report_job(&a, job("j1", JobState::Running, Some(0.2)))
        .unwrap(); // no change
    rt.report_job(&a, job("j2", JobState::Assigned, None))
        .unwrap();
    rt.report_job(&a, job("j2", JobState::Completed, Some(1.0)))
        .unwrap();
    let got: Vec<_> = [
        next_event(&mut sub).await,
        next_event(&mut sub).await,
        next_event(&mut sub).await,
    ]
    .iter()
    .map(|e| job_event(e))
    .collect();
    assert_eq!(
        got,
        vec![
            ("j1".into(), None, "running".into(), None),
            ("j2".into(), None, "assigned".into(), None),
            (
                "j2".into(),
                Some("assigned".into()),
                "completed".into(),
                None
            ),
        ]
    );

    // Silent: degraded, then offline; j1 (unfinished) fails right after the offline.
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Degraded);
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Offline);
    let e = next_event(&mut sub).await;
    assert_eq!(
        job_event(&e),
        (
            "j1".into(),
            Some("running".into()),
            "failed".into(),
            Some("agent_offline".into())
        )
    );
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.registry.jobs.get(&JobState::Failed), Some(&1));
    assert_eq!(stats.registry.jobs.get(&JobState::Completed), Some(&1));
    // Back online with a job under way when the runtime stops.
    rt.register(Registration::new(a.clone())).await.unwrap();
    rt.report_job(&a, job("j3", JobState::Running, Some(0.5)))
        .unwrap();
    let last = rt.stats().await.unwrap().registry.last_seq;
    assert_eq!(get(&rt, "a").await.jobs.len(), 1);
    rt.shutdown().await.unwrap();

    // After a restart (from the checkpoint) the activity and the unfinished job are as they
    // were: repeating them makes no event, and the job fails when its agent leaves.
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    assert_eq!(
        get(&rt, "a").await.activity.as_deref(),
        Some("tool_calling")
    );
    rt.register(Registration::new(a.clone())).await.unwrap();
    rt.report_activity(&a, "tool_calling", None).unwrap();
    rt.report_job(&a, job("j3", JobState::Running, Some(0.5)))
        .unwrap();
    rt.deregister(&a).await.unwrap();
    let events = all_events(&rt).await;
    let after: Vec<_> = events.iter().filter(|e| e.seq > last).collect();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(matches!(after[0].body, EventBody::Registered { .. }));
    assert!(matches!(after[1].body, EventBody::Deregistered { .. }));
    assert_eq!(
        job_event(after[2]),
        (
            "j3".into(),
            Some("running".into()),
            "failed".into(),
            Some("agent_left".into())
        )
    );
    assert!(get(&rt, "a").await.jobs.is_empty());
    // A departed agent's reports are dropped.
    rt.report_activity(&a, "idle", None).unwrap();
    rt.report_job(&a, job("j4", JobState::Running, None))
        .unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(store.len() as u64, last + 3);
}

fn health_config(health: HealthConfig) -> RuntimeConfig {
    RuntimeConfig { health, ..config() }
}

/// The alerts of the log with this issue.
fn alerts<'a>(log: &'a [Event], issue: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    log.iter()
        .filter(move |e| matches!(&e.body, EventBody::Alert { issue: i, .. } if i == issue))
}

#[tokio::test(start_paused = true)]
async fn a_connected_agent_gone_silent_raises_one_heartbeat_mismatch_per_episode() {
    let (rt, _) = start(health_config(HealthConfig {
        check_interval: Duration::from_secs(5),
        ..HealthConfig::default()
    }))
    .await;
    let mut sub = rt
        .subscribe(SubscribeOptions {
            filter: Filter {
                events: vec![EventKind::Alert],
                ..Filter::default()
            },
            ..SubscribeOptions::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let a = rt
        .register(Registration::new(id("a1")).kind("worker"))
        .await
        .unwrap();

    // Offline at 3 s and still connected: the check at 5 s says so.
    let e = next_event(&mut sub).await;
    assert!(
        within(t0.elapsed(), Duration::from_secs(5)),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.agent, Some(id("a1")));
    assert_eq!(e.kind.as_deref(), Some("worker"));
    match &e.body {
        EventBody::Alert {
            severity,
            issue,
            detail,
            ..
        } => {
            assert_eq!(
                (*severity, issue.as_str()),
                (Severity::High, "heartbeat_mismatch")
            );
            assert!(
                detail.starts_with("agent a1: connected but offline"),
                "{detail}"
            );
        }
        other => panic!("expected an alert, got {other:?}"),
    }

    // Five more checks find it again: no second alert.
    sleep(Duration::from_secs(26)).await;
    let log = all_events(&rt).await;
    assert_eq!(alerts(&log, "heartbeat_mismatch").count(), 1, "{log:?}");

    // It comes back and stays long enough for a check to see it online (the finding is
    // resolved and forgotten), then goes silent again: a new episode, a new alert.
    for _ in 0..12 {
        a.heartbeat(Beat::healthy()).unwrap();
        sleep(500 * MS).await;
    }
    assert_eq!(get(&rt, "a1").await.status, Status::Online);
    let silent = Instant::now();
    let e = next_event(&mut sub).await;
    assert!(matches!(&e.body, EventBody::Alert { issue, .. } if issue == "heartbeat_mismatch"));
    assert!(
        silent.elapsed() >= Duration::from_secs(3),
        "only once offline again"
    );
    sleep(Duration::from_secs(21)).await;
    let log = all_events(&rt).await;
    assert_eq!(alerts(&log, "heartbeat_mismatch").count(), 2, "{log:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_agents_offline_at_once_raise_one_mass_offline_and_every_transition() {
    // 40 agents; more than 30% (13) within 30 s is a mass failure.
    let (rt, _) = start(health_config(HealthConfig {
        check_interval: Duration::from_secs(3600),
        ..HealthConfig::default()
    }))
    .await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let h = rt
            .register(Registration::new(id(&format!("a{i:02}"))))
            .await
            .unwrap();
        handles.push(h);
    }
    // Ten keep beating; thirty fall silent and go offline together at 3 s.
    for _ in 0..20 {
        sleep(500 * MS).await;
        for h in &handles[..10] {
            h.heartbeat(Beat::healthy()).unwrap();
        }
    }
    let log = all_events(&rt).await;
    let offline: Vec<&Event> = log
        .iter()
        .filter(|e| e.body.status_after() == Some(Status::Offline))
        .collect();
    assert_eq!(offline.len(), 30, "every transition is recorded");
    let mass: Vec<&Event> = alerts(&log, "mass_offline").collect();
    assert_eq!(mass.len(), 1, "{log:?}");
    let alert = mass[0];
    assert_eq!(alert.agent, None);
    assert!(matches!(
        &alert.body,
        EventBody::Alert { severity: Severity::High, detail, .. }
            if detail.starts_with("13 of 40 agents went offline within 30s")
    ));
    // Raised right after the transition that made it massive: the 13th.
    let before = offline.iter().filter(|e| e.seq < alert.seq).count();
    assert_eq!(before, 13);
    assert_eq!(
        rt.stats().await.unwrap().registry.agents[&Status::Offline],
        30
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_report_gives_the_summary_and_the_findings() {
    let (rt, _) = start(health_config(HealthConfig {
        stale_connection: Duration::from_secs(5),
        extended_offline: Duration::from_secs(4),
        ..HealthConfig::default()
    }))
    .await;
    let reg = |s: &str| Registration::new(id(s)).kind("worker");
    let ok = rt.register(reg("ok")).await.unwrap();
    let sick = rt.register(reg("sick")).await.unwrap();
    // A long interval: online for 10 s without a beat, stale after 5.
    rt.register(reg("quiet").heartbeat_interval(Duration::from_secs(10)))
        .await
        .unwrap();
    // Silent and connected: offline at 3 s.
    rt.register(reg("gone")).await.unwrap();
    // Disconnected and set offline at once: offline for longer than 4 s by the report.
    let away = rt.register(reg("away")).await.unwrap();
    away.disconnected().unwrap();
    rt.admin(AdminRequest::SetStatus {
        id: id("away"),
        status: Status::Offline,
        reason: None,
    })
    .await
    .unwrap();
    rt.register(reg("maint")).await.unwrap();
    rt.admin(AdminRequest::Maintenance {
        id: id("maint"),
        on: true,
    })
    .await
    .unwrap();
    rt.register(reg("left")).await.unwrap();
    rt.deregister(&id("left")).await.unwrap();
    for _ in 0..12 {
        sleep(500 * MS).await;
        ok.heartbeat(Beat::healthy()).unwrap();
        sick.heartbeat(Beat::reporting(Reported::Degraded)).unwrap();
    }

    let report = rt.health_report().await.unwrap();
    assert_eq!(
        report.summary,
        HealthSummary {
            total: 6,
            online: 2,
            degraded: 1,
            offline: 2,
            maintenance: 1,
            unknown: 0,
            left: 1,
        }
    );
    let found: Vec<(&str, HealthIssue, Severity)> = report
        .agents
        .iter()
        .map(|f| (f.id.as_str(), f.issue, f.severity))
        .collect();
    assert_eq!(
        found,
        [
            ("away", HealthIssue::ExtendedOffline, Severity::High),
            ("gone", HealthIssue::HeartbeatMismatch, Severity::High),
            ("quiet", HealthIssue::StaleConnection, Severity::Warning),
            ("sick", HealthIssue::DegradedPerformance, Severity::Warning),
        ]
    );
    assert!(report.agents.iter().all(|f| &*f.kind == "worker"));

    // The admin operation answers the same, in the documented shape.
    let AdminResponse::Health(via_admin) = rt.admin(AdminRequest::HealthReport).await.unwrap()
    else {
        panic!("expected a health report");
    };
    assert_eq!(via_admin.summary, report.summary);
    assert_eq!(via_admin.agents, report.agents);
    let v = serde_json::to_value(&*via_admin).unwrap();
    assert_eq!(v["summary"]["total"], 6);
    assert_eq!(v["agents"][1]["issue"], "heartbeat_mismatch");
    assert_eq!(v["agents"][1]["severity"], "high");
    assert_eq!(v["agents"][1]["id"], "gone");
    rt.shutdown().await.unwrap();
}
