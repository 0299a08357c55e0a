//! A webhook over `https://`: delivered to a receiver whose certificate a private CA signed
//! (the sink's `ca`), and never to one it cannot verify.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::read_request;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use vigil::config::SinkSection;
use vigil_actors::{AgentId, MemStore, Registration, Runtime, RuntimeConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// An HTTPS receiver with the fixtures' certificate (`localhost`, signed by `ca.pem`): sends
/// the seqs of each delivery it reads, and how many handshakes failed.
async fn receiver() -> (u16, mpsc::UnboundedReceiver<Result<Vec<u64>, String>>) {
    let tls =
        vigil::serve::tls::tls_config(&fixtures().join("cert.pem"), &fixtures().join("key.pem"))
            .expect("the fixtures' certificate and key load");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let stream = match acceptor.accept(sock).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let (r, mut w) = tokio::io::split(stream);
                let mut r = BufReader::new(r);
                while let Some((_, body)) = read_request(&mut r).await {
                    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
                    let seqs = v["events"]
                        .as_array()
                        .expect("an events array")
                        .iter()
                        .map(|e| e["seq"].as_u64().expect("a seq"))
                        .collect();
                    let _ = tx.send(Ok(seqs));
                    let resp = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, rx)
}

fn webhook(port: u16, ca: Option<&Path>) -> SinkSection {
    let mut text = format!(
        "name = \"tls\"\ntype = \"webhook\"\nurl = \"https://localhost:{port}/hook\"\n\
         start = \"beginning\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n\
         max_attempts = 1000\n"
    );
    if let Some(ca) = ca {
        text.push_str(&format!("ca = {:?}\n", ca.display().to_string()));
    }
    toml::from_str(&text).unwrap()
}

/// A runtime with the sink and one registered agent: its `registered` event is seq 1.
async fn runtime_with(sink: &SinkSection) -> Arc<Runtime> {
    let rt = Arc::new(
        Runtime::start(RuntimeConfig::default(), MemStore::new())
            .await
            .unwrap(),
    );
    rt.add_sink(sink.config(), sink.build().expect("the sink builds"))
        .await
        .unwrap();
    rt.register(Registration::new(AgentId::new("a1").unwrap()))
        .await
        .unwrap();
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_over_tls_is_delivered_to_a_receiver_signed_by_its_ca() {
    let (port, mut got) = receiver().await;
    let ca = fixtures().join("ca.pem");
    let _rt = runtime_with(&webhook(port, Some(&ca))).await;
    let first = tokio::time::timeout(Duration::from_secs(30), got.recv())
        .await
        .expect("a delivery within 30 s")
        .expect("the receiver runs");
    assert_eq!(first, Ok(vec![1]), "the registration, over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_the_ca_refuses_the_receiver_and_delivers_nothing() {
    let (port, mut got) = receiver().await;
    let _rt = runtime_with(&webhook(port, None)).await;
    // The sink retries; each attempt's handshake fails at the receiver (the client refused
    // its certificate), and no request is ever read.
    for _ in 0..2 {
        let seen = tokio::time::timeout(Duration::from_secs(30), got.recv())
            .await
            .expect("an attempt within 30 s")
            .expect("the receiver runs");
        assert!(seen.is_err(), "delivered without trusting the CA: {seen:?}");
    }
}

#[test]
fn a_ca_file_without_a_certificate_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("vigil-webhook-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = webhook(1, Some(&empty)).build().err().expect("refused");
    assert!(e.contains("no certificate"), "{e}");
    let e = webhook(1, Some(&dir.join("missing.pem")))
        .build()
        .err()
        .expect("refused");
    assert!(e.contains("missing.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
