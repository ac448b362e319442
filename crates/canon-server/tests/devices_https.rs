//! The device gateway over HTTPS (docs/devices.md, "HTTPS endpoints"): fake
//! devices on loopback serve TLS with certificates the test makes (rcgen,
//! tokio-rustls), trusted per device by a CA bundle or a pinned digest.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canon_server::devices::DeviceConfig;
use common::{FakeDns, Server, World, assert_problem, world};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A CA, and a device certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Appliance Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

/// A self-signed certificate for `127.0.0.1`, marked as a CA when `ca`
/// (as `openssl req -x509` makes them).
fn self_signed(ca: bool) -> Pki {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).unwrap();
    Pki {
        ca_pem: cert.pem(),
        leaf: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

/// `openssl x509 -noout -fingerprint -sha256`'s form: `AB:CD:…`.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An HTTPS device on loopback presenting `pki`'s certificate: after the
/// handshake it reads the request head and answers 200 `ok`, or, when
/// `silent`, says nothing. Counts the requests it read.
async fn https_device(pki: &Pki, silent: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                if silent {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\nx-device: tls\r\n\r\nok")
                    .await;
                let _ = tls.flush().await;
            });
        }
    });
    (addr, seen)
}

/// A plain-TCP server that answers anything with text that is not TLS.
async fn not_tls() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

async fn start(dns: Arc<FakeDns>) -> (Server, World) {
    let config = canon_server::Config {
        devices: DeviceConfig {
            lookup: dns,
            ..DeviceConfig::default()
        },
        ..common::config()
    };
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    (s, w)
}

fn dns(names: &[&str]) -> Arc<FakeDns> {
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    Arc::new(FakeDns(Mutex::new(
        names.iter().map(|n| ((*n).to_owned(), loopback)).collect(),
    )))
}

async fn register(s: &Server, w: &World, name: &str, endpoint: &str, tls: Option<Value>) -> reqwest::Response {
    let mut body = json!({"name": name, "endpoint": endpoint, "timeout_ms": 2000});
    if let Some(tls) = tls {
        body["tls"] = tls;
    }
    s.call(Method::POST, "/v1/tenants/acme/devices", &w.admin, Some(body))
        .await
}

async fn registered(s: &Server, w: &World, name: &str, endpoint: &str, tls: Option<Value>) -> Value {
    let r = register(s, w, name, endpoint, tls).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn relay(s: &Server, w: &World, name: &str) -> reqwest::Response {
    s.call(
        Method::GET,
        &format!("/v1/tenants/acme/devices/{name}/api/status"),
        &w.viewer,
        None,
    )
    .await
}

/// A 502 whose detail says TLS, and `also`.
async fn tls_failure(s: &Server, w: &World, name: &str, also: &str) {
    let problem = assert_problem(relay(s, w, name).await, 502, "bad-gateway").await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("TLS") && detail.contains(also), "{name}: {detail}");
}

#[tokio::test]
async fn an_https_device_answers_when_its_ca_or_its_certificate_is_trusted() {
    let (s, w) = start(dns(&["device.test", "other.test"])).await;
    let device = pki(&["device.test", "127.0.0.1"]);
    let (addr, seen) = https_device(&device, false).await;
    let at_ip = format!("https://{addr}/mgmt");

    // Its CA registered: the certificate chains to it and names the host.
    let created = registered(&s, &w, "by-ca", &at_ip, Some(json!({"ca_certificate": device.ca_pem}))).await;
    assert_eq!(
        created["tls"]["ca_certificate"],
        device.ca_pem.as_str(),
        "a CA is shown"
    );
    let r = relay(&s, &w, "by-ca").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-device"], "tls");
    assert_eq!(r.text().await.unwrap(), "ok");
    let by_name = format!("https://device.test:{}/", addr.port());
    registered(
        &s,
        &w,
        "by-name",
        &by_name,
        Some(json!({"ca_certificate": device.ca_pem})),
    )
    .await;
    assert_eq!(relay(&s, &w, "by-name").await.status(), 200);

    // Its certificate pinned, in openssl's `AB:CD:…` form: shown as plain hex.
    let pin = fingerprint(&device.leaf);
    let created = registered(&s, &w, "pinned", &at_ip, Some(json!({"certificate_sha256": pin}))).await;
    assert_eq!(
        created["tls"]["certificate_sha256"],
        pin.replace(':', "").to_ascii_lowercase()
    );
    assert_eq!(relay(&s, &w, "pinned").await.status(), 200);
    // Pinned, under a name the certificate does not carry: the pin is its identity.
    let elsewhere = format!("https://other.test:{}/", addr.port());
    registered(
        &s,
        &w,
        "pinned-other",
        &elsewhere,
        Some(json!({"certificate_sha256": pin})),
    )
    .await;
    assert_eq!(relay(&s, &w, "pinned-other").await.status(), 200);
    // Both: both must hold.
    registered(
        &s,
        &w,
        "both",
        &at_ip,
        Some(json!({"ca_certificate": device.ca_pem, "certificate_sha256": pin})),
    )
    .await;
    assert_eq!(relay(&s, &w, "both").await.status(), 200);
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_untrusted_certificate_a_wrong_name_and_handshake_garbage_are_502_saying_tls() {
    let (s, w) = start(dns(&["other.test"])).await;
    let device = pki(&["device.test", "127.0.0.1"]);
    let stranger = pki(&["device.test", "127.0.0.1"]);
    let (addr, seen) = https_device(&device, false).await;
    let at_ip = format!("https://{addr}/");

    // Without a trust setting: the system's roots, which never signed it.
    registered(&s, &w, "system-roots", &at_ip, None).await;
    tls_failure(&s, &w, "system-roots", "not signed by a CA").await;
    // Another CA.
    registered(
        &s,
        &w,
        "other-ca",
        &at_ip,
        Some(json!({"ca_certificate": stranger.ca_pem})),
    )
    .await;
    tls_failure(&s, &w, "other-ca", "not signed by a CA").await;
    // The right CA, a name the certificate does not carry.
    let elsewhere = format!("https://other.test:{}/", addr.port());
    registered(
        &s,
        &w,
        "wrong-name",
        &elsewhere,
        Some(json!({"ca_certificate": device.ca_pem})),
    )
    .await;
    tls_failure(&s, &w, "wrong-name", "host name").await;
    // Another certificate's pin, even with the right CA.
    let pin = fingerprint(&stranger.leaf);
    registered(
        &s,
        &w,
        "wrong-pin",
        &at_ip,
        Some(json!({"ca_certificate": device.ca_pem, "certificate_sha256": pin})),
    )
    .await;
    tls_failure(&s, &w, "wrong-pin", "pinned").await;
    // An endpoint that does not speak TLS at all.
    let plain = format!("https://{}/", not_tls().await);
    registered(&s, &w, "plain", &plain, Some(json!({"ca_certificate": device.ca_pem}))).await;
    tls_failure(&s, &w, "plain", "handshake").await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no request reached the device");

    // A silent device after a good handshake is still a timeout (504).
    let (quiet, _) = https_device(&device, true).await;
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices",
            &w.admin,
            Some(
                json!({"name": "quiet", "endpoint": format!("https://{quiet}/"), "timeout_ms": 300,
                        "tls": {"ca_certificate": device.ca_pem}}),
            ),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_problem(relay(&s, &w, "quiet").await, 504, "gateway-timeout").await;
}

#[tokio::test]
async fn a_self_signed_certificate_is_its_own_ca_unless_marked_as_one_and_can_always_be_pinned() {
    let (s, w) = start(dns(&[])).await;
    for (marked, name) in [(false, "plain"), (true, "marked")] {
        let cert = self_signed(marked);
        let (addr, _) = https_device(&cert, false).await;
        let endpoint = format!("https://{addr}/");
        registered(
            &s,
            &w,
            &format!("{name}-ca"),
            &endpoint,
            Some(json!({"ca_certificate": cert.ca_pem})),
        )
        .await;
        let pin = json!({"certificate_sha256": fingerprint(&cert.leaf)});
        registered(&s, &w, &format!("{name}-pin"), &endpoint, Some(pin)).await;
        assert_eq!(relay(&s, &w, &format!("{name}-pin")).await.status(), 200, "{name}");
        let r = relay(&s, &w, &format!("{name}-ca")).await;
        if marked {
            // rustls-webpki refuses a CA certificate as the server's own;
            // the detail says what to do instead.
            let problem = assert_problem(r, 502, "bad-gateway").await;
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("TLS") && detail.contains("certificate_sha256"),
                "{detail}"
            );
        } else {
            assert_eq!(r.status(), 200);
        }
    }
}

#[tokio::test]
async fn a_pinned_certificate_its_ca_bundle_refuses_says_the_pin_held_and_what_failed() {
    let (s, w) = start(dns(&["other.test"])).await;
    // A self-signed certificate marked as a CA, given as its own CA and
    // pinned: the pin held, so "pin it" would be no advice at all.
    let marked = self_signed(true);
    let (addr, _) = https_device(&marked, false).await;
    let pin = fingerprint(&marked.leaf);
    registered(
        &s,
        &w,
        "marked-both",
        &format!("https://{addr}/"),
        Some(json!({"ca_certificate": marked.ca_pem, "certificate_sha256": pin})),
    )
    .await;
    // Another CA's bundle with the right pin; the right CA and pin under a
    // name the certificate does not carry.
    let device = pki(&["127.0.0.1"]);
    let stranger = pki(&["127.0.0.1"]);
    let (addr, _) = https_device(&device, false).await;
    let pin = fingerprint(&device.leaf);
    registered(
        &s,
        &w,
        "other-ca-pinned",
        &format!("https://{addr}/"),
        Some(json!({"ca_certificate": stranger.ca_pem, "certificate_sha256": pin})),
    )
    .await;
    registered(
        &s,
        &w,
        "wrong-name-pinned",
        &format!("https://other.test:{}/", addr.port()),
        Some(json!({"ca_certificate": device.ca_pem, "certificate_sha256": pin})),
    )
    .await;
    for (name, what) in [
        ("marked-both", "marked as a CA"),
        ("other-ca-pinned", "not signed by a CA in tls.ca_certificate"),
        ("wrong-name-pinned", "host name"),
    ] {
        let problem = assert_problem(relay(&s, &w, name).await, 502, "bad-gateway").await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("TLS"), "{name}: {detail}");
        assert!(detail.contains("is the one pinned"), "{name}: {detail}");
        assert!(detail.contains(what), "{name}: {detail}");
        assert!(
            !detail.contains("pin it") && !detail.contains("or pin the"),
            "{name}: {detail}"
        );
    }
}

#[tokio::test]
async fn a_ca_bundle_is_kept_and_shown_as_its_certificates_alone() {
    let (s, w) = start(dns(&[])).await;
    let first = pki(&["127.0.0.1"]);
    let device = pki(&["127.0.0.1"]);
    let (addr, _) = https_device(&device, false).await;
    // What bundles and openssl's output carry around the sections: titles,
    // `subject=` lines, a dump; CRLF line ends; longer base64 lines.
    let crlf = first.ca_pem.replace('\n', "\r\n");
    let long_lines = {
        let body: String = device.ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let (a, b) = body.split_at(76.min(body.len()));
        format!("-----BEGIN CERTIFICATE-----\n{a}\n{b}\n-----END CERTIFICATE-----")
    };
    let given = format!(
        "Appliance Test CA\n=================\n{crlf}\nsubject=CN = Appliance Test CA\n\
         issuer=CN = Appliance Test CA\n{long_lines}\nCertificate:\n    Data:\n        Version: 3 (0x2)\n"
    );
    let canonical = format!("{}{}", first.ca_pem, device.ca_pem);
    assert_ne!(given, canonical);
    let created = registered(
        &s,
        &w,
        "fw",
        &format!("https://{addr}/"),
        Some(json!({"ca_certificate": given})),
    )
    .await;
    assert_eq!(
        created["tls"]["ca_certificate"],
        canonical.as_str(),
        "what is trusted, only"
    );
    let path = "/v1/tenants/acme/devices/fw";
    let shown: Value = s.call(Method::GET, path, &w.viewer, None).await.json().await.unwrap();
    assert_eq!(shown["tls"]["ca_certificate"], canonical.as_str());
    assert_eq!(
        relay(&s, &w, "fw").await.status(),
        200,
        "the second certificate is trusted"
    );
    // PATCH keeps it the same way.
    let given = format!("# the site's CA\n{}trailing words\n", device.ca_pem);
    let r = s
        .call(
            Method::PATCH,
            path,
            &w.admin,
            Some(json!({"tls": {"ca_certificate": given}})),
        )
        .await;
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["tls"]["ca_certificate"], device.ca_pem.as_str());
    assert_eq!(relay(&s, &w, "fw").await.status(), 200);
}

#[tokio::test]
async fn a_changed_trust_setting_takes_effect_at_the_next_request() {
    let (s, w) = start(dns(&[])).await;
    let device = pki(&["127.0.0.1"]);
    let (addr, _) = https_device(&device, false).await;
    registered(&s, &w, "fw", &format!("https://{addr}/"), None).await;
    tls_failure(&s, &w, "fw", "not signed by a CA").await;
    let path = "/v1/tenants/acme/devices/fw";
    let patch = |tls: Value| s.call(Method::PATCH, path, &w.admin, Some(json!({ "tls": tls })));
    let r = patch(json!({"ca_certificate": device.ca_pem})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(relay(&s, &w, "fw").await.status(), 200);
    // `{}`: the system's roots again, and the connection made under the
    // device's CA is not reused.
    let r = patch(json!({})).await;
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["tls"], json!({}));
    tls_failure(&s, &w, "fw", "not signed by a CA").await;
}

#[tokio::test]
async fn an_https_name_is_checked_after_resolution_at_every_connect() {
    let names = dns(&["rebind.test"]);
    let (s, w) = start(names.clone()).await;
    let device = pki(&["rebind.test"]);
    let (addr, seen) = https_device(&device, false).await;
    let endpoint = format!("https://rebind.test:{}/", addr.port());
    registered(
        &s,
        &w,
        "rebind",
        &endpoint,
        Some(json!({"ca_certificate": device.ca_pem})),
    )
    .await;
    assert_eq!(relay(&s, &w, "rebind").await.status(), 200);
    // Re-pointed at the metadata address after registration: refused
    // before any connection, TLS or not.
    names.0.lock().unwrap()[0].1 = "169.254.169.254".parse().unwrap();
    let problem = assert_problem(relay(&s, &w, "rebind").await, 502, "bad-gateway").await;
    assert!(problem["detail"].as_str().unwrap().contains("169.254"), "{problem}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the refused request never left");
}

#[tokio::test]
async fn a_bad_trust_setting_is_400_at_its_field() {
    let (s, w) = start(dns(&[])).await;
    let device = pki(&["127.0.0.1"]);
    let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let cases = [
        (json!({"ca_certificate": "not a certificate"}), "/tls/ca_certificate"),
        (json!({"ca_certificate": junk}), "/tls/ca_certificate"),
        (
            json!({"ca_certificate": format!("{}{key}", device.ca_pem)}),
            "/tls/ca_certificate",
        ),
        (json!({"certificate_sha256": "abc"}), "/tls/certificate_sha256"),
        (
            json!({"certificate_sha256": "zz".repeat(32)}),
            "/tls/certificate_sha256",
        ),
        (
            json!({"certificate_sha256": format!(" {} ", "ab".repeat(32))}),
            "/tls/certificate_sha256",
        ),
        // `tls` is replaced whole: a member is left out, never null (a
        // null pin must not drop the CA with it and widen the trust).
        (json!({"certificate_sha256": null}), "/tls/certificate_sha256"),
        (
            json!({"ca_certificate": null, "certificate_sha256": "ab".repeat(32)}),
            "/tls/ca_certificate",
        ),
        // An object, not its fields by position.
        (json!([null, "ab".repeat(32)]), "/tls"),
        (json!([]), "/tls"),
    ];
    for (tls, pointer) in &cases {
        let r = register(&s, &w, "fw", "https://127.0.0.1:9/", Some(tls.clone())).await;
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(problem["errors"][0]["pointer"], *pointer, "{tls}");
        assert!(!problem.to_string().contains("MC4CAQAw"), "a key is never echoed");
    }
    let r = register(&s, &w, "fw", "https://127.0.0.1:9/", Some(json!({"fingerprint": "ab"}))).await;
    let problem = assert_problem(r, 400, "malformed-body").await;
    assert_eq!(problem["errors"][0]["pointer"], "/tls/fingerprint");
    registered(&s, &w, "fw", "https://127.0.0.1:9/", None).await;
    for (tls, pointer) in &cases {
        let r = s
            .call(
                Method::PATCH,
                "/v1/tenants/acme/devices/fw",
                &w.admin,
                Some(json!({ "tls": tls })),
            )
            .await;
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(problem["errors"][0]["pointer"], *pointer, "{tls}");
    }
}
