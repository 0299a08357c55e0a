//! The HTTP listener over real sockets, with a real HTTP client: REST against its OpenAPI
//! document, tokens, metrics, readiness. Its streams (SSE, WebSocket) and TLS are in
//! `http_streams.rs`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{http_client, ws_frame, ws_send, Node};
use serde_json::{json, Value};
use vigil::serve::http::{HttpConfig, OPENAPI, REST_ROUTES};
use vigil_actors::{AgentId, FailingStore, MemStore, Registration, RuntimeConfig};

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `v` against the subset of JSON Schema the document uses.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let s = resolve(doc, schema);
    if v.is_null() && s["nullable"] == true {
        return;
    }
    if let Some(t) = s["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            other => panic!("schema type {other} at {at}"),
        };
        assert!(ok, "{at}: expected {t}, got {v}");
    }
    if let Some(options) = s["enum"].as_array() {
        assert!(options.contains(v), "{at}: {v} not in {options:?}");
    }
    if let Some(req) = s["required"].as_array() {
        for k in req {
            let k = k.as_str().unwrap();
            assert!(v.get(k).is_some(), "{at}: missing {k} in {v}");
        }
    }
    if let (Some(props), Some(obj)) = (s["properties"].as_object(), v.as_object()) {
        for (k, ps) in props {
            if let Some(x) = obj.get(k) {
                check(doc, ps, x, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"));
        }
    }
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = REST_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    node.rt
        .add_sink(
            vigil_actors::SinkConfig::new("trail", "log"),
            std::sync::Arc::new(vigil_actors::LogSink::default()),
        )
        .await
        .unwrap();
    node.agents("w", "worker", 3).await;
    // An agent a live connection holds (the agent routes answer 409 for it).
    let mut tcp = common::Client::hello(node.tcp.local_addr(), "agent", None).await;
    tcp.send(json!({"type":"register","id":"held","ref":1}))
        .await;
    tcp.expect("registered").await;
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let http = http_client();
    // One request per route (in an order where the writes come last).
    let mut calls: Vec<(&str, String, Option<Value>, u16)> = vec![
        (
            "get",
            "/api/v1/agents?kind=worker&status=online".into(),
            None,
            200,
        ),
        ("get", "/api/v1/agents?limit=x".into(), None, 400),
        ("get", "/api/v1/agents/w0".into(), None, 200),
        ("get", "/api/v1/agents/nobody".into(), None, 404),
        ("get", "/api/v1/agents/w0/events?since=0".into(), None, 200),
        (
            "get",
            "/api/v1/agents/w0/events?latest=true&limit=1".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/agents/w0/events?latest=maybe".into(),
            None,
            400,
        ),
        ("get", "/api/v1/agents/nobody/events".into(), None, 404),
        ("get", "/api/v1/health-report".into(), None, 200),
        ("get", "/api/v1/stats".into(), None, 200),
        ("get", "/api/v1/sinks".into(), None, 200),
        ("get", "/api/v1/sinks/trail/dead-letters".into(), None, 200),
        ("get", "/api/v1/sinks/nope/dead-letters".into(), None, 400),
        ("get", "/api/v1/openapi.json".into(), None, 200),
        ("get", "/healthz".into(), None, 200),
        ("get", "/readyz".into(), None, 200),
        ("get", "/metrics".into(), None, 200),
        ("get", "/".into(), None, 200),
        ("get", "/dashboard/app.js".into(), None, 200),
        ("get", "/dashboard/app.css".into(), None, 200),
        (
            "post",
            "/api/v1/agents/w1/status".into(),
            Some(json!({"status":"degraded"})),
            200,
        ),
        (
            "post",
            "/api/v1/agents/w1/status".into(),
            Some(json!({"status":"sideways"})),
            400,
        ),
        (
            "post",
            "/api/v1/agents/w2/maintenance".into(),
            Some(json!({"on":true})),
            200,
        ),
        (
            "post",
            "/api/v1/agents/nobody/maintenance".into(),
            Some(json!({"on":true})),
            404,
        ),
        (
            "put",
            "/api/v1/policies/worker".into(),
            Some(json!({"recovery":3})),
            200,
        ),
        ("post", "/api/v1/sinks/trail/replay".into(), None, 200),
        ("post", "/api/v1/sinks/nope/replay".into(), None, 400),
        (
            "delete",
            "/api/v1/agents/w0?reason=decommissioned".into(),
            None,
            200,
        ),
    ];
    // The agents' own routes (no agent tokens are configured here).
    let agent = |path: &str, body: Option<Value>, want| ("post", path.to_string(), body, want);
    let job = json!({"job":"j1","state":"running","progress":0.5});
    calls.extend([
        agent(
            "/api/v1/agents",
            Some(json!({"id":"h1","heartbeat_interval_ms":60000})),
            201,
        ),
        agent("/api/v1/agents", Some(json!({"id":"h1"})), 200),
        agent("/api/v1/agents", Some(json!({"name":"x"})), 400),
        agent("/api/v1/agents", Some(json!({"id":"held"})), 409),
        agent("/api/v1/agents/h1/heartbeat", None, 200),
        agent(
            "/api/v1/agents/h1/heartbeat",
            Some(json!({"status":"degraded"})),
            200,
        ),
        agent(
            "/api/v1/agents/h1/heartbeat",
            Some(json!({"status":"sideways"})),
            400,
        ),
        agent("/api/v1/agents/nobody/heartbeat", None, 404),
        agent("/api/v1/agents/held/heartbeat", None, 409),
        agent("/api/v1/agents/h1/jobs", Some(job.clone()), 200),
        agent("/api/v1/agents/h1/jobs", Some(json!({"job":"j1"})), 400),
        agent("/api/v1/agents/nobody/jobs", Some(job.clone()), 404),
        agent("/api/v1/agents/held/jobs", Some(job), 409),
        agent("/api/v1/agents/held/deregister", None, 409),
        agent("/api/v1/agents/h1/deregister", None, 200),
        agent("/api/v1/agents/h1/deregister", None, 404),
    ]);
    let mut covered = BTreeSet::new();
    for (method, path, body, want) in calls {
        let mut req = match method {
            "get" => http.get(node.url(&path)),
            "post" => http.post(node.url(&path)),
            "put" => http.put(node.url(&path)),
            "delete" => http.delete(node.url(&path)),
            _ => unreachable!(),
        };
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, want, "{method} {path}");
        // The documented route this path is.
        let bare = path.split('?').next().unwrap();
        let (_, route) = REST_ROUTES
            .iter()
            .find(|(m, r)| {
                *m == method && {
                    let a: Vec<&str> = r.split('/').collect();
                    let b: Vec<&str> = bare.split('/').collect();
                    a.len() == b.len()
                        && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
                }
            })
            .unwrap_or_else(|| panic!("{method} {path} is not a documented route"));
        covered.insert((method, *route));
        let spec = &doc["paths"][route][method]["responses"][status.to_string()];
        assert!(
            spec.is_object(),
            "{method} {route}: status {status} is not documented"
        );
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        if let Some(schema) = spec["content"].get("application/json") {
            assert!(
                ctype.starts_with("application/json"),
                "{method} {path}: {ctype}"
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            check(&doc, &schema["schema"], &v, &format!("{method} {path}"));
        } else {
            let documented = spec["content"].as_object().unwrap().keys().next().unwrap();
            assert!(
                ctype.starts_with(documented.as_str()),
                "{method} {path}: {ctype}"
            );
        }
    }
    // The streams are exercised below; every other route was called.
    let missed: Vec<_> = REST_ROUTES
        .iter()
        .filter(|(m, r)| !["/api/v1/events", "/ws"].contains(r) && !covered.contains(&(*m, *r)))
        .collect();
    assert!(missed.is_empty(), "routes not called: {missed:?}");
}

#[tokio::test]
async fn tokens_gate_reads_and_writes() {
    let tokens = HttpConfig {
        monitor_tokens: vec!["mon".into()],
        admin_tokens: vec!["adm".into()],
        ..vigil::config::Config::default().http_config()
    };
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        vigil::config::Config::default().server_config(),
        tokens,
    )
    .await;
    node.agents("t", "worker", 1).await;
    let http = http_client();
    let code = |r: reqwest::Response| r.status().as_u16();
    let list = node.url("/api/v1/agents");
    assert_eq!(code(http.get(&list).send().await.unwrap()), 401);
    assert_eq!(
        code(http.get(&list).bearer_auth("nope").send().await.unwrap()),
        401
    );
    assert_eq!(
        code(http.get(&list).bearer_auth("mon").send().await.unwrap()),
        200
    );
    assert_eq!(
        code(http.get(&list).bearer_auth("adm").send().await.unwrap()),
        200
    );
    assert_eq!(
        code(http.get(format!("{list}?token=mon")).send().await.unwrap()),
        200
    );
    let evict = node.url("/api/v1/agents/t0");
    let r = http.delete(&evict).bearer_auth("mon").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        code(http.delete(&evict).bearer_auth("adm").send().await.unwrap()),
        200
    );
    // A method a route does not take: 405, in the API's error shape.
    let r = http.patch(node.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unknown_type");
    // No token for these.
    for open in [
        "/",
        "/dashboard/app.js",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(
            code(http.get(node.url(open)).send().await.unwrap()),
            200,
            "{open}"
        );
    }
    let sse = node.url("/api/v1/events");
    assert_eq!(code(http.get(&sse).send().await.unwrap()), 401);

    // Writes from a page of another origin, or without a JSON body, are refused.
    let status = node.url("/api/v1/agents/t0/maintenance");
    let r = http
        .post(&status)
        .bearer_auth("adm")
        .header("content-type", "text/plain")
        .body(r#"{"on":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 400);
    let r = http
        .post(&status)
        .bearer_auth("adm")
        .header("content-type", "application/json")
        .header("origin", "http://evil.example")
        .body(r#"{"on":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 403);

    // WebSocket: a token is needed; a monitor's may not send admin frames.
    let ws_url = format!("ws://{}/ws", node.http.local_addr());
    assert!(tokio_tungstenite::connect_async(&ws_url).await.is_err());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token=mon"))
        .await
        .unwrap();
    ws_send(&mut ws, json!({"type":"admin","op":"stats","ref":1})).await;
    let v = ws_frame(&mut ws).await;
    assert_eq!(
        (v["type"].clone(), v["code"].clone()),
        (json!("error"), json!("forbidden"))
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token=adm"))
        .await
        .unwrap();
    ws_send(&mut ws, json!({"type":"admin","op":"stats","ref":1})).await;
    assert_eq!(ws_frame(&mut ws).await["type"], "result");
}

#[tokio::test]
async fn metrics_report_the_fleet_in_prometheus_text() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let mut trail = vigil_actors::SinkConfig::new("trail", "log");
    trail.start = vigil_actors::StartAt::Beginning;
    let log = std::sync::Arc::new(vigil_actors::LogSink::default());
    node.rt.add_sink(trail, log).await.unwrap();
    let ids = node.agents("m", "worker", 3).await;
    node.agents("g", "gpu", 1).await;
    node.flip(&ids[0], true).await;
    let mut text = String::new();
    // Written events show up once they are durable.
    for _ in 0..200 {
        text = http_client()
            .get(node.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let sink = "vigil_sink_delivered_seq{sink=\"trail\",type=\"log\"} 5";
        if text.contains("vigil_transitions_total 1") && text.contains(sink) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for want in [
        concat!(
            "vigil_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
        "vigil_agents{kind=\"worker\",status=\"online\"} 2",
        "vigil_agents{kind=\"worker\",status=\"maintenance\"} 1",
        "vigil_agents{kind=\"gpu\",status=\"online\"} 1",
        "vigil_transitions_total 1",
        "vigil_events_persisted_total{event=\"registered\"} 4",
        "vigil_store_healthy 1",
        "vigil_store_errors_total 0",
        "# TYPE vigil_store_batch_duration_seconds histogram",
        "vigil_store_batch_duration_seconds_bucket{le=\"+Inf\"}",
        "vigil_connections 0",
        "# TYPE vigil_heartbeats counter",
        "# TYPE vigil_lagged_subscribers counter",
        "vigil_monitor_subscribers 0",
        "vigil_sink_lag_events{sink=\"trail\",type=\"log\"} 0",
        "vigil_sink_delivered_events_total{sink=\"trail\",type=\"log\"} 5",
        "vigil_sink_up{sink=\"trail\",type=\"log\"} 1",
        "vigil_sink_dead_letters{sink=\"trail\",type=\"log\"} 0",
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[tokio::test]
async fn readyz_is_false_while_the_store_fails() {
    let store = FailingStore::new(MemStore::new());
    let node = Node::start(RuntimeConfig::default(), store.clone()).await;
    let http = http_client();
    assert_eq!(
        http.get(node.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    store.fail_writes(true);
    // A registration whose write fails (it is answered only once durable: not awaited).
    let rt = node.rt.clone();
    let pending = tokio::spawn(async move {
        rt.register(Registration::new(AgentId::new("f0").unwrap()))
            .await
    });
    let mut status = 0;
    for _ in 0..500 {
        let r = http.get(node.url("/readyz")).send().await.unwrap();
        status = r.status().as_u16();
        if status == 503 {
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(body, json!({"ready": false, "store": "failing"}));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503);
    assert_eq!(
        http.get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "alive all the same"
    );
    store.fail_writes(false);
    for _ in 0..1000 {
        status = http
            .get(node.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "ready again once writes succeed");
    pending
        .await
        .unwrap()
        .expect("the registration is answered once durable");
}
