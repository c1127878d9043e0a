use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::parse;
use crate::config::{
    AdminConfig, BackendConfig, BackendProtocol, CircuitBreaker, Config, ConfigError, HashKey,
    HeaderEdits, HealthCheck, InitialHealth, Limits, ListenProtocol, LoadBalancing, LogLevel,
    OutlierDetection, PoolConfig, RetryPolicy, Route, RuntimeConfig, RuntimeKind, Timeouts,
    UpstreamTls, format_duration,
};

const ORIGINAL: &str = include_str!("../../../../config/original.yaml");
const SAMPLE: &str = include_str!("../../../../config/spooky.yaml");

const LISTEN: &str =
    "listen: { address: \"127.0.0.1\", port: 9889, tls: { cert: c.pem, key: k.pem } }\n";

/// A document with the standard listener and the given `backends:` entries (flow mappings).
fn with_backends(backends: &[&str]) -> String {
    let mut doc = String::from(LISTEN);
    doc.push_str("backends:\n");
    for b in backends {
        doc.push_str(&format!("  - {b}\n"));
    }
    doc
}

/// A document with one plain backend plus `extra` top-level YAML.
fn with_section(extra: &str) -> String {
    format!(
        "{}{extra}\n",
        with_backends(&["{ id: b0, address: \"127.0.0.1:8080\" }"])
    )
}

/// A document with one backend whose fields are `fields` (inside a flow mapping).
fn with_backend(fields: &str) -> String {
    with_backends(&[&format!(
        "{{ id: b0, address: \"127.0.0.1:8080\", {fields} }}"
    )])
}

fn ok(doc: &str) -> Config {
    match parse(doc) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got `{e}` for:\n{doc}"),
    }
}

fn err(doc: &str) -> ConfigError {
    match parse(doc) {
        Ok(config) => panic!("expected an error, got {config:?} for:\n{doc}"),
        Err(e) => e,
    }
}

/// Asserts the error's path and that its problem contains every fragment.
#[track_caller]
fn assert_err(doc: &str, path: &str, fragments: &[&str]) {
    let e = err(doc);
    assert_eq!(e.path, path, "wrong path in `{e}`");
    for fragment in fragments {
        assert!(
            e.problem.contains(fragment),
            "`{e}` does not contain `{fragment}`"
        );
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Valid documents
// ---------------------------------------------------------------------------------------------

#[test]
fn original_format_loads() {
    let config = ok(ORIGINAL);
    assert_eq!(config.listen.protocol, ListenProtocol::Http3);
    assert_eq!(config.listen.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(config.listen.port, 9889);
    assert_eq!(
        config.listen.socket_addr(),
        "127.0.0.1:9889".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.listen.tls.cert, PathBuf::from("certs/cert.pem"));
    assert_eq!(config.listen.tls.key, PathBuf::from("certs/key.pem"));
    assert_eq!(config.backends.len(), 1);
    let b = &config.backends[0];
    assert_eq!(b.id, "backend1");
    assert_eq!(b.address, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(b.weight, 100);
    assert_eq!(b.protocol, BackendProtocol::Http1);
    assert_eq!(b.tls, UpstreamTls::default());
    assert_eq!(
        b.health_check,
        Some(HealthCheck {
            path: "/health".to_string(),
            interval: ms(5_000),
            timeout: ms(2_000),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: (200, 399),
            initial: InitialHealth::Healthy,
        })
    );
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert_eq!(config.circuit_breaker, CircuitBreaker::default());
    assert_eq!(config.outlier_detection, OutlierDetection::default());
    assert_eq!(config.retries, RetryPolicy::default());
}

#[test]
fn original_format_inline_is_identical() {
    // The format as documented before this parser existed, verbatim.
    let doc = r#"listen: { protocol: http3, address: "127.0.0.1", port: 9889, tls: { cert: certs/cert.pem, key: certs/key.pem } }
backends:
  - { id: backend1, address: "127.0.0.1:8080", weight: 100, health_check: { path: /health, interval: 5s } }
load_balancing: { type: round-robin }   # random, round-robin, weight-based (later: least_connection, ip-hash, ...)
log: { level: info }
"#;
    assert_eq!(ok(doc), ok(ORIGINAL));
}

#[test]
fn annotated_sample_loads() {
    let config = ok(SAMPLE);
    assert_eq!(config.listen.socket_addr().to_string(), "127.0.0.1:9889");
    assert_eq!(config.listen.tls.cert, PathBuf::from("certs/cert.pem"));
    assert_eq!(config.listen.tls.key, PathBuf::from("certs/key.pem"));
    assert_eq!(config.backends.len(), 3);
    let protocols: Vec<_> = config.backends.iter().map(|b| b.protocol).collect();
    assert_eq!(
        protocols,
        [
            BackendProtocol::Http1,
            BackendProtocol::Http1,
            BackendProtocol::Http3
        ]
    );
    let h3 = &config.backends[2];
    assert!(h3.tls.insecure_skip_verify);
    assert_eq!(h3.address.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(config.limits.max_request_body, Some(10 * 1024 * 1024));
    assert_eq!(config.limits.max_header_size, 64 * 1024);
    let hc = config.backends[0].health_check.as_ref().unwrap();
    assert_eq!(hc.initial, InitialHealth::Healthy);
    assert_eq!(
        config.backends[2].health_check.as_ref().unwrap().initial,
        InitialHealth::Unknown
    );
    // The sample documents the defaults: apart from the explicit choices it matches them.
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.runtime.kind, RuntimeKind::Mio);
    assert_eq!(config.runtime.shards, Some(4));
    assert_eq!(config.circuit_breaker, CircuitBreaker::default());
    assert_eq!(config.outlier_detection, OutlierDetection::default());
    assert_eq!(config.retries, RetryPolicy::default());
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            address: "127.0.0.1:9901".parse().unwrap(),
        })
    );

    // One named pool and three routes to it, the first with every key.
    let [api] = &config.pools[..] else {
        panic!("one pool expected: {:?}", config.pools)
    };
    assert_eq!(api.name, "api");
    assert_eq!(api.load_balancing, LoadBalancing::LeastRequests);
    let ids: Vec<&str> = config.all_backends().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["backend1", "backend2", "backend3", "api1", "api2"]);
    assert_eq!(api.backends[1].weight, 2);
    assert_eq!(config.routes.len(), 3);
    assert!(config.routes.iter().all(|r| r.pool == "api"));
    assert_eq!(
        config.routes[0],
        Route {
            host: Some("api.example.com".into()),
            path_prefix: Some("/v2/".into()),
            headers: Vec::new(),
            pool: "api".into(),
            strip_prefix: Some("/v2".into()),
            request_headers: HeaderEdits {
                set: vec![("x-api-version".into(), "2".into())],
                remove: vec!["x-debug".into()],
            },
            response_headers: HeaderEdits {
                set: vec![("x-served-by".into(), "api-v2".into())],
                remove: vec!["server".into()],
            },
        }
    );
    assert_eq!(
        config.routes[1].headers,
        [("x-canary".to_string(), "1".to_string())]
    );
    assert_eq!(config.routes[2].host.as_deref(), Some("*.api.example.com"));
}

#[test]
fn annotated_sample_mentions_every_key() {
    // Every key of every section appears in the sample, at least as a commented-out line.
    for key in super::TOP_KEYS
        .iter()
        .chain(super::LISTEN_KEYS)
        .chain(super::LISTEN_TLS_KEYS)
        .chain(super::BACKEND_KEYS)
        .chain(super::BACKEND_TLS_KEYS)
        .chain(super::HEALTH_CHECK_KEYS)
        .chain(super::LOAD_BALANCING_KEYS)
        .chain(super::CIRCUIT_BREAKER_KEYS)
        .chain(super::OUTLIER_KEYS)
        .chain(super::RETRY_KEYS)
        .chain(super::LOG_KEYS)
        .chain(super::TIMEOUT_KEYS)
        .chain(super::LIMIT_KEYS)
        .chain(super::RUNTIME_KEYS)
        .chain(super::ADMIN_KEYS)
        .chain(super::POOL_KEYS)
        .chain(super::ROUTE_KEYS)
        .chain(super::MATCH_KEYS)
        .chain(super::EDIT_KEYS)
    {
        let written = SAMPLE.lines().any(|line| {
            let line = line.trim_start().trim_start_matches(['#', '-', ' ']);
            line.starts_with(&format!("{key}:"))
        });
        assert!(written, "config/spooky.yaml does not mention `{key}`");
    }
}

#[test]
fn full_example_with_every_key() {
    let doc = r#"
listen:
  protocol: http3
  address: "::"
  port: 443
  tls:
    cert: /etc/spooky/cert.pem
    key: /etc/spooky/key.pem
backends:
  - id: api-1
    address: "10.0.0.1:8080"
    weight: 3
    protocol: http/1.1
    health_check:
      path: /healthz?full=1
      interval: 1.5s
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 5
      expected_status: "200-299"
      initial: unknown
  - id: api_2.v6
    address: "[2001:db8::2]:8443"
    weight: 65535
    protocol: h3
    tls:
      ca: /etc/spooky/backend-ca.pem
      insecure_skip_verify: false
      server_name: api.internal
    health_check:
      path: /
      interval: 1m
      expected_status: 204
  - id: dev
    address: "[::1]:4433"
    protocol: http3
    tls: { insecure_skip_verify: true }
load_balancing:
  type: consistent-hash
  key: "header:X-Session"
log:
  level: debug
timeouts:
  connect: 2s
  response_headers: 10s
  request: 2h
  upstream_idle: 90s
  client_idle: 1m
  drain: 250ms
limits:
  max_concurrent_streams: 250
  max_header_size: 16KiB
  max_request_body: 1GiB
  max_connections: 5000
runtime:
  kind: mio
  shards: 8
circuit_breaker:
  max_connections: 32
  max_pending_requests: 0
  max_requests: 500
outlier_detection:
  enabled: false
  consecutive_5xx: 0
  consecutive_failures: 3
  base_ejection_time: 10s
  max_ejection_time: 10s
  max_ejection_percent: 100
retries:
  max_retries: 10
  retry_on: [reset, 502, 503, 504]
  per_try_timeout: 750ms
  budget_percent: 0
  min_retries_in_flight: 0
"#;
    let config = ok(doc);
    assert_eq!(config.listen.address, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    assert_eq!(config.listen.port, 443);
    assert_eq!(
        config.listen.tls.cert,
        PathBuf::from("/etc/spooky/cert.pem")
    );

    let [a, b, c] = &config.backends[..] else {
        panic!("three backends expected: {:?}", config.backends)
    };
    assert_eq!(a.id, "api-1");
    assert_eq!(a.weight, 3);
    assert_eq!(a.protocol, BackendProtocol::Http1);
    assert_eq!(
        a.health_check,
        Some(HealthCheck {
            path: "/healthz?full=1".to_string(),
            interval: ms(1_500),
            timeout: ms(500),
            healthy_threshold: 1,
            unhealthy_threshold: 5,
            expected_status: (200, 299),
            initial: InitialHealth::Unknown,
        })
    );

    assert_eq!(b.id, "api_2.v6");
    assert_eq!(
        b.address,
        "[2001:db8::2]:8443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(b.weight, 65535);
    assert_eq!(b.protocol, BackendProtocol::Http3);
    assert_eq!(
        b.tls,
        UpstreamTls {
            ca: Some(PathBuf::from("/etc/spooky/backend-ca.pem")),
            insecure_skip_verify: false,
            server_name: Some("api.internal".to_string()),
        }
    );
    let hc = b.health_check.as_ref().unwrap();
    assert_eq!(hc.interval, ms(60_000));
    assert_eq!(hc.timeout, ms(2_000));
    assert_eq!(hc.expected_status, (204, 204));
    assert_eq!(hc.initial, InitialHealth::Healthy);

    assert_eq!(c.weight, 1);
    assert_eq!(c.tls.ca, None);
    assert!(c.tls.insecure_skip_verify);
    assert_eq!(c.health_check, None);

    assert_eq!(
        config.load_balancing,
        LoadBalancing::ConsistentHash(HashKey::Header("x-session".to_string()))
    );
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(
        config.timeouts,
        Timeouts {
            connect: ms(2_000),
            response_headers: ms(10_000),
            request: ms(7_200_000),
            upstream_idle: ms(90_000),
            client_idle: ms(60_000),
            drain: ms(250),
        }
    );
    assert_eq!(
        config.limits,
        Limits {
            max_concurrent_streams: 250,
            max_header_size: 16 * 1024,
            max_request_body: Some(1024 * 1024 * 1024),
            max_connections: 5000,
        }
    );
    assert_eq!(
        config.runtime,
        RuntimeConfig {
            kind: RuntimeKind::Mio,
            shards: Some(8),
        }
    );
    assert_eq!(
        config.circuit_breaker,
        CircuitBreaker {
            max_connections: 32,
            max_pending_requests: 0,
            max_requests: 500,
        }
    );
    assert_eq!(
        config.outlier_detection,
        OutlierDetection {
            enabled: false,
            consecutive_5xx: 0,
            consecutive_failures: 3,
            base_ejection_time: ms(10_000),
            max_ejection_time: ms(10_000),
            max_ejection_percent: 100,
        }
    );
    assert_eq!(
        config.retries,
        RetryPolicy {
            max_retries: 10,
            on_connect_failure: false,
            on_reset: true,
            on_statuses: vec![502, 503, 504],
            per_try_timeout: Some(ms(750)),
            budget_percent: 0,
            min_retries_in_flight: 0,
        }
    );
}

#[test]
fn minimal_document_takes_every_default() {
    let config = ok(&with_backends(&["{ id: b0, address: \"127.0.0.1:8080\" }"]));
    assert_eq!(config.listen.protocol, ListenProtocol::Http3);
    let b = &config.backends[0];
    assert_eq!((b.weight, b.protocol), (1, BackendProtocol::Http1));
    assert_eq!(b.health_check, None);
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert_eq!(config.circuit_breaker, CircuitBreaker::default());
    assert_eq!(config.outlier_detection, OutlierDetection::default());
    assert_eq!(config.retries, RetryPolicy::default());
}

#[test]
fn empty_values_count_as_absent_for_optional_keys() {
    let doc = with_section(
        "timeouts:\nlimits: ~\nruntime: null\nlog: {}\nload_balancing: {}\n\
         circuit_breaker:\noutlier_detection: ~\nretries: {}",
    );
    let config = ok(&doc);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.circuit_breaker, CircuitBreaker::default());
    assert_eq!(config.outlier_detection, OutlierDetection::default());
    assert_eq!(config.retries, RetryPolicy::default());
    assert_eq!(ok(&with_backend("weight: ~")).backends[0].weight, 1);

    // Empty keys inside the new sections take their defaults too.
    let doc = with_section(
        "load_balancing: { type: ~, key: ~ }\n\
         circuit_breaker: { max_connections: ~, max_pending_requests: null }\n\
         outlier_detection: { enabled: ~, max_ejection_time: ~ }\n\
         retries: { retry_on: ~, per_try_timeout: ~ }",
    );
    let config = ok(&doc);
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.circuit_breaker, CircuitBreaker::default());
    assert_eq!(config.outlier_detection, OutlierDetection::default());
    assert_eq!(config.retries, RetryPolicy::default());
    let config = ok(&hc("initial: ~"));
    assert_eq!(
        config.backends[0].health_check.as_ref().unwrap().initial,
        InitialHealth::Healthy
    );
}

#[test]
fn aliases_are_accepted() {
    for name in ["http1", "http/1.1", "h1"] {
        let config = ok(&with_backend(&format!("protocol: {name}")));
        assert_eq!(
            config.backends[0].protocol,
            BackendProtocol::Http1,
            "{name}"
        );
    }
    for name in ["http3", "http/3", "h3"] {
        let config = ok(&with_backend(&format!(
            "protocol: {name}, tls: {{ ca: ca.pem }}"
        )));
        assert_eq!(
            config.backends[0].protocol,
            BackendProtocol::Http3,
            "{name}"
        );
    }
    for (name, level) in [
        ("trace", LogLevel::Trace),
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        let config = ok(&with_section(&format!("log: {{ level: {name} }}")));
        assert_eq!(config.log.level, level);
        assert_eq!(level.as_str(), name);
    }
}

#[test]
fn ipv6_addresses() {
    let doc = r#"
listen: { address: "::1", port: 9889, tls: { cert: c.pem, key: k.pem } }
backends:
  - { id: a, address: "[::1]:8080" }
  - { id: b, address: "[fe80::1]:80" }
  - { id: c, address: "[2001:db8::1:2]:65535" }
"#;
    let config = ok(doc);
    assert_eq!(config.listen.address, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(config.listen.socket_addr().to_string(), "[::1]:9889");
    let addrs: Vec<String> = config
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    assert_eq!(
        addrs,
        ["[::1]:8080", "[fe80::1]:80", "[2001:db8::1:2]:65535"]
    );

    // Brackets around a listen address are tolerated.
    let doc = LISTEN.replace("\"127.0.0.1\"", "\"[::]\"");
    let config = ok(&format!(
        "{doc}backends: [{{ id: a, address: \"127.0.0.1:1\" }}]"
    ));
    assert_eq!(config.listen.address, IpAddr::V6(Ipv6Addr::UNSPECIFIED));

    // A bare IPv6 address without brackets and port is not a socket address.
    assert_err(
        &with_backends(&["{ id: a, address: \"::1:8080\" }"]),
        "backends[0].address",
        &["\"::1:8080\" is not a socket address", "need brackets"],
    );
    assert_err(
        &with_backends(&["{ id: a, address: \"[::1]\" }"]),
        "backends[0].address",
        &["\"[::1]\" is not a socket address"],
    );
}

#[test]
fn sizes_and_unlimited_body() {
    let config = ok(&with_section(
        "limits: { max_header_size: 1024, max_request_body: 512KiB }",
    ));
    assert_eq!(config.limits.max_header_size, 1024);
    assert_eq!(config.limits.max_request_body, Some(512 * 1024));
    let config = ok(&with_section(
        "limits: { max_header_size: 1MiB, max_request_body: unlimited }",
    ));
    assert_eq!(config.limits.max_header_size, 1024 * 1024);
    assert_eq!(config.limits.max_request_body, None);
    let config = ok(&with_section("limits: { max_request_body: 0 }"));
    assert_eq!(config.limits.max_request_body, Some(0));
}

#[test]
fn health_check_timeout_defaults_to_at_most_the_interval() {
    let config = ok(&with_backend("health_check: { path: /h, interval: 1s }"));
    assert_eq!(
        config.backends[0].health_check.as_ref().unwrap().timeout,
        ms(1_000)
    );
    let config = ok(&with_backend(
        "health_check: { path: /h, interval: 2s, timeout: 2s }",
    ));
    assert_eq!(
        config.backends[0].health_check.as_ref().unwrap().timeout,
        ms(2_000)
    );
}

// ---------------------------------------------------------------------------------------------
// The error examples from the specification, verbatim
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_weight() {
    let e = err(&with_backend("weight: 0"));
    assert_eq!(
        e.to_string(),
        "backends[0].weight: 0 is not allowed: weight must be an integer from 1 to 65535"
    );
    assert_err(
        &with_backend("weight: 65536"),
        "backends[0].weight",
        &["65536 is not allowed: weight must be an integer from 1 to 65535"],
    );
    assert_err(
        &with_backend("weight: -1"),
        "backends[0].weight",
        &["-1 is not allowed"],
    );
    assert_err(
        &with_backend("weight: 1.5"),
        "backends[0].weight",
        &["expected an integer from 1 to 65535, found the number 1.5"],
    );
}

/// Every strategy, in the order of the error message.
const STRATEGY_LIST: &str = "round-robin, weight-based, random, least-requests (alias \
     least_connection), p2c, consistent-hash, ip-hash, latency";

#[test]
fn misspelled_strategy() {
    let e = err(&with_section("load_balancing: { type: round_robinn }"));
    assert_eq!(
        e.to_string(),
        format!(
            "load_balancing.type: \"round_robinn\" is not a strategy; use one of: {STRATEGY_LIST}"
        )
    );
}

#[test]
fn unknown_key_in_listen() {
    let doc = "listen: { prot: http3, address: \"127.0.0.1\", port: 9889, tls: { cert: c, key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]\n";
    assert_eq!(
        err(doc).to_string(),
        "listen: unknown key \"prot\"; allowed keys: protocol, address, port, tls"
    );
}

#[test]
fn address_without_port() {
    let doc = with_backends(&[
        "{ id: a, address: \"127.0.0.1:8080\" }",
        "{ id: b, address: \"127.0.0.1:8081\" }",
        "{ id: c, address: \"127.0.0.1\" }",
    ]);
    assert_eq!(
        err(&doc).to_string(),
        "backends[2].address: \"127.0.0.1\" is not a socket address; expected host:port such as \
         127.0.0.1:8080 or [::1]:8080"
    );
}

#[test]
fn duplicate_backend_ids() {
    let doc = with_backends(&[
        "{ id: b1, address: \"127.0.0.1:8080\" }",
        "{ id: b1, address: \"127.0.0.1:8081\" }",
    ]);
    assert_eq!(
        err(&doc).to_string(),
        "backends[1].id: \"b1\" is used twice (also backends[0].id); backend ids must be unique"
    );
    let doc = with_backends(&[
        "{ id: x, address: \"127.0.0.1:8080\" }",
        "{ id: y, address: \"127.0.0.1:8081\" }",
        "{ id: x, address: \"127.0.0.1:8082\" }",
    ]);
    assert_err(&doc, "backends[2].id", &["(also backends[0].id)"]);
}

#[test]
fn yaml_syntax_error() {
    let e = err("listen: { address: \"127.0.0.1\"\nbackends: [\n");
    assert_eq!(e.path, "");
    assert!(e.problem.starts_with("invalid YAML: "), "{e}");
    assert!(e.problem.contains(" at line "), "{e}");
    assert!(e.problem.contains(", column "), "{e}");

    let e = err("listen:\n  port: 1\n   address: x\n");
    assert_eq!(e.path, "");
    assert!(e.problem.contains("line 3"), "{e}");

    let e = err("listen: {}\nbackends: []\nlisten: {}\n");
    assert_eq!(e.path, "");
    assert!(e.problem.contains("key \"listen\" appears twice"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Document-level errors
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_and_non_mapping_documents() {
    for doc in ["", "   \n# only a comment\n", "---\n", "~"] {
        assert_err(doc, "", &["the configuration is empty"]);
    }
    assert_err(
        "- listen\n- backends\n",
        "",
        &[
            "expected a configuration (a mapping with the keys listen, backends",
            "found a list",
        ],
    );
    assert_err("just text", "", &["found the string \"just text\""]);
    assert_err(
        &format!("{}---\n{}", with_section(""), with_section("")),
        "",
        &["found 2 YAML documents"],
    );
}

#[test]
fn unknown_keys_everywhere() {
    let allowed_top = "allowed keys: listen, backends, load_balancing, log, timeouts, limits, \
         runtime, circuit_breaker, outlier_detection, retries";
    assert_err(
        &with_section("logs: { level: info }"),
        "",
        &["unknown key \"logs\"", allowed_top],
    );
    assert_err(
        &with_backend("wieght: 2"),
        "backends[0]",
        &["unknown key \"wieght\"; allowed keys: id, address, weight, protocol, tls, health_check"],
    );
    assert_err(
        &with_backend("protocol: h3, tls: { ca: x, verify: true }"),
        "backends[0].tls",
        &["unknown key \"verify\"; allowed keys: ca, insecure_skip_verify, server_name"],
    );
    assert_err(
        &with_backend("health_check: { path: /, interval: 1s, retries: 3 }"),
        "backends[0].health_check",
        &[
            "unknown key \"retries\"; allowed keys: path, interval, timeout, healthy_threshold, \
             unhealthy_threshold, expected_status, initial",
        ],
    );
    assert_err(
        "listen: { address: \"::\", port: 1, tls: { cert: c, key: k, ca: x } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.tls",
        &["unknown key \"ca\"; allowed keys: cert, key"],
    );
    assert_err(
        &with_section("load_balancing: { kind: random }"),
        "load_balancing",
        &["unknown key \"kind\"; allowed keys: type, key"],
    );
    assert_err(
        &with_section("load_balancing: { type: consistent-hash, hash_key: path }"),
        "load_balancing",
        &["unknown key \"hash_key\"; allowed keys: type, key"],
    );
    assert_eq!(
        err(&with_section("circuit_breaker: { max_connection: 5 }")).to_string(),
        "circuit_breaker: unknown key \"max_connection\"; allowed keys: max_connections, \
         max_pending_requests, max_requests"
    );
    assert_eq!(
        err(&with_section("outlier_detection: { interval: 10s }")).to_string(),
        "outlier_detection: unknown key \"interval\"; allowed keys: enabled, consecutive_5xx, \
         consecutive_failures, base_ejection_time, max_ejection_time, max_ejection_percent"
    );
    assert_eq!(
        err(&with_section("retries: { attempts: 3 }")).to_string(),
        "retries: unknown key \"attempts\"; allowed keys: max_retries, retry_on, \
         per_try_timeout, budget_percent, min_retries_in_flight"
    );
    // The new sections belong at the top level, not inside a backend.
    assert_err(
        &with_backend("retries: { max_retries: 1 }"),
        "backends[0]",
        &["unknown key \"retries\""],
    );
    assert_err(
        &with_section("log: { format: json }"),
        "log",
        &["unknown key \"format\""],
    );
    assert_err(
        &with_section("timeouts: { idle: 5s }"),
        "timeouts",
        &["unknown key \"idle\""],
    );
    assert_err(
        &with_section("limits: { max_body: 5 }"),
        "limits",
        &["unknown key \"max_body\""],
    );
    assert_err(
        &with_section("runtime: { threads: 5 }"),
        "runtime",
        &["unknown key \"threads\""],
    );
    assert_err(
        &with_section("1: x"),
        "",
        &["keys must be names, found the integer 1"],
    );
}

#[test]
fn missing_required_keys() {
    assert_err(
        "backends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen",
        &["is required"],
    );
    assert_err(
        LISTEN,
        "backends",
        &["is required; expected a list of backends"],
    );
    assert_err(
        "listen: { address: \"127.0.0.1\", tls: { cert: c, key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.port",
        &["is required; expected an integer from 1 to 65535"],
    );
    assert_err(
        "listen: { port: 1, tls: { cert: c, key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.address",
        &["is required"],
    );
    assert_err(
        "listen: { address: \"127.0.0.1\", port: 1 }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.tls",
        &["is required"],
    );
    assert_err(
        "listen: { address: \"127.0.0.1\", port: 1, tls: { key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.tls.cert",
        &["is required"],
    );
    assert_err(
        "listen: { address: \"127.0.0.1\", port: 1, tls: { cert: c, key: } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.tls.key",
        &["has no value"],
    );
    assert_err(
        &with_backends(&["{ address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &["is required"],
    );
    assert_err(
        &with_backends(&["{ id: a }"]),
        "backends[0].address",
        &["is required"],
    );
    assert_err(
        &with_backend("health_check: { interval: 5s }"),
        "backends[0].health_check.path",
        &["is required"],
    );
    assert_err(
        &with_backend("health_check: { path: /health }"),
        "backends[0].health_check.interval",
        &["is required; expected a duration"],
    );
}

#[test]
fn wrong_types() {
    assert_err(
        "listen: { address: \"127.0.0.1\", port: \"9889\", tls: { cert: c, key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.port",
        &[
            "expected an integer from 1 to 65535, found the string \"9889\"",
            "without quotes",
        ],
    );
    assert_err(
        "listen: { address: \"127.0.0.1\", port: http, tls: { cert: c, key: k } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.port",
        &["expected an integer from 1 to 65535, found the string \"http\""],
    );
    assert_err(
        "listen: [127.0.0.1]\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen",
        &[
            "expected the listener (a mapping with the keys protocol, address, port, tls), found a list",
        ],
    );
    assert_err(
        &format!("{LISTEN}backends: {{ id: a }}"),
        "backends",
        &["expected a list of backends, found a mapping"],
    );
    assert_err(
        &format!("{LISTEN}backends: [b1]"),
        "backends[0]",
        &["expected a backend", "found the string \"b1\""],
    );
    assert_err(
        &with_backends(&["{ id: 7, address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &["found the integer 7; put it in quotes"],
    );
    assert_err(
        &with_backends(&["{ id: a, address: 8080 }"]),
        "backends[0].address",
        &["expected an address such as 127.0.0.1:8080, found the integer 8080"],
    );
    assert_err(
        &with_backend("protocol: h3, tls: { insecure_skip_verify: yes }"),
        "backends[0].tls.insecure_skip_verify",
        &["expected true or false, found the string \"yes\""],
    );
    assert_err(
        &with_backend("protocol: h3, tls: { insecure_skip_verify: 1 }"),
        "backends[0].tls.insecure_skip_verify",
        &["expected true or false, found the integer 1"],
    );
    assert_err(
        &with_section("log: { level: [info] }"),
        "log.level",
        &["expected a log level: trace, debug, info, warn, error, found a list"],
    );
    assert_err(
        &with_section("load_balancing: round-robin"),
        "load_balancing",
        &[
            "expected the balancing settings (a mapping with the keys type, key), found the string \"round-robin\"",
        ],
    );
    assert_err(
        &with_section("circuit_breaker: 100"),
        "circuit_breaker",
        &[
            "expected the circuit breaker (a mapping with the keys max_connections, \
             max_pending_requests, max_requests), found the integer 100",
        ],
    );
    assert_err(
        &with_section("outlier_detection: false"),
        "outlier_detection",
        &[
            "expected outlier detection (a mapping with the keys enabled, consecutive_5xx, \
             consecutive_failures, base_ejection_time, max_ejection_time, \
             max_ejection_percent), found the boolean false",
        ],
    );
    assert_err(
        &with_section("retries: 3"),
        "retries",
        &[
            "expected the retry policy (a mapping with the keys max_retries, retry_on, \
             per_try_timeout, budget_percent, min_retries_in_flight), found the integer 3",
        ],
    );
    assert_err(
        &with_section("runtime: { shards: four }"),
        "runtime.shards",
        &["expected an integer from 1 to 1024, found the string \"four\""],
    );
    assert_err(
        &with_backend("health_check: { path: 5, interval: 5s }"),
        "backends[0].health_check.path",
        &["expected a URL path such as /health, found the integer 5"],
    );
}

// ---------------------------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------------------------

fn listen_doc(listen: &str) -> String {
    format!("listen: {listen}\nbackends: [{{ id: a, address: \"127.0.0.1:80\" }}]\n")
}

#[test]
fn port_out_of_range() {
    assert_eq!(
        err(&listen_doc(
            "{ address: \"127.0.0.1\", port: 0, tls: { cert: c, key: k } }"
        ))
        .to_string(),
        "listen.port: 0 is not allowed: port must be an integer from 1 to 65535"
    );
    assert_err(
        &listen_doc("{ address: \"127.0.0.1\", port: 70000, tls: { cert: c, key: k } }"),
        "listen.port",
        &["70000 is not allowed: port must be an integer from 1 to 65535"],
    );
    assert_err(
        &listen_doc(
            "{ address: \"127.0.0.1\", port: 99999999999999999999, tls: { cert: c, key: k } }",
        ),
        "listen.port",
        &["expected an integer from 1 to 65535, found the number 99999999999999999999"],
    );
    assert_err(
        &with_backends(&["{ id: a, address: \"127.0.0.1:0\" }"]),
        "backends[0].address",
        &["has port 0"],
    );
    assert_err(
        &with_backends(&["{ id: a, address: \"127.0.0.1:70000\" }"]),
        "backends[0].address",
        &["\"127.0.0.1:70000\" is not a socket address"],
    );
}

#[test]
fn listen_address_and_protocol_errors() {
    assert_err(
        &listen_doc("{ address: localhost, port: 1, tls: { cert: c, key: k } }"),
        "listen.address",
        &[
            "\"localhost\" is not an IP address",
            "hostnames are not resolved",
        ],
    );
    assert_err(
        &listen_doc("{ address: \"127.0.0.1:9889\", port: 1, tls: { cert: c, key: k } }"),
        "listen.address",
        &["includes a port", "listen.port"],
    );
    assert_err(
        &listen_doc("{ protocol: http1, address: \"::\", port: 1, tls: { cert: c, key: k } }"),
        "listen.protocol",
        &["\"http1\" is not supported for clients", "http3"],
    );
    assert_err(
        &listen_doc("{ protocol: quic, address: \"::\", port: 1, tls: { cert: c, key: k } }"),
        "listen.protocol",
        &["\"quic\" is not a listen protocol; use: http3"],
    );
    assert_err(
        &listen_doc("{ address: \"::\", port: 1, tls: { cert: \"\", key: k } }"),
        "listen.tls.cert",
        &["\"\" is not allowed: cert must be a non-empty file path"],
    );
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_backends_list() {
    assert_eq!(
        err(&format!("{LISTEN}backends: []")).to_string(),
        "backends: the list is empty; at least one backend is required"
    );
    assert_err(&format!("{LISTEN}backends:"), "backends", &["has no value"]);
}

#[test]
fn bad_backend_ids() {
    assert_err(
        &with_backends(&["{ id: \"web 1\", address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &[
            "\"web 1\" contains ' '",
            "letters, digits, '_', '.' and '-'",
        ],
    );
    assert_err(
        &with_backends(&["{ id: \"a/b\", address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &["\"a/b\" contains '/'"],
    );
    assert_err(
        &with_backends(&["{ id: \"bäck\", address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &["contains 'ä'"],
    );
    assert_err(
        &with_backends(&["{ id: \"\", address: \"127.0.0.1:80\" }"]),
        "backends[0].id",
        &["must not be empty"],
    );
}

#[test]
fn backend_hostnames_are_rejected() {
    assert_err(
        &with_backends(&["{ id: a, address: \"localhost:8080\" }"]),
        "backends[0].address",
        &[
            "\"localhost:8080\" names a host",
            "hostnames are not resolved by the core",
            "use an IP address such as 127.0.0.1:8080",
        ],
    );
    assert_err(
        &with_backends(&["{ id: a, address: \"http://10.0.0.1:80\" }"]),
        "backends[0].address",
        &["is not a socket address; expected host:port"],
    );
}

#[test]
fn backend_protocol_errors() {
    assert_err(
        &with_backend("protocol: http2"),
        "backends[0].protocol",
        &["\"http2\" is not a backend protocol; use one of: http1"],
    );
}

#[test]
fn http3_backend_needs_verification() {
    assert_err(
        &with_backend("protocol: http3"),
        "backends[0].tls",
        &[
            "is required for an http3 backend",
            "tls.ca",
            "tls.insecure_skip_verify: true",
        ],
    );
    assert_err(
        &with_backend("protocol: http3, tls: { server_name: x.internal }"),
        "backends[0].tls.ca",
        &[
            "is required for an http3 backend",
            "verifies the backend's certificate",
        ],
    );
    assert_err(
        &with_backend("protocol: http3, tls: { insecure_skip_verify: false }"),
        "backends[0].tls.ca",
        &["is required for an http3 backend when insecure_skip_verify is false"],
    );
    assert_err(
        &with_backend("protocol: http3, tls: { ca: ca.pem, insecure_skip_verify: true }"),
        "backends[0].tls.insecure_skip_verify",
        &["conflicts with ca"],
    );
    assert_err(
        &with_backend("protocol: http3, tls: { ca: ca.pem, server_name: \"bad name!\" }"),
        "backends[0].tls.server_name",
        &["\"bad name!\" is not a valid server name"],
    );
    let config = ok(&with_backend(
        "protocol: http3, tls: { ca: ca.pem, server_name: \"10.0.0.1\" }",
    ));
    assert_eq!(
        config.backends[0].tls.server_name.as_deref(),
        Some("10.0.0.1")
    );
}

#[test]
fn tls_on_http1_backend() {
    assert_err(
        &with_backend("tls: { ca: ca.pem }"),
        "backends[0].tls",
        &["TLS to HTTP/1.1 backends is not supported yet"],
    );
    assert_err(
        &with_backend("protocol: http1, tls: { insecure_skip_verify: true }"),
        "backends[0].tls",
        &["TLS to HTTP/1.1 backends is not supported yet"],
    );
}

// ---------------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------------

fn hc(fields: &str) -> String {
    with_backend(&format!(
        "health_check: {{ path: /health, interval: 5s, {fields} }}"
    ))
}

#[test]
fn bad_durations() {
    assert_eq!(
        err(&with_backend("health_check: { path: /h, interval: 5 }")).to_string(),
        "backends[0].health_check.interval: 5 is not a duration: durations need a unit: ms, s, \
         m or h (for example 5s)"
    );
    assert_err(
        &with_backend("health_check: { path: /h, interval: \"5\" }"),
        "backends[0].health_check.interval",
        &["\"5\" is not a duration: durations need a unit: ms, s, m or h"],
    );
    assert_err(
        &with_backend("health_check: { path: /h, interval: 5sec }"),
        "backends[0].health_check.interval",
        &["\"5sec\" is not a duration", "unknown unit \"sec\""],
    );
    assert_err(
        &with_backend("health_check: { path: /h, interval: 0s }"),
        "backends[0].health_check.interval",
        &["\"0s\" is not allowed: interval must be longer than zero"],
    );
    assert_err(
        &hc("timeout: 0ms"),
        "backends[0].health_check.timeout",
        &["longer than zero"],
    );
    assert_err(
        &with_section("timeouts: { connect: 0s }"),
        "timeouts.connect",
        &["\"0s\" is not allowed: connect must be longer than zero"],
    );
    assert_err(
        &with_section("timeouts: { drain: 30 }"),
        "timeouts.drain",
        &["30 is not a duration: durations need a unit: ms, s, m or h"],
    );
    assert_err(
        &with_section("timeouts: { request: -1s }"),
        "timeouts.request",
        &["negative"],
    );
    assert_err(
        &with_section("timeouts: { request: true }"),
        "timeouts.request",
        &["expected a duration such as 250ms, 5s, 1m or 2h, found the boolean true"],
    );
}

#[test]
fn timeout_longer_than_interval() {
    assert_eq!(
        err(&hc("timeout: 10s")).to_string(),
        "backends[0].health_check.timeout: \"10s\" is not allowed: the timeout must not be \
         longer than interval (5s)"
    );
}

#[test]
fn health_check_path_and_thresholds() {
    assert_err(
        &with_backend("health_check: { path: health, interval: 5s }"),
        "backends[0].health_check.path",
        &["\"health\" is not allowed: the health check path must start with /"],
    );
    assert_err(
        &with_backend("health_check: { path: \"/a b\", interval: 5s }"),
        "backends[0].health_check.path",
        &["contains ' '"],
    );
    assert_err(
        &hc("healthy_threshold: 0"),
        "backends[0].health_check.healthy_threshold",
        &["0 is not allowed: healthy_threshold must be an integer of at least 1"],
    );
    assert_err(
        &hc("unhealthy_threshold: 0"),
        "backends[0].health_check.unhealthy_threshold",
        &["0 is not allowed"],
    );
}

#[test]
fn expected_status_errors() {
    let path = "backends[0].health_check.expected_status";
    assert_err(
        &hc("expected_status: 600"),
        path,
        &["600 is not allowed: status codes are from 100 to 599"],
    );
    assert_err(&hc("expected_status: 99"), path, &["99 is not allowed"]);
    assert_err(
        &hc("expected_status: \"200-700\""),
        path,
        &["700 is not allowed"],
    );
    assert_eq!(
        err(&hc("expected_status: 399-200")).to_string(),
        format!(
            "{path}: \"399-200\" is not allowed: the range is inverted; write the lower code \
             first, such as \"200-399\""
        )
    );
    assert_err(
        &hc("expected_status: 2xx"),
        path,
        &["\"2xx\" is not a status code or range; expected a status code such as 200"],
    );
    assert_err(
        &hc("expected_status: \"200-\""),
        path,
        &["is not a status code or range"],
    );
    assert_err(&hc("expected_status: [200]"), path, &["found a list"]);
    let status = |doc: &str| {
        ok(doc).backends[0]
            .health_check
            .as_ref()
            .unwrap()
            .expected_status
    };
    assert_eq!(status(&hc("expected_status: 200")), (200, 200));
    assert_eq!(status(&hc("expected_status: \"204\"")), (204, 204));
    assert_eq!(status(&hc("expected_status: 200-299")), (200, 299));
    assert_eq!(status(&hc("expected_status: \"100 - 599\"")), (100, 599));
}

#[test]
fn health_check_initial_state() {
    let initial = |doc: &str| ok(doc).backends[0].health_check.as_ref().unwrap().initial;
    assert_eq!(
        initial(&with_backend("health_check: { path: /h, interval: 1s }")),
        InitialHealth::Healthy
    );
    assert_eq!(initial(&hc("initial: healthy")), InitialHealth::Healthy);
    assert_eq!(initial(&hc("initial: unknown")), InitialHealth::Unknown);
    assert_eq!(initial(&hc("initial: \"unknown\"")), InitialHealth::Unknown);
    let path = "backends[0].health_check.initial";
    for bad in ["down", "unhealthy", "Healthy", "UNKNOWN", "up", ""] {
        assert_eq!(
            err(&hc(&format!("initial: {bad:?}"))).to_string(),
            format!(
                "{path}: {bad:?} is not an initial state; use healthy (takes traffic at once) \
                 or unknown (takes traffic after its first successful probe)"
            )
        );
    }
    assert_err(
        &hc("initial: true"),
        path,
        &["expected healthy or unknown, found the boolean true"],
    );
    assert_err(
        &hc("initial: 1"),
        path,
        &["expected healthy or unknown, found the integer 1"],
    );
    assert_err(
        &hc("initial: [healthy]"),
        path,
        &["expected healthy or unknown, found a list"],
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies, log, timeouts, limits, runtime
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_strategy() {
    for name in [
        "fastest",
        "least",
        "hash",
        "sticky",
        "weighted-random",
        "Round-Robin",
        "RANDOM",
        "p2c ",
        "",
    ] {
        let doc = with_section(&format!("load_balancing: {{ type: {name:?} }}"));
        assert_err(
            &doc,
            "load_balancing.type",
            &[&format!(
                "{name:?} is not a strategy; use one of: {STRATEGY_LIST}"
            )],
        );
    }
    assert_err(
        &with_section("load_balancing: { type: 1 }"),
        "load_balancing.type",
        &[&format!(
            "expected a strategy name: {STRATEGY_LIST}, found the integer 1"
        )],
    );
    assert_err(
        &with_section("load_balancing: { type: [random] }"),
        "load_balancing.type",
        &["found a list"],
    );
}

#[test]
fn every_strategy_and_alias_parses() {
    use LoadBalancing::*;
    let client_ip = || ConsistentHash(HashKey::ClientIp);
    for (name, expected) in [
        ("round-robin", RoundRobin),
        ("round_robin", RoundRobin),
        ("roundrobin", RoundRobin),
        ("weight-based", WeightBased),
        ("weight_based", WeightBased),
        ("weighted", WeightBased),
        ("weighted-round-robin", WeightBased),
        ("weighted_round_robin", WeightBased),
        ("random", Random),
        ("least-requests", LeastRequests),
        ("least_requests", LeastRequests),
        ("least-request", LeastRequests),
        ("least_connection", LeastRequests),
        ("least-connection", LeastRequests),
        ("least-connections", LeastRequests),
        ("least_connections", LeastRequests),
        ("least-conn", LeastRequests),
        ("least_conn", LeastRequests),
        ("p2c", PowerOfTwoChoices),
        ("power-of-two-choices", PowerOfTwoChoices),
        ("power_of_two_choices", PowerOfTwoChoices),
        ("consistent-hash", client_ip()),
        ("consistent_hash", client_ip()),
        ("maglev", client_ip()),
        ("ip-hash", client_ip()),
        ("ip_hash", client_ip()),
        ("latency", Latency),
        ("ewma", Latency),
        ("peak-ewma", Latency),
        ("peak_ewma", Latency),
    ] {
        let doc = with_section(&format!("load_balancing: {{ type: {name} }}"));
        assert_eq!(ok(&doc).load_balancing, expected, "{name}");
    }
    // Without load_balancing, or without type, the strategy is round-robin.
    assert_eq!(ok(&with_section("")).load_balancing, RoundRobin);
    assert_eq!(
        ok(&with_section("load_balancing: {}")).load_balancing,
        RoundRobin
    );
}

#[test]
fn strategy_names() {
    use LoadBalancing::*;
    for (strategy, name) in [
        (RoundRobin, "round-robin"),
        (WeightBased, "weight-based"),
        (Random, "random"),
        (LeastRequests, "least-requests"),
        (PowerOfTwoChoices, "p2c"),
        (ConsistentHash(HashKey::Path), "consistent-hash"),
        (Latency, "latency"),
    ] {
        assert_eq!(strategy.name(), name);
        // The canonical name parses back to the same strategy (keys aside).
        let doc = with_section(&format!("load_balancing: {{ type: {name} }}"));
        assert_eq!(ok(&doc).load_balancing.name(), name);
    }
}

#[test]
fn consistent_hash_keys() {
    let key = |strategy: &str, key: &str| {
        let doc = with_section(&format!(
            "load_balancing: {{ type: {strategy}, key: {key:?} }}"
        ));
        match ok(&doc).load_balancing {
            LoadBalancing::ConsistentHash(key) => key,
            other => panic!("{other:?}"),
        }
    };
    for strategy in ["consistent-hash", "maglev"] {
        assert_eq!(key(strategy, "client-ip"), HashKey::ClientIp);
        assert_eq!(key(strategy, "ip"), HashKey::ClientIp);
        assert_eq!(key(strategy, "path"), HashKey::Path);
        assert_eq!(
            key(strategy, "header:x-user-id"),
            HashKey::Header("x-user-id".to_string())
        );
        // Header names are case-insensitive and stored in lowercase; spaces around are dropped.
        assert_eq!(
            key(strategy, "header: X-Tenant "),
            HashKey::Header("x-tenant".to_string())
        );
        assert_eq!(
            key(strategy, "cookie:session"),
            HashKey::Cookie("session".to_string())
        );
        // Cookie names are case-sensitive.
        assert_eq!(
            key(strategy, "cookie:JSESSIONID"),
            HashKey::Cookie("JSESSIONID".to_string())
        );
    }
    // ip-hash is consistent hashing of the client IP; naming that key is allowed.
    assert_eq!(key("ip-hash", "client-ip"), HashKey::ClientIp);
    assert_eq!(key("ip_hash", "ip"), HashKey::ClientIp);
    // Block style, unquoted.
    let config = ok(&with_section(
        "load_balancing:\n  type: consistent-hash\n  key: cookie:user",
    ));
    assert_eq!(
        config.load_balancing,
        LoadBalancing::ConsistentHash(HashKey::Cookie("user".to_string()))
    );
}

#[test]
fn key_needs_a_hashing_strategy() {
    for (strategy, name) in [
        ("round-robin", "round-robin"),
        ("weighted", "weight-based"),
        ("random", "random"),
        ("least_connection", "least-requests"),
        ("p2c", "p2c"),
        ("peak-ewma", "latency"),
    ] {
        assert_eq!(
            err(&with_section(&format!(
                "load_balancing: {{ type: {strategy}, key: path }}"
            )))
            .to_string(),
            format!(
                "load_balancing.key: \"path\" is not allowed: key is only used by \
                 consistent-hash and ip-hash, not by {name}; remove it or set type: \
                 consistent-hash"
            )
        );
    }
    // Without type the strategy is round-robin, which does not hash either.
    assert_err(
        &with_section("load_balancing: { key: \"header:x-user\" }"),
        "load_balancing.key",
        &["\"header:x-user\" is not allowed", "not by round-robin"],
    );
    // ip-hash hashes the client IP and nothing else.
    for key in ["path", "header:x-user", "cookie:id"] {
        assert_err(
            &with_section(&format!(
                "load_balancing: {{ type: ip-hash, key: {key:?} }}"
            )),
            "load_balancing.key",
            &[&format!(
                "{key:?} is not allowed: ip-hash always hashes the client IP; remove key, or \
                 set type: consistent-hash to hash by this key"
            )],
        );
    }
}

#[test]
fn bad_hash_keys() {
    let lb = |key: &str| format!("load_balancing: {{ type: consistent-hash, key: {key} }}");
    let path = "load_balancing.key";
    for key in [
        "host",
        "Path",
        "client_ip",
        "uri",
        "query:x",
        "Header:x",
        "header",
        "cookie",
    ] {
        assert_eq!(
            err(&with_section(&lb(&format!("{key:?}")))).to_string(),
            format!(
                "{path}: {key:?} is not a hash key; use one of: client-ip, path, header:NAME, \
                 cookie:NAME"
            )
        );
    }
    for key in [
        "header:",
        "header: ",
        "header:x user",
        "header:x:y",
        "header:x;y",
        "header:é",
    ] {
        assert_err(
            &with_section(&lb(&format!("{key:?}"))),
            path,
            &[&format!(
                "{key:?} needs a header name after the colon, such as header:x-user-id"
            )],
        );
    }
    for key in [
        "cookie:",
        "cookie:a=b",
        "cookie:a;b",
        "cookie:a b",
        "cookie:a,b",
    ] {
        assert_err(
            &with_section(&lb(&format!("{key:?}"))),
            path,
            &[&format!(
                "{key:?} needs a cookie name after the colon, such as cookie:session"
            )],
        );
    }
    assert_err(
        &with_section(&lb("5")),
        path,
        &["expected a hash key: client-ip, path, header:NAME, cookie:NAME, found the integer 5"],
    );
    assert_err(&with_section(&lb("[path]")), path, &["found a list"]);
    // A bad key is reported even with a strategy that would not use it.
    assert_err(
        &with_section("load_balancing: { type: random, key: host }"),
        path,
        &["\"host\" is not a hash key"],
    );
}

#[test]
fn bad_log_level() {
    assert_eq!(
        err(&with_section("log: { level: verbose }")).to_string(),
        "log.level: \"verbose\" is not a log level; use one of: trace, debug, info, warn, error"
    );
}

#[test]
fn limit_errors() {
    assert_err(
        &with_section("limits: { max_concurrent_streams: 0 }"),
        "limits.max_concurrent_streams",
        &["0 is not allowed: max_concurrent_streams must be an integer from 1 to 10000"],
    );
    assert_err(
        &with_section("limits: { max_concurrent_streams: 10001 }"),
        "limits.max_concurrent_streams",
        &["10001 is not allowed"],
    );
    assert_err(
        &with_section("limits: { max_header_size: 512 }"),
        "limits.max_header_size",
        &["512 is not allowed: max_header_size must be from 1024 to 1048576 bytes (1KiB to 1MiB)"],
    );
    assert_err(
        &with_section("limits: { max_header_size: 2MiB }"),
        "limits.max_header_size",
        &["\"2MiB\" (2097152 bytes) is not allowed"],
    );
    assert_err(
        &with_section("limits: { max_request_body: 10MB }"),
        "limits.max_request_body",
        &["\"10MB\" is not a size", "KiB, MiB or GiB"],
    );
    assert_err(
        &with_section("limits: { max_request_body: -1 }"),
        "limits.max_request_body",
        &["-1 is not allowed: max_request_body must be at least 0 bytes"],
    );
    assert_err(
        &with_section("limits: { max_connections: 0 }"),
        "limits.max_connections",
        &["0 is not allowed: max_connections must be an integer of at least 1"],
    );
    assert_err(
        &with_section("limits: { max_connections: 4294967296 }"),
        "limits.max_connections",
        &["must be an integer from 1 to 4294967295"],
    );
}

#[test]
fn runtime_errors() {
    assert_err(
        &with_section("runtime: { kind: async-std }"),
        "runtime.kind",
        &["\"async-std\" is not a runtime; use one of: tokio, mio"],
    );
    assert_err(
        &with_section("runtime: { shards: 0 }"),
        "runtime.shards",
        &["0 is not allowed: shards must be an integer from 1 to 1024"],
    );
    assert_err(
        &with_section("runtime: { shards: 1025 }"),
        "runtime.shards",
        &["1025 is not allowed"],
    );
}

#[test]
fn moved_limits_are_unknown_keys() {
    // limits.max_upstream_connections and limits.max_pending_requests moved to circuit_breaker.
    let allowed = "allowed keys: max_concurrent_streams, max_header_size, max_request_body, \
         max_connections";
    assert_eq!(
        err(&with_section("limits: { max_upstream_connections: 32 }")).to_string(),
        format!(
            "limits: unknown key \"max_upstream_connections\"; {allowed} (this setting moved \
             to circuit_breaker.max_connections)"
        )
    );
    assert_eq!(
        err(&with_section("limits: { max_pending_requests: 0 }")).to_string(),
        format!(
            "limits: unknown key \"max_pending_requests\"; {allowed} (this setting moved to \
             circuit_breaker.max_pending_requests)"
        )
    );
    // The hint is only given where the key used to be.
    let e = err(&with_section("runtime: { max_pending_requests: 0 }"));
    assert_eq!(e.path, "runtime");
    assert!(!e.problem.contains("moved"), "{e}");
    // In their new place they work.
    let config = ok(&with_section(
        "circuit_breaker: { max_connections: 32, max_pending_requests: 0 }",
    ));
    assert_eq!(config.circuit_breaker.max_connections, 32);
    assert_eq!(config.circuit_breaker.max_pending_requests, 0);
    assert_eq!(
        config.circuit_breaker.max_requests,
        CircuitBreaker::default().max_requests
    );
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker, outlier detection, retries
// ---------------------------------------------------------------------------------------------

#[test]
fn circuit_breaker_values() {
    let cb = |fields: &str| {
        ok(&with_section(&format!("circuit_breaker: {{ {fields} }}"))).circuit_breaker
    };
    assert_eq!(cb(""), CircuitBreaker::default());
    assert_eq!(
        cb("max_connections: 1, max_pending_requests: 0, max_requests: 1"),
        CircuitBreaker {
            max_connections: 1,
            max_pending_requests: 0,
            max_requests: 1,
        }
    );
    assert_eq!(
        cb(
            "max_connections: 4294967295, max_pending_requests: 4294967295, \
            max_requests: 4294967295"
        ),
        CircuitBreaker {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
        }
    );
    // Each key on its own leaves the others at their defaults.
    let defaults = CircuitBreaker::default();
    assert_eq!(
        cb("max_requests: 50"),
        CircuitBreaker {
            max_requests: 50,
            ..defaults.clone()
        }
    );
    assert_eq!(
        cb("max_pending_requests: 7"),
        CircuitBreaker {
            max_pending_requests: 7,
            ..defaults
        }
    );
}

#[test]
fn circuit_breaker_errors() {
    let doc = |fields: &str| with_section(&format!("circuit_breaker: {{ {fields} }}"));
    assert_eq!(
        err(&doc("max_connections: 0")).to_string(),
        "circuit_breaker.max_connections: 0 is not allowed: max_connections must be an integer \
         of at least 1"
    );
    assert_err(
        &doc("max_requests: 0"),
        "circuit_breaker.max_requests",
        &["0 is not allowed: max_requests must be an integer of at least 1"],
    );
    assert_err(
        &doc("max_pending_requests: -1"),
        "circuit_breaker.max_pending_requests",
        &["-1 is not allowed: max_pending_requests must be an integer of at least 0"],
    );
    assert_err(
        &doc("max_requests: 4294967296"),
        "circuit_breaker.max_requests",
        &["4294967296 is not allowed: max_requests must be an integer from 1 to 4294967295"],
    );
    assert_err(
        &doc("max_connections: \"64\""),
        "circuit_breaker.max_connections",
        &[
            "expected an integer of at least 1, found the string \"64\"; write the number \
             without quotes",
        ],
    );
    assert_err(
        &doc("max_pending_requests: 1.5"),
        "circuit_breaker.max_pending_requests",
        &["expected an integer of at least 0, found the number 1.5"],
    );
    assert_err(
        &doc("max_requests: unlimited"),
        "circuit_breaker.max_requests",
        &["expected an integer of at least 1, found the string \"unlimited\""],
    );
}

#[test]
fn outlier_detection_values() {
    let od = |fields: &str| {
        ok(&with_section(&format!("outlier_detection: {{ {fields} }}"))).outlier_detection
    };
    assert_eq!(od(""), OutlierDetection::default());
    assert_eq!(
        od(
            "enabled: true, consecutive_5xx: 1, consecutive_failures: 1000000, \
            base_ejection_time: 100ms, max_ejection_time: 1h, max_ejection_percent: 0"
        ),
        OutlierDetection {
            enabled: true,
            consecutive_5xx: 1,
            consecutive_failures: 1_000_000,
            base_ejection_time: ms(100),
            max_ejection_time: ms(3_600_000),
            max_ejection_percent: 0,
        }
    );
    let defaults = OutlierDetection::default();
    assert_eq!(
        od("enabled: false"),
        OutlierDetection {
            enabled: false,
            ..defaults.clone()
        }
    );
    // Zero turns a trigger off.
    assert_eq!(od("consecutive_5xx: 0").consecutive_5xx, 0);
    assert_eq!(od("consecutive_failures: 0").consecutive_failures, 0);
    assert_eq!(od("max_ejection_percent: 100").max_ejection_percent, 100);
    // Equal base and maximum: every ejection has the same length.
    let equal = od("base_ejection_time: 1m, max_ejection_time: 60s");
    assert_eq!(equal.base_ejection_time, equal.max_ejection_time);
    // A base above the default maximum raises the maximum to it when none is given.
    let long = od("base_ejection_time: 1h");
    assert_eq!(long.base_ejection_time, ms(3_600_000));
    assert_eq!(long.max_ejection_time, ms(3_600_000));
    // A base below it keeps the default maximum.
    assert_eq!(
        od("base_ejection_time: 1s").max_ejection_time,
        defaults.max_ejection_time
    );
    // A maximum alone may be anything from the default base up.
    assert_eq!(
        od(&format!(
            "max_ejection_time: {}",
            format_duration(defaults.base_ejection_time)
        ))
        .max_ejection_time,
        defaults.base_ejection_time
    );
}

#[test]
fn outlier_detection_errors() {
    let doc = |fields: &str| with_section(&format!("outlier_detection: {{ {fields} }}"));
    let base = format_duration(OutlierDetection::default().base_ejection_time);
    assert_eq!(
        err(&doc("base_ejection_time: 30s, max_ejection_time: 10s")).to_string(),
        "outlier_detection.max_ejection_time: \"10s\" is not allowed: max_ejection_time must be \
         at least base_ejection_time (30s)"
    );
    // Against the default base when base_ejection_time is left out.
    assert_eq!(
        err(&doc("max_ejection_time: 1s")).to_string(),
        format!(
            "outlier_detection.max_ejection_time: \"1s\" is not allowed: max_ejection_time must \
             be at least base_ejection_time ({base})"
        )
    );
    // The order of the keys does not matter.
    assert_err(
        &doc("max_ejection_time: 1m, base_ejection_time: 90s"),
        "outlier_detection.max_ejection_time",
        &["\"1m\" is not allowed", "at least base_ejection_time (90s)"],
    );
    assert_err(
        &doc("base_ejection_time: 0s"),
        "outlier_detection.base_ejection_time",
        &["\"0s\" is not allowed: base_ejection_time must be longer than zero"],
    );
    assert_err(
        &doc("max_ejection_time: 0ms"),
        "outlier_detection.max_ejection_time",
        &["\"0ms\" is not allowed: max_ejection_time must be longer than zero"],
    );
    assert_err(
        &doc("base_ejection_time: 30"),
        "outlier_detection.base_ejection_time",
        &["30 is not a duration: durations need a unit: ms, s, m or h (for example 30s)"],
    );
    assert_err(
        &doc("max_ejection_time: forever"),
        "outlier_detection.max_ejection_time",
        &["\"forever\" is not a duration"],
    );
    assert_eq!(
        err(&doc("max_ejection_percent: 150")).to_string(),
        "outlier_detection.max_ejection_percent: 150 is not allowed: max_ejection_percent must \
         be an integer from 0 to 100"
    );
    assert_err(
        &doc("max_ejection_percent: -1"),
        "outlier_detection.max_ejection_percent",
        &["-1 is not allowed: max_ejection_percent must be an integer from 0 to 100"],
    );
    assert_err(
        &doc("max_ejection_percent: 50%"),
        "outlier_detection.max_ejection_percent",
        &["expected an integer from 0 to 100, found the string \"50%\""],
    );
    assert_err(
        &doc("consecutive_5xx: -1"),
        "outlier_detection.consecutive_5xx",
        &["-1 is not allowed: consecutive_5xx must be an integer from 0 to 1000000"],
    );
    assert_err(
        &doc("consecutive_5xx: 1000001"),
        "outlier_detection.consecutive_5xx",
        &["1000001 is not allowed: consecutive_5xx must be an integer from 0 to 1000000"],
    );
    assert_err(
        &doc("consecutive_failures: 1000001"),
        "outlier_detection.consecutive_failures",
        &["1000001 is not allowed"],
    );
    assert_err(
        &doc("consecutive_failures: \"5\""),
        "outlier_detection.consecutive_failures",
        &["found the string \"5\"; write the number without quotes"],
    );
    assert_err(
        &doc("enabled: yes"),
        "outlier_detection.enabled",
        &["expected true or false, found the string \"yes\"; write true or false"],
    );
    assert_err(
        &doc("enabled: 0"),
        "outlier_detection.enabled",
        &["expected true or false, found the integer 0"],
    );
}

#[test]
fn retry_values() {
    let retries = |fields: &str| ok(&with_section(&format!("retries: {{ {fields} }}"))).retries;
    let defaults = RetryPolicy::default();
    assert_eq!(retries(""), defaults);
    // By default: connection failures and resets, no statuses, per-try = response_headers.
    assert!(defaults.on_connect_failure && defaults.on_reset);
    assert!(defaults.on_statuses.is_empty());
    assert_eq!(defaults.per_try_timeout, None);
    assert_eq!(
        retries(
            "max_retries: 3, retry_on: [connect-failure, reset, 500, 503, 599], \
             per_try_timeout: 2s, budget_percent: 100, min_retries_in_flight: 1000000"
        ),
        RetryPolicy {
            max_retries: 3,
            on_connect_failure: true,
            on_reset: true,
            on_statuses: vec![500, 503, 599],
            per_try_timeout: Some(ms(2_000)),
            budget_percent: 100,
            min_retries_in_flight: 1_000_000,
        }
    );
    assert_eq!(retries("max_retries: 0").max_retries, 0);
    assert_eq!(retries("max_retries: 10").max_retries, 10);
    assert_eq!(retries("budget_percent: 0").budget_percent, 0);
    assert_eq!(retries("min_retries_in_flight: 0").min_retries_in_flight, 0);
    // retry_on replaces the default list instead of adding to it.
    let only_503 = retries("retry_on: [503]");
    assert!(!only_503.on_connect_failure && !only_503.on_reset);
    assert_eq!(only_503.on_statuses, [503]);
    let only_connect = retries("retry_on: [connect-failure]");
    assert!(only_connect.on_connect_failure && !only_connect.on_reset);
    assert!(only_connect.on_statuses.is_empty());
    let only_reset = retries("retry_on: [reset]");
    assert!(!only_reset.on_connect_failure && only_reset.on_reset);
    // An empty list retries nothing; an empty value keeps the default.
    let nothing = retries("retry_on: []");
    assert!(!nothing.on_connect_failure && !nothing.on_reset);
    assert!(nothing.on_statuses.is_empty());
    assert_eq!(retries("retry_on: ~"), defaults);
    // Block style.
    let config = ok(&with_section(
        "retries:\n  retry_on:\n    - reset\n    - 502\n  per_try_timeout: 1.5s",
    ));
    assert!(config.retries.on_reset && !config.retries.on_connect_failure);
    assert_eq!(config.retries.on_statuses, [502]);
    assert_eq!(config.retries.per_try_timeout, Some(ms(1_500)));
}

#[test]
fn retry_errors() {
    let doc = |fields: &str| with_section(&format!("retries: {{ {fields} }}"));
    assert_eq!(
        err(&doc("max_retries: 11")).to_string(),
        "retries.max_retries: 11 is not allowed: max_retries must be an integer from 0 to 10"
    );
    assert_err(
        &doc("max_retries: -1"),
        "retries.max_retries",
        &["-1 is not allowed: max_retries must be an integer from 0 to 10"],
    );
    assert_err(
        &doc("max_retries: two"),
        "retries.max_retries",
        &["expected an integer from 0 to 10, found the string \"two\""],
    );
    assert_err(
        &doc("budget_percent: 101"),
        "retries.budget_percent",
        &["101 is not allowed: budget_percent must be an integer from 0 to 100"],
    );
    assert_err(
        &doc("min_retries_in_flight: -1"),
        "retries.min_retries_in_flight",
        &["-1 is not allowed: min_retries_in_flight must be an integer from 0 to 1000000"],
    );
    assert_err(
        &doc("min_retries_in_flight: 1000001"),
        "retries.min_retries_in_flight",
        &["1000001 is not allowed"],
    );
    assert_err(
        &doc("per_try_timeout: 0s"),
        "retries.per_try_timeout",
        &["\"0s\" is not allowed: per_try_timeout must be longer than zero"],
    );
    assert_err(
        &doc("per_try_timeout: 5"),
        "retries.per_try_timeout",
        &["5 is not a duration: durations need a unit"],
    );
    // retry_on must be a list.
    assert_eq!(
        err(&doc("retry_on: reset")).to_string(),
        "retries.retry_on: expected a list such as [connect-failure, reset, 503], found the \
         string \"reset\""
    );
    assert_err(
        &doc("retry_on: 503"),
        "retries.retry_on",
        &["expected a list such as [connect-failure, reset, 503], found the integer 503"],
    );
    assert_err(
        &doc("retry_on: { reset: true }"),
        "retries.retry_on",
        &["found a mapping"],
    );
    // Entries are connect-failure, reset or a 5xx status; the error names the entry.
    let condition = "is not a retry condition; use connect-failure, reset (which also covers \
         timeouts), or a 5xx status code from 500 to 599 such as 503";
    for (entry, shown) in [
        ("timeout", "\"timeout\""),
        ("connect_failure", "\"connect_failure\""),
        ("connect-failures", "\"connect-failures\""),
        ("Reset", "\"Reset\""),
        ("5xx", "\"5xx\""),
        ("gateway-error", "\"gateway-error\""),
        ("429", "429"),
        ("404", "404"),
        ("499", "499"),
        ("600", "600"),
        ("503.0", "503.0"),
        ("true", "true"),
        ("[503]", "a list"),
        ("{ code: 503 }", "a mapping"),
    ] {
        assert_eq!(
            err(&doc(&format!("retry_on: [reset, {entry}]"))).to_string(),
            format!("retries.retry_on[1]: {shown} {condition}"),
            "{entry}"
        );
    }
    assert_eq!(
        err(&doc("retry_on: [\"503\"]")).to_string(),
        "retries.retry_on[0]: \"503\" is not a retry condition; write status codes without \
         quotes, such as 503"
    );
    assert_err(
        &doc("retry_on: [503, ~]"),
        "retries.retry_on[1]",
        &["an empty value is not a retry condition"],
    );
}

#[test]
fn first_error_wins_in_document_order() {
    // Both backends are broken; the first one is reported.
    let doc = with_backends(&[
        "{ id: a, address: \"127.0.0.1:80\", weight: 0 }",
        "{ id: b, address: nowhere }",
    ]);
    assert_err(&doc, "backends[0].weight", &["0 is not allowed"]);
}

// ---------------------------------------------------------------------------------------------
// Pools, routes and the admin endpoint
// ---------------------------------------------------------------------------------------------

/// One named pool, `api`, with one backend: what most route tests route to.
const API_POOL: &str =
    "pools:\n  - { name: api, backends: [{ id: a1, address: \"127.0.0.1:9001\" }] }\n";

/// The standard document plus [`API_POOL`] and these `routes:` entries (flow mappings).
fn with_routes(routes: &[&str]) -> String {
    let mut extra = format!("{API_POOL}routes:\n");
    for r in routes {
        extra.push_str(&format!("  - {r}\n"));
    }
    with_section(&extra)
}

/// The standard document with these `pools:` entries (flow mappings).
fn with_pools(pools: &[&str]) -> String {
    let mut extra = String::from("pools:\n");
    for p in pools {
        extra.push_str(&format!("  - {p}\n"));
    }
    with_section(&extra)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[test]
fn pools_routes_and_admin_with_every_key() {
    let doc = with_section(
        r#"pools:
  - name: api
    load_balancing: { type: consistent-hash, key: "header:X-User" }
    backends:
      - { id: api-1, address: "10.0.1.1:8080", weight: 2 }
      - id: api-h3
        address: "[2001:db8::1]:443"
        protocol: http3
        tls: { ca: ca.pem, server_name: api.internal }
        health_check: { path: /health, interval: 5s }
  - name: Static_v2.assets-1
    backends: [{ id: s1, address: "10.0.2.1:80" }]
routes:
  - match:
      host: "*.API.Example.com"
      path_prefix: /v2/
      headers: { X-Canary: "1", x-tenant: "a b", x-empty: "" }
    pool: api
    strip_prefix: /v2
    request_headers:
      set: { X-Env: prod, x-tabbed: "a\tb", x-blank: "" }
      remove: [X-Debug, cookie]
    response_headers:
      set: { x-route: v2 }
      remove: [Server]
  - match: { host: static.example.com }
    pool: Static_v2.assets-1
  - match: { path_prefix: /health }
    pool: default
  - pool: default
admin:
  address: "[::1]:9901"
"#,
    );
    let config = ok(&doc);

    let mut api_h3 =
        BackendConfig::new("api-h3", addr("[2001:db8::1]:443"), BackendProtocol::Http3);
    api_h3.tls = UpstreamTls {
        ca: Some(PathBuf::from("ca.pem")),
        insecure_skip_verify: false,
        server_name: Some("api.internal".into()),
    };
    api_h3.health_check = Some(HealthCheck {
        path: "/health".into(),
        interval: ms(5_000),
        timeout: ms(2_000),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        expected_status: (200, 399),
        initial: InitialHealth::Healthy,
    });
    let mut api_1 = BackendConfig::new("api-1", addr("10.0.1.1:8080"), BackendProtocol::Http1);
    api_1.weight = 2;
    assert_eq!(
        config.pools,
        vec![
            PoolConfig {
                name: "api".into(),
                backends: vec![api_1, api_h3],
                load_balancing: LoadBalancing::ConsistentHash(HashKey::Header("x-user".into())),
            },
            PoolConfig {
                name: "Static_v2.assets-1".into(),
                backends: vec![BackendConfig::new(
                    "s1",
                    addr("10.0.2.1:80"),
                    BackendProtocol::Http1
                )],
                load_balancing: LoadBalancing::RoundRobin,
            },
        ]
    );

    assert_eq!(
        config.routes,
        vec![
            Route {
                // Lowercased: hosts are compared case-insensitively.
                host: Some("*.api.example.com".into()),
                path_prefix: Some("/v2/".into()),
                // Header names are lowercased, values kept as written, in document order.
                headers: pairs(&[("x-canary", "1"), ("x-tenant", "a b"), ("x-empty", "")]),
                pool: "api".into(),
                strip_prefix: Some("/v2".into()),
                request_headers: HeaderEdits {
                    set: pairs(&[("x-env", "prod"), ("x-tabbed", "a\tb"), ("x-blank", "")]),
                    remove: names(&["x-debug", "cookie"]),
                },
                response_headers: HeaderEdits {
                    set: pairs(&[("x-route", "v2")]),
                    remove: names(&["server"]),
                },
            },
            Route {
                host: Some("static.example.com".into()),
                pool: "Static_v2.assets-1".into(),
                ..Route::default()
            },
            Route {
                path_prefix: Some("/health".into()),
                pool: "default".into(),
                ..Route::default()
            },
            Route {
                pool: "default".into(),
                ..Route::default()
            },
        ]
    );
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            address: addr("[::1]:9901"),
        })
    );

    // Backend-indexed data follows this order: the default pool, then each pool in turn.
    let ids: Vec<&str> = config.all_backends().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["b0", "api-1", "api-h3", "s1"]);
    // The top-level backends are still the default pool, with its own strategy.
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
}

#[test]
fn pools_routes_and_admin_are_optional() {
    let config = ok(&with_section(""));
    assert_eq!(config.pools, []);
    assert_eq!(config.routes, []);
    assert_eq!(config.admin, None);
    // Empty values count as absent; empty lists are no pools and no routes.
    for extra in [
        "pools:\nroutes:\nadmin:",
        "pools: ~\nroutes: null\nadmin: ~",
        "pools: []\nroutes: []",
    ] {
        let config = ok(&with_section(extra));
        assert_eq!((config.pools.len(), config.routes.len()), (0, 0), "{extra}");
        assert_eq!(config.admin, None, "{extra}");
    }
    // A route with an empty match (or none) takes every request.
    for route in [
        "{ pool: default }",
        "{ match: {}, pool: api }",
        "{ match: ~, pool: api }",
    ] {
        let config = ok(&with_routes(&[route]));
        let r = &config.routes[0];
        assert_eq!(
            (&r.host, &r.path_prefix, r.headers.len()),
            (&None, &None, 0),
            "{route}"
        );
        assert_eq!(r.strip_prefix, None);
        assert!(r.request_headers.is_empty() && r.response_headers.is_empty());
    }
    // Empty edit sections change nothing.
    let config = ok(&with_routes(&[
        "{ pool: api, request_headers: { set: {}, remove: [] }, response_headers: {} }",
    ]));
    assert_eq!(config.routes[0].request_headers, HeaderEdits::default());
    assert_eq!(config.routes[0].response_headers, HeaderEdits::default());
}

#[test]
fn routes_may_come_before_pools_in_the_file() {
    let doc = with_section(
        "routes: [{ pool: late }]\npools: [{ name: late, backends: [{ id: l1, address: \"127.0.0.1:1\" }] }]",
    );
    assert_eq!(ok(&doc).routes[0].pool, "late");
}

#[test]
fn admin_addresses() {
    for (text, expected) in [
        ("\"127.0.0.1:9901\"", "127.0.0.1:9901"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("\"0.0.0.0:9901\"", "0.0.0.0:9901"),
        ("\"[::1]:9901\"", "[::1]:9901"),
    ] {
        let config = ok(&with_section(&format!("admin: {{ address: {text} }}")));
        assert_eq!(config.admin.unwrap().address, addr(expected), "{text}");
    }
}

#[test]
fn admin_errors() {
    assert_err(
        &with_section("admin: \"127.0.0.1:9901\""),
        "admin",
        &[
            "expected the admin endpoint (a mapping with the keys address), found the string \
             \"127.0.0.1:9901\"",
        ],
    );
    assert_err(
        &with_section("admin: { address: \"127.0.0.1:9901\", port: 9901 }"),
        "admin",
        &["unknown key \"port\"; allowed keys: address"],
    );
    assert_err(
        &with_section("admin: {}"),
        "admin.address",
        &["is required; expected an IP:port such as 127.0.0.1:9901"],
    );
    assert_err(
        &with_section("admin: { address: }"),
        "admin.address",
        &["has no value; expected an IP:port such as 127.0.0.1:9901"],
    );
    assert_err(
        &with_section("admin: { address: 9901 }"),
        "admin.address",
        &["expected an IP:port such as 127.0.0.1:9901, found the integer 9901"],
    );
    for bad in [
        "localhost:9901",
        "127.0.0.1",
        "::1:9901",
        "127.0.0.1:99999",
        "",
    ] {
        assert_err(
            &with_section(&format!("admin: {{ address: \"{bad}\" }}")),
            "admin.address",
            &[&format!(
                "{bad:?} is not a socket address; expected IP:port such as 127.0.0.1:9901 or \
                 [::1]:9901"
            )],
        );
    }
}

#[test]
fn pool_errors() {
    let backend = "backends: [{ id: p1, address: \"127.0.0.1:9001\" }]";
    assert_err(
        &with_section("pools: { name: api }"),
        "pools",
        &["expected a list of pools, found a mapping"],
    );
    assert_err(
        &with_pools(&["api"]),
        "pools[0]",
        &[
            "expected a pool (a mapping with the keys name, backends, load_balancing), found the \
             string \"api\"",
        ],
    );
    assert_err(
        &with_pools(&[&format!("{{ name: api, {backend}, weight: 2 }}")]),
        "pools[0]",
        &["unknown key \"weight\"; allowed keys: name, backends, load_balancing"],
    );
    assert_err(
        &with_pools(&[&format!("{{ {backend} }}")]),
        "pools[0].name",
        &["is required; expected a pool name such as api"],
    );
    assert_err(
        &with_pools(&["{ name: api }"]),
        "pools[0].backends",
        &["is required; expected a list of backends"],
    );
    assert_err(
        &with_pools(&["{ name: api, backends: [] }"]),
        "pools[0].backends",
        &["the list is empty; at least one backend is required"],
    );
    assert_err(
        &with_pools(&["{ name: api, backends: { id: p1 } }"]),
        "pools[0].backends",
        &["expected a list of backends, found a mapping"],
    );
    // Names.
    for bad in ["a b", "api/v2", "", "api:1", "*", "pool\u{e9}"] {
        assert_err(
            &with_pools(&[&format!("{{ name: {bad:?}, {backend} }}")]),
            "pools[0].name",
            &[&format!(
                "{bad:?} is not allowed: pool names use letters, digits, '_', '.' and '-'"
            )],
        );
    }
    assert_err(
        &with_pools(&[&format!("{{ name: 7, {backend} }}")]),
        "pools[0].name",
        &["expected a pool name such as api, found the integer 7; put it in quotes"],
    );
    assert_err(
        &with_pools(&[&format!("{{ name: [api], {backend} }}")]),
        "pools[0].name",
        &["expected a pool name such as api, found a list"],
    );
    assert_err(
        &with_pools(&[&format!("{{ name: default, {backend} }}")]),
        "pools[0].name",
        &["\"default\" is the pool of the top-level backends; choose another name"],
    );
    assert_err(
        &with_pools(&[
            "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:9001\" }] }",
            "{ name: web, backends: [{ id: p2, address: \"127.0.0.1:9002\" }] }",
            "{ name: api, backends: [{ id: p3, address: \"127.0.0.1:9003\" }] }",
        ]),
        "pools[2].name",
        &["\"api\" is used twice (also pools[0].name); pool names must be unique"],
    );
    // Names are case-sensitive: `Api` is another pool than `api`.
    let config = ok(&with_pools(&[
        "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:9001\" }] }",
        "{ name: Api, backends: [{ id: p2, address: \"127.0.0.1:9002\" }] }",
    ]));
    assert_eq!(config.pools.len(), 2);
    // A pool's backends and strategy are checked like the top-level ones, at their own path.
    assert_err(
        &with_pools(&[
            "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:9001\", weight: 0 }] }",
        ]),
        "pools[0].backends[0].weight",
        &["0 is not allowed: weight must be an integer from 1 to 65535"],
    );
    assert_err(
        &with_pools(&[
            "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:9001\", protocol: h3 }] }",
        ]),
        "pools[0].backends[0].tls",
        &["is required for an http3 backend"],
    );
    assert_err(
        &with_pools(&[&format!(
            "{{ name: api, {backend}, load_balancing: {{ type: fastest }} }}"
        )]),
        "pools[0].load_balancing.type",
        &["\"fastest\" is not a strategy; use one of: round-robin"],
    );
    assert_err(
        &with_pools(&[&format!(
            "{{ name: api, {backend}, load_balancing: {{ type: random, key: path }} }}"
        )]),
        "pools[0].load_balancing.key",
        &["key is only used by consistent-hash and ip-hash, not by random"],
    );
}

#[test]
fn backend_ids_are_unique_across_pools() {
    // Within one pool.
    assert_err(
        &with_pools(&[
            "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:9001\" }, { id: p1, address: \"127.0.0.1:9002\" }] }",
        ]),
        "pools[0].backends[1].id",
        &["\"p1\" is used twice (also pools[0].backends[0].id); backend ids must be unique"],
    );
    // A pool's backend with the id of a top-level one (`b0`).
    assert_err(
        &with_pools(&["{ name: api, backends: [{ id: b0, address: \"127.0.0.1:9001\" }] }"]),
        "pools[0].backends[0].id",
        &[
            "\"b0\" is used twice (also backends[0].id); backend ids must be unique across all pools",
        ],
    );
    // Two pools, even with the same address.
    assert_err(
        &with_pools(&[
            "{ name: api, backends: [{ id: p0, address: \"127.0.0.1:9000\" }, { id: p1, address: \"127.0.0.1:9001\" }] }",
            "{ name: web, backends: [{ id: w0, address: \"127.0.0.1:9002\" }, { id: p1, address: \"127.0.0.1:9001\" }] }",
        ]),
        "pools[1].backends[1].id",
        &[
            "\"p1\" is used twice (also pools[0].backends[1].id); backend ids must be unique \
             across all pools",
        ],
    );
    // The same address under different ids is fine (a backend may serve two pools).
    ok(&with_pools(&[
        "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:8080\" }] }",
    ]));
}

#[test]
fn route_structure_errors() {
    assert_err(
        &with_section(&format!("{API_POOL}routes: {{ pool: api }}")),
        "routes",
        &["expected a list of routes, found a mapping"],
    );
    assert_err(
        &with_routes(&["api"]),
        "routes[0]",
        &[
            "expected a route (a mapping with the keys match, pool, strip_prefix, \
             request_headers, response_headers), found the string \"api\"",
        ],
    );
    assert_err(
        &with_routes(&["{ pool: api, to: api }"]),
        "routes[0]",
        &[
            "unknown key \"to\"; allowed keys: match, pool, strip_prefix, request_headers, \
             response_headers",
        ],
    );
    assert_err(
        &with_routes(&["{ match: { path: /x }, pool: api }"]),
        "routes[0].match",
        &["unknown key \"path\"; allowed keys: host, path_prefix, headers"],
    );
    assert_err(
        &with_routes(&["{ match: /api, pool: api }"]),
        "routes[0].match",
        &[
            "expected a match (a mapping with the keys host, path_prefix, headers), found the \
             string \"/api\"",
        ],
    );
    assert_err(
        &with_routes(&["{ pool: api }", "{ match: { host: a.example.com } }"]),
        "routes[1].pool",
        &["is required; expected the name of a pool, or default"],
    );
    assert_err(
        &with_routes(&["{ pool: }"]),
        "routes[0].pool",
        &["has no value; expected the name of a pool, or default"],
    );
    assert_err(
        &with_routes(&["{ pool: 7 }"]),
        "routes[0].pool",
        &["expected the name of a pool, or default, found the integer 7; put it in quotes"],
    );
    assert_err(
        &with_routes(&["{ pool: [api] }"]),
        "routes[0].pool",
        &["expected the name of a pool, or default, found a list"],
    );
    for (key, what) in [("request_headers", "[x-a]"), ("response_headers", "x-a")] {
        assert_err(
            &with_routes(&[&format!("{{ pool: api, {key}: {what} }}")]),
            &format!("routes[0].{key}"),
            &["expected header changes (a mapping with the keys set, remove), found"],
        );
        assert_err(
            &with_routes(&[&format!("{{ pool: api, {key}: {{ add: {{ x-a: b }} }} }}")]),
            &format!("routes[0].{key}"),
            &["unknown key \"add\"; allowed keys: set, remove"],
        );
        assert_err(
            &with_routes(&[&format!("{{ pool: api, {key}: {{ set: [x-a] }} }}")]),
            &format!("routes[0].{key}.set"),
            &[
                "expected a mapping of header names to values, such as { x-env: prod }, found a list",
            ],
        );
        assert_err(
            &with_routes(&[&format!("{{ pool: api, {key}: {{ remove: x-debug }} }}")]),
            &format!("routes[0].{key}.remove"),
            &["expected a list of header names, such as [x-debug], found the string \"x-debug\""],
        );
    }
    assert_err(
        &with_routes(&["{ match: { headers: [x-canary] }, pool: api }"]),
        "routes[0].match.headers",
        &[
            "expected a mapping of header names to values, such as { x-canary: \"1\" }, found a \
             list",
        ],
    );
}

#[test]
fn unknown_pools_are_listed() {
    assert_err(
        &with_routes(&["{ pool: apii }"]),
        "routes[0].pool",
        &["\"apii\" is not a pool; use one of: default, api"],
    );
    // Without a pools section only the default pool exists.
    assert_err(
        &with_section("routes: [{ pool: api }]"),
        "routes[0].pool",
        &["\"api\" is not a pool; use one of: default"],
    );
    // Pool names are case-sensitive, and every pool is listed in order.
    assert_err(
        &with_section(&format!(
            "{API_POOL}  - {{ name: web, backends: [{{ id: w1, address: \"127.0.0.1:9002\" }}] }}\n\
             routes: [{{ pool: api }}, {{ pool: Default }}]"
        )),
        "routes[1].pool",
        &["\"Default\" is not a pool; use one of: default, api, web"],
    );
}

#[test]
fn host_patterns() {
    let host = |pattern: &str| {
        ok(&with_routes(&[&format!(
            "{{ match: {{ host: {pattern:?} }}, pool: api }}"
        )]))
        .routes[0]
            .host
            .clone()
            .unwrap()
    };
    assert_eq!(host("api.example.com"), "api.example.com");
    assert_eq!(host("API.Example.COM"), "api.example.com");
    assert_eq!(host("*.example.com"), "*.example.com");
    assert_eq!(host("*.Example-1.com"), "*.example-1.com");
    assert_eq!(host("localhost"), "localhost");
    assert_eq!(host("10.0.0.1"), "10.0.0.1");
    assert_eq!(host("xn--bcher-kva.example"), "xn--bcher-kva.example");

    let allowed = "expected a host name such as api.example.com, or *.example.com for any of its \
                   subdomains: letters, digits, '-' and '.', without scheme, port or path";
    let bad = |pattern: &str, hint: &str| {
        assert_err(
            &with_routes(&[&format!("{{ match: {{ host: {pattern:?} }}, pool: api }}")]),
            "routes[0].match.host",
            &[
                &format!("{pattern:?} is not a host pattern{hint}; "),
                allowed,
            ],
        );
    };
    bad(
        "api.example.com:443",
        " (remove the port; hosts are matched without it)",
    );
    bad(
        "*.example.com:8443",
        " (remove the port; hosts are matched without it)",
    );
    bad(
        "[::1]:443",
        " (remove the port; hosts are matched without it)",
    );
    bad("https://api.example.com", " (remove the scheme)");
    bad("http://api.example.com:80/", " (remove the scheme)");
    bad(
        "api.example.com/v1",
        " (remove the path; match paths with path_prefix)",
    );
    for pattern in [
        "",
        "*",
        "*.",
        "*example.com",
        "*.*.example.com",
        "api.*.example.com",
        "api..example.com",
        ".example.com",
        "example.com.",
        "api example.com",
        "api_1.example.com",
        "b\u{fc}cher.example",
    ] {
        bad(pattern, "");
    }
    assert_err(
        &with_routes(&["{ match: { host: 42 }, pool: api }"]),
        "routes[0].match.host",
        &["expected a host name such as api.example.com, found the integer 42"],
    );
    assert_err(
        &with_routes(&["{ match: { host: [a.example.com] }, pool: api }"]),
        "routes[0].match.host",
        &["expected a host name such as api.example.com, found a list"],
    );
}

#[test]
fn path_prefixes() {
    let config = ok(&with_routes(&[
        "{ match: { path_prefix: / }, pool: api, strip_prefix: / }",
        "{ match: { path_prefix: \"/v2/items?x=1\" }, pool: api, strip_prefix: /v2/ }",
    ]));
    assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/"));
    assert_eq!(config.routes[0].strip_prefix.as_deref(), Some("/"));
    assert_eq!(
        config.routes[1].path_prefix.as_deref(),
        Some("/v2/items?x=1")
    );
    // Kept as written; the trailing `/` is ignored when stripping, not when parsing.
    assert_eq!(config.routes[1].strip_prefix.as_deref(), Some("/v2/"));

    for bad in [
        "api",
        "v2/",
        "",
        "*",
        "/a b",
        "/tab\there",
        "/caf\u{e9}",
        "https://x/",
    ] {
        assert_err(
            &with_routes(&[&format!(
                "{{ match: {{ path_prefix: {bad:?} }}, pool: api }}"
            )]),
            "routes[0].match.path_prefix",
            &[&format!(
                "{bad:?} is not a path prefix; it must start with / and contain only visible ASCII"
            )],
        );
        assert_err(
            &with_routes(&[&format!("{{ pool: api, strip_prefix: {bad:?} }}")]),
            "routes[0].strip_prefix",
            &[&format!(
                "{bad:?} is not a path prefix; it must start with / and contain only visible ASCII"
            )],
        );
    }
    assert_err(
        &with_routes(&["{ match: { path_prefix: 2 }, pool: api }"]),
        "routes[0].match.path_prefix",
        &["expected a path prefix such as /api/, found the integer 2; put it in quotes"],
    );
    assert_err(
        &with_routes(&["{ pool: api, strip_prefix: [/v2] }"]),
        "routes[0].strip_prefix",
        &["expected a path prefix such as /api/, found a list"],
    );
}

#[test]
fn header_names_must_be_tokens() {
    let token =
        "header names use letters, digits and the symbols !#$%&'*+-.^_`|~ (no spaces, no ':')";
    for bad in [
        "x y", "x:y", ":path", "", "x\u{e9}", "x(y)", "x/y", "x\"y", "x,y", "x;y",
    ] {
        let problem = format!("{bad:?} is not a valid header name; {token}");
        assert_err(
            &with_routes(&[&format!(
                "{{ match: {{ headers: {{ {bad:?}: \"1\" }} }}, pool: api }}"
            )]),
            "routes[0].match.headers",
            &[&problem],
        );
        for key in ["request_headers", "response_headers"] {
            assert_err(
                &with_routes(&[&format!(
                    "{{ pool: api, {key}: {{ set: {{ {bad:?}: v }} }} }}"
                )]),
                &format!("routes[0].{key}.set"),
                &[&problem],
            );
            assert_err(
                &with_routes(&[&format!(
                    "{{ pool: api, {key}: {{ remove: [x-ok, {bad:?}] }} }}"
                )]),
                &format!("routes[0].{key}.remove[1]"),
                &[&problem],
            );
        }
    }
    // Numbers and booleans are names once quoted.
    assert_err(
        &with_routes(&["{ pool: api, request_headers: { remove: [1] } }"]),
        "routes[0].request_headers.remove[0]",
        &["1 is not a header name; put it in quotes to use it as text"],
    );
    assert_err(
        &with_routes(&["{ pool: api, response_headers: { set: { true: v } } }"]),
        "routes[0].response_headers.set",
        &["true is not a header name; put it in quotes to use it as text"],
    );
    assert_err(
        &with_routes(&["{ pool: api, response_headers: { remove: [[x-a]] } }"]),
        "routes[0].response_headers.remove[0]",
        &[&format!("a list is not a header name; {token}")],
    );
    assert_err(
        &with_routes(&["{ pool: api, request_headers: { remove: [~] } }"]),
        "routes[0].request_headers.remove[0]",
        &[&format!("an empty value is not a header name; {token}")],
    );
    let config = ok(&with_routes(&[
        "{ pool: api, request_headers: { set: { \"1\": v, \"x!#$%&'*+-.^_`|~\": v } } }",
    ]));
    assert_eq!(
        config.routes[0].request_headers.set,
        pairs(&[("1", "v"), ("x!#$%&'*+-.^_`|~", "v")])
    );
}

#[test]
fn header_names_spooky_manages_are_refused() {
    let managed = [
        "connection",
        "content-length",
        "host",
        "te",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    ];
    let list = "connection, content-length, host, keep-alive, proxy-connection, te, \
                transfer-encoding, upgrade";
    for name in managed {
        for written in [name.to_string(), name.to_ascii_uppercase()] {
            let problem = format!(
                "{written:?} cannot be changed: Spooky manages it (connection-specific or \
                 framing); routes cannot set or remove {list}"
            );
            for key in ["request_headers", "response_headers"] {
                assert_err(
                    &with_routes(&[&format!(
                        "{{ pool: api, {key}: {{ set: {{ {written}: x }} }} }}"
                    )]),
                    &format!("routes[0].{key}.set"),
                    &[&problem],
                );
                assert_err(
                    &with_routes(&[&format!(
                        "{{ pool: api, {key}: {{ remove: [x-a, {written}] }} }}"
                    )]),
                    &format!("routes[0].{key}.remove[1]"),
                    &[&problem],
                );
            }
            let matched = if name == "host" {
                format!(
                    "{written:?} cannot be matched as a header; use match.host (it covers both \
                     :authority and host)"
                )
            } else {
                format!(
                    "{written:?} cannot be matched: Spooky manages it (connection-specific or \
                     framing); routes cannot match {list}"
                )
            };
            assert_err(
                &with_routes(&[&format!(
                    "{{ match: {{ headers: {{ {written}: x }} }}, pool: api }}"
                )]),
                "routes[0].match.headers",
                &[&matched],
            );
        }
    }
    // Look-alikes are ordinary fields.
    let config = ok(&with_routes(&[
        "{ pool: api, request_headers: { set: { x-host: a, content-type: text/plain, tek: b }, remove: [hosts, connection-id] } }",
    ]));
    assert_eq!(
        config.routes[0].request_headers.remove,
        names(&["hosts", "connection-id"])
    );
}

#[test]
fn header_values_must_be_clean() {
    let problem = |value: &str| {
        format!(
            "{value:?} is not a valid header value; header values must not contain control \
             characters (tab excepted) or start or end with a space or tab"
        )
    };
    // (as written in YAML, as parsed)
    let bad = [
        (r#""a\u0001b""#, "a\u{1}b"),
        (r#""a\nb""#, "a\nb"),
        (r#""a\rb""#, "a\rb"),
        (r#""nul\0""#, "nul\0"),
        (r#""del\u007f""#, "del\u{7f}"),
        (r#""\u001b[31m""#, "\u{1b}[31m"),
        (r#"" leading""#, " leading"),
        (r#""trailing ""#, "trailing "),
        (r#""\tleading tab""#, "\tleading tab"),
        (r#""trailing tab\t""#, "trailing tab\t"),
        (r#"" ""#, " "),
    ];
    for (written, parsed) in bad {
        for key in ["request_headers", "response_headers"] {
            assert_err(
                &with_routes(&[&format!(
                    "{{ pool: api, {key}: {{ set: {{ X-Env: {written} }} }} }}"
                )]),
                &format!("routes[0].{key}.set.x-env"),
                &[&problem(parsed)],
            );
        }
        // A match on such a value could never succeed: requests carrying it are malformed.
        assert_err(
            &with_routes(&[&format!(
                "{{ match: {{ headers: {{ X-Canary: {written} }} }}, pool: api }}"
            )]),
            "routes[0].match.headers.x-canary",
            &[&problem(parsed)],
        );
    }
    // Numbers and booleans must be quoted; lists and mappings are not values.
    for (written, found) in [
        ("1", "the integer 1"),
        ("1.5", "the number 1.5"),
        ("true", "the boolean true"),
    ] {
        assert_err(
            &with_routes(&[&format!(
                "{{ match: {{ headers: {{ x-canary: {written} }} }}, pool: api }}"
            )]),
            "routes[0].match.headers.x-canary",
            &[&format!(
                "expected a header value, found {found}; put it in quotes to use it as text"
            )],
        );
        assert_err(
            &with_routes(&[&format!(
                "{{ pool: api, request_headers: {{ set: {{ x-n: {written} }} }} }}"
            )]),
            "routes[0].request_headers.set.x-n",
            &[&format!("expected a header value, found {found}")],
        );
    }
    assert_err(
        &with_routes(&["{ pool: api, response_headers: { set: { x-a: [1, 2] } } }"]),
        "routes[0].response_headers.set.x-a",
        &["expected a header value, found a list"],
    );
    // An empty value counts as absent, as everywhere: quote it to set an empty field.
    assert_err(
        &with_routes(&["{ pool: api, response_headers: { set: { x-a: ~ } } }"]),
        "routes[0].response_headers.set.x-a",
        &["expected a header value, found an empty value"],
    );
    // Inner spaces and tabs, quotes, commas and non-ASCII text are fine.
    let config = ok(&with_routes(&[
        r#"{ match: { headers: { x-q: "a, b; q=0.5" } }, pool: api, request_headers: { set: { x-a: "a b\tc", x-b: "\"quoted\"", x-c: "caf\u00e9" } } }"#,
    ]));
    assert_eq!(config.routes[0].headers, pairs(&[("x-q", "a, b; q=0.5")]));
    assert_eq!(
        config.routes[0].request_headers.set,
        pairs(&[
            ("x-a", "a b\tc"),
            ("x-b", "\"quoted\""),
            ("x-c", "caf\u{e9}")
        ])
    );
}

#[test]
fn a_header_is_given_once_per_mapping() {
    // YAML itself refuses the same key twice; names that differ in case are the same field.
    assert_err(
        &with_routes(&["{ pool: api, request_headers: { set: { X-Env: a, x-env: b } } }"]),
        "routes[0].request_headers.set.x-env",
        &["\"x-env\" is given twice (header names are case-insensitive); give each header once"],
    );
    assert_err(
        &with_routes(&["{ match: { headers: { x-a: \"1\", X-A: \"2\" } }, pool: api }"]),
        "routes[0].match.headers.x-a",
        &["\"x-a\" is given twice"],
    );
    assert_err(
        &with_routes(&["{ pool: api, response_headers: { set: { x-a: \"1\", x-a: \"2\" } } }"]),
        "",
        &["key \"x-a\" appears twice in the same mapping"],
    );
    // Removing and setting the same field is how a field is replaced (remove runs first).
    let config = ok(&with_routes(&[
        "{ pool: api, request_headers: { set: { x-a: new }, remove: [x-a, X-A] } }",
    ]));
    assert_eq!(
        config.routes[0].request_headers.remove,
        names(&["x-a", "x-a"])
    );
    assert!(config.routes[0].request_headers.drops(b"x-a"));
}

// ---------------------------------------------------------------------------------------------
// Documentation
// ---------------------------------------------------------------------------------------------

const REFERENCE: &str = include_str!("../../../../docs/configuration.md");

/// The fenced blocks of `docs/configuration.md` with the given info string.
fn fenced_blocks(lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in REFERENCE.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn documented_examples_are_valid() {
    let blocks = fenced_blocks("yaml");
    assert!(blocks.len() >= 8, "{} yaml blocks found", blocks.len());
    let backend = "backends: [{ id: z, address: \"127.0.0.1:1\" }]\n";
    for block in &blocks {
        let doc = if block.contains("listen:") && block.contains("backends:") {
            block.clone()
        } else if block.starts_with("listen:") {
            format!("{block}{backend}")
        } else if block.starts_with("backends:") {
            format!("{LISTEN}{block}")
        } else if block.starts_with("health_check:") {
            let indented: String = block.lines().map(|l| format!("    {l}\n")).collect();
            format!("{LISTEN}backends:\n  - id: z\n    address: \"127.0.0.1:1\"\n{indented}")
        } else {
            with_section(block)
        };
        ok(&doc);
    }
}

#[test]
fn documented_error_messages_are_real() {
    // The error table quotes these verbatim; keep them in sync.
    let cases = [
        (
            with_backend("weight: 0"),
            "backends[0].weight: 0 is not allowed",
        ),
        (
            with_section("load_balancing: { type: round_robinn }"),
            "load_balancing.type: \"round_robinn\" is not a strategy; use one of: round-robin, \
             weight-based, random, least-requests (alias least_connection), p2c, \
             consistent-hash, ip-hash, latency",
        ),
        (
            with_section("load_balancing: { type: round-robin, key: path }"),
            "load_balancing.key: \"path\" is not allowed: key is only used by consistent-hash \
             and ip-hash, not by round-robin; remove it or set type: consistent-hash",
        ),
        (
            with_section("load_balancing: { type: consistent-hash, key: host }"),
            "load_balancing.key: \"host\" is not a hash key; use one of: client-ip, path, \
             header:NAME, cookie:NAME",
        ),
        (
            with_section("limits: { max_upstream_connections: 64 }"),
            "limits: unknown key \"max_upstream_connections\"; allowed keys: \
             max_concurrent_streams, max_header_size, max_request_body, max_connections (this \
             setting moved to circuit_breaker.max_connections)",
        ),
        (
            hc("initial: down"),
            "backends[0].health_check.initial: \"down\" is not an initial state; use healthy \
             (takes traffic at once) or unknown (takes traffic after its first successful probe)",
        ),
        (
            with_section("outlier_detection: { max_ejection_time: 10s }"),
            "outlier_detection.max_ejection_time: \"10s\" is not allowed: max_ejection_time must \
             be at least base_ejection_time (30s)",
        ),
        (
            with_section("outlier_detection: { max_ejection_percent: 150 }"),
            "outlier_detection.max_ejection_percent: 150 is not allowed: max_ejection_percent \
             must be an integer from 0 to 100",
        ),
        (
            with_section("circuit_breaker: { max_requests: 0 }"),
            "circuit_breaker.max_requests: 0 is not allowed: max_requests must be an integer of \
             at least 1",
        ),
        (
            with_section("retries: { retry_on: [reset, timeout] }"),
            "retries.retry_on[1]: \"timeout\" is not a retry condition; use connect-failure, \
             reset (which also covers timeouts), or a 5xx status code from 500 to 599 such as 503",
        ),
        (
            with_section("retries: { max_retries: 11 }"),
            "retries.max_retries: 11 is not allowed: max_retries must be an integer from 0 to 10",
        ),
        (
            listen_doc("{ address: \"127.0.0.1\", tls: { cert: c, key: k } }"),
            "listen.port: is required; expected an integer from 1 to 65535",
        ),
        (
            listen_doc("{ address: \"127.0.0.1\", port: 1, tls: { cert: c, key: } }"),
            "listen.tls.key: has no value; expected the path of the private key (PEM or DER)",
        ),
        (
            listen_doc("{ address: \"127.0.0.1\", port: \"9889\", tls: { cert: c, key: k } }"),
            "listen.port: expected an integer from 1 to 65535, found the string \"9889\"; write \
             the number without quotes",
        ),
        (
            with_backends(&["{ id: a, address: \"localhost:8080\" }"]),
            "backends[0].address: \"localhost:8080\" names a host; hostnames are not resolved by \
             the core, use an IP address such as 127.0.0.1:8080 or [::1]:8080",
        ),
        (
            with_backends(&["{ id: \"web 1\", address: \"127.0.0.1:80\" }"]),
            "backends[0].id: \"web 1\" contains ' '; backend ids may only use letters, digits, \
             '_', '.' and '-'",
        ),
        (
            with_section("timeouts: { connect: 0s }"),
            "timeouts.connect: \"0s\" is not allowed: connect must be longer than zero",
        ),
        (
            hc("expected_status: 600"),
            "backends[0].health_check.expected_status: 600 is not allowed: status codes are from \
             100 to 599",
        ),
        (
            with_backend("tls: { ca: x }"),
            "backends[0].tls: TLS to HTTP/1.1 backends is not supported yet; remove the tls \
             block, or set protocol: http3 if the backend speaks HTTP/3",
        ),
        (
            with_routes(&["{ pool: apii }"]),
            "routes[0].pool: \"apii\" is not a pool; use one of: default, api",
        ),
        (
            with_pools(&["{ name: default, backends: [{ id: p1, address: \"127.0.0.1:1\" }] }"]),
            "pools[0].name: \"default\" is the pool of the top-level backends; choose another \
             name",
        ),
        (
            with_pools(&[
                "{ name: api, backends: [{ id: p1, address: \"127.0.0.1:1\" }] }",
                "{ name: api, backends: [{ id: p2, address: \"127.0.0.1:2\" }] }",
            ]),
            "pools[1].name: \"api\" is used twice (also pools[0].name); pool names must be unique",
        ),
        (
            with_pools(&["{ name: api, backends: [{ id: b0, address: \"127.0.0.1:1\" }] }"]),
            "pools[0].backends[0].id: \"b0\" is used twice (also backends[0].id); backend ids \
             must be unique across all pools",
        ),
        (
            with_routes(&["{ match: { host: \"api.example.com:443\" }, pool: api }"]),
            "routes[0].match.host: \"api.example.com:443\" is not a host pattern (remove the \
             port; hosts are matched without it); expected a host name such as api.example.com, \
             or *.example.com for any of its subdomains: letters, digits, '-' and '.', without \
             scheme, port or path",
        ),
        (
            with_routes(&["{ pool: api, strip_prefix: v2 }"]),
            "routes[0].strip_prefix: \"v2\" is not a path prefix; it must start with / and \
             contain only visible ASCII",
        ),
        (
            with_routes(&["{ pool: api, request_headers: { remove: [Connection] } }"]),
            "routes[0].request_headers.remove[0]: \"Connection\" cannot be changed: Spooky \
             manages it (connection-specific or framing); routes cannot set or remove \
             connection, content-length, host, keep-alive, proxy-connection, te, \
             transfer-encoding, upgrade",
        ),
        (
            with_routes(&["{ pool: api, response_headers: { set: { x-route: \" v2\" } } }"]),
            "routes[0].response_headers.set.x-route: \" v2\" is not a valid header value; header \
             values must not contain control characters (tab excepted) or start or end with a \
             space or tab",
        ),
        (
            with_routes(&["{ match: { headers: { x-canary: 1 } }, pool: api }"]),
            "routes[0].match.headers.x-canary: expected a header value, found the integer 1; put \
             it in quotes to use it as text",
        ),
        (
            with_section("admin: { address: \"127.0.0.1\" }"),
            "admin.address: \"127.0.0.1\" is not a socket address; expected IP:port such as \
             127.0.0.1:9901 or [::1]:9901",
        ),
        (
            "listen:\n  port: 1\n   address: x\n".to_string(),
            "invalid YAML: mapping values are not allowed in this context at line 3, column 11",
        ),
    ];
    for (doc, message) in cases {
        let e = err(&doc).to_string();
        assert!(
            e.starts_with(message),
            "`{e}` does not start with `{message}`"
        );
        assert!(REFERENCE.contains(message), "docs do not quote `{message}`");
    }
}

/// The lines of the reference's `## heading` section, up to the next `## `.
fn reference_section(heading: &str) -> Vec<&'static str> {
    let mut lines = REFERENCE.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "docs have no section {heading}");
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// Asserts that the section's table row for `key` gives `default` (in backquotes).
#[track_caller]
fn assert_documented_default(heading: &str, key: &str, default: &str) {
    let rows: Vec<&str> = reference_section(heading)
        .into_iter()
        .filter(|l| l.starts_with(&format!("| `{key}` |")))
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "{heading}: one row for `{key}` expected: {rows:?}"
    );
    assert!(
        rows[0].contains(&format!("| `{default}` |")),
        "{heading}: the row of `{key}` does not give the default `{default}`: {}",
        rows[0]
    );
}

#[test]
fn documented_defaults_are_real() {
    let cb = CircuitBreaker::default();
    let heading = "## `circuit_breaker`";
    assert_documented_default(heading, "max_connections", &cb.max_connections.to_string());
    assert_documented_default(
        heading,
        "max_pending_requests",
        &cb.max_pending_requests.to_string(),
    );
    assert_documented_default(heading, "max_requests", &cb.max_requests.to_string());

    let od = OutlierDetection::default();
    let heading = "## `outlier_detection`";
    assert_documented_default(heading, "enabled", &od.enabled.to_string());
    assert_documented_default(heading, "consecutive_5xx", &od.consecutive_5xx.to_string());
    assert_documented_default(
        heading,
        "consecutive_failures",
        &od.consecutive_failures.to_string(),
    );
    assert_documented_default(
        heading,
        "base_ejection_time",
        &format_duration(od.base_ejection_time),
    );
    assert_documented_default(
        heading,
        "max_ejection_time",
        &format_duration(od.max_ejection_time),
    );
    assert_documented_default(
        heading,
        "max_ejection_percent",
        &od.max_ejection_percent.to_string(),
    );

    let rp = RetryPolicy::default();
    let heading = "## `retries`";
    assert_documented_default(heading, "max_retries", &rp.max_retries.to_string());
    assert_eq!(
        (rp.on_connect_failure, rp.on_reset, rp.on_statuses.len()),
        (true, true, 0)
    );
    assert_documented_default(heading, "retry_on", "[connect-failure, reset]");
    assert_documented_default(heading, "budget_percent", &rp.budget_percent.to_string());
    assert_documented_default(
        heading,
        "min_retries_in_flight",
        &rp.min_retries_in_flight.to_string(),
    );

    let t = Timeouts::default();
    let heading = "## `timeouts`";
    for (key, value) in [
        ("connect", t.connect),
        ("response_headers", t.response_headers),
        ("request", t.request),
        ("upstream_idle", t.upstream_idle),
        ("client_idle", t.client_idle),
        ("drain", t.drain),
    ] {
        assert_documented_default(heading, key, &format_duration(value));
    }

    let l = Limits::default();
    let heading = "## `limits`";
    assert_documented_default(
        heading,
        "max_concurrent_streams",
        &l.max_concurrent_streams.to_string(),
    );
    assert_documented_default(heading, "max_connections", &l.max_connections.to_string());
}
