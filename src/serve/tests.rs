use super::*;

#[tokio::test]
async fn a_burst_of_connects_waits_in_the_backlog_without_a_dropped_syn() {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every connect must complete from the backlog. Past
    // a backlog of 128 the kernel drops SYNs and the client resends its
    // after a second, far past this limit.
    // The kernel caps the backlog at somaxconn (4096 by default).
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    let n = 600.min(cap.saturating_sub(8));
    let connects = (0..n).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(700),
            tokio::net::TcpStream::connect(addr),
        )
    });
    let results = futures_util::future::join_all(connects).await;
    let waited = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        waited, 0,
        "{waited} of 600 connects waited for a resent SYN"
    );
}
use axum::http::HeaderValue;

fn behind(proxies: &str) -> ConnectionConfig {
    ConnectionConfig {
        trusted_proxies: proxies.split(',').map(|p| p.parse().unwrap()).collect(),
        ..ConnectionConfig::default()
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The client of a request from `peer` behind proxies in 10.0.0.0/8.
fn client(peer: &str, headers: &HeaderMap) -> IpAddr {
    client_addr(ip(peer), headers, &behind("10.0.0.0/8"))
}

#[test]
fn forwarded_addresses_count_only_from_a_trusted_peer() {
    let forged = headers(&[("x-forwarded-for", "1.2.3.4")]);
    assert_eq!(client("192.0.2.7", &forged), ip("192.0.2.7"));
    assert_eq!(client("10.0.0.2", &forged), ip("1.2.3.4"));
}

#[test]
fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
    // The client forged 6.6.6.6; the edge proxy appended the real peer
    // 203.0.113.9, an inner proxy appended the edge 10.1.1.1.
    let chain = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
    assert_eq!(client("10.0.0.2", &chain), ip("203.0.113.9"));
    let forwarded = headers(&[(
        "forwarded",
        "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.1.1.1",
    )]);
    assert_eq!(client("10.0.0.2", &forwarded), ip("2001:db8::7"));
    let none = headers(&[]);
    assert_eq!(client("10.0.0.2", &none), ip("10.0.0.2"));
}

#[test]
fn the_cap_leaves_room_for_the_servers_own_descriptors() {
    assert_eq!(connection_cap(10_000, 1_048_576, 200), 10_000);
    assert_eq!(connection_cap(10_000, 1_024, 200), 824);
    assert_eq!(connection_cap(10_000, 100, 200), 1);
}

#[test]
fn the_gate_counts_per_client_and_in_all_and_gives_places_back() {
    let gate = Gate {
        census: Arc::new(Mutex::new(Census {
            total: 0,
            per_client: HashMap::new(),
        })),
        stats: Arc::new(ConnectionStats::default()),
        max_total: 3,
        max_per_client: 2,
    };
    let a = ip("192.0.2.1");
    let first = gate.admit(a, false).unwrap();
    let _second = gate.admit(a, false).unwrap();
    assert_eq!(gate.admit(a, false).err(), Some(Refusal::PerClient));
    let _proxy = gate.admit(ip("10.0.0.1"), true).unwrap();
    assert_eq!(
        gate.admit(ip("192.0.2.2"), false).err(),
        Some(Refusal::Total)
    );
    drop(first);
    assert!(gate.admit(a, false).is_ok(), "a place came back");
    assert!(gate.census.lock().per_client.len() <= 1);
}
