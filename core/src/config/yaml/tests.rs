use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::parse;
use crate::config::{
    BackendProtocol, Config, ConfigError, HealthCheck, Limits, ListenProtocol, LoadBalancing,
    LogLevel, RuntimeConfig, RuntimeKind, Timeouts, UpstreamTls,
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
        })
    );
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
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
    // The sample documents the defaults: apart from the explicit choices it matches them.
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.runtime.kind, RuntimeKind::Tokio);
    assert_eq!(config.runtime.shards, Some(4));
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
  type: random
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
  max_upstream_connections: 32
  max_pending_requests: 0
runtime:
  kind: mio
  shards: 8
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

    assert_eq!(c.weight, 1);
    assert_eq!(c.tls.ca, None);
    assert!(c.tls.insecure_skip_verify);
    assert_eq!(c.health_check, None);

    assert_eq!(config.load_balancing, LoadBalancing::Random);
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
            max_upstream_connections: 32,
            max_pending_requests: 0,
        }
    );
    assert_eq!(
        config.runtime,
        RuntimeConfig {
            kind: RuntimeKind::Mio,
            shards: Some(8),
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
}

#[test]
fn empty_values_count_as_absent_for_optional_keys() {
    let doc = with_section("timeouts:\nlimits: ~\nruntime: null\nlog: {}\nload_balancing: {}");
    let config = ok(&doc);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(ok(&with_backend("weight: ~")).backends[0].weight, 1);
}

#[test]
fn aliases_are_accepted() {
    for (name, expected) in [
        ("round-robin", LoadBalancing::RoundRobin),
        ("round_robin", LoadBalancing::RoundRobin),
        ("roundrobin", LoadBalancing::RoundRobin),
        ("random", LoadBalancing::Random),
    ] {
        let doc = with_section(&format!("load_balancing: {{ type: {name} }}"));
        assert_eq!(ok(&doc).load_balancing, expected, "{name}");
    }
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

#[test]
fn misspelled_strategy() {
    let e = err(&with_section("load_balancing: { type: round_robinn }"));
    assert_eq!(
        e.to_string(),
        "load_balancing.type: \"round_robinn\" is not a strategy; use one of: round-robin, random"
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
    let allowed_top =
        "allowed keys: listen, backends, load_balancing, log, timeouts, limits, runtime";
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
        &["unknown key \"retries\"; allowed keys: path, interval, timeout"],
    );
    assert_err(
        "listen: { address: \"::\", port: 1, tls: { cert: c, key: k, ca: x } }\nbackends: [{ id: a, address: \"127.0.0.1:80\" }]",
        "listen.tls",
        &["unknown key \"ca\"; allowed keys: cert, key"],
    );
    assert_err(
        &with_section("load_balancing: { kind: random }"),
        "load_balancing",
        &["unknown key \"kind\"; allowed keys: type"],
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
            "expected the balancing settings (a mapping with the keys type), found the string \"round-robin\"",
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

// ---------------------------------------------------------------------------------------------
// Strategies, log, timeouts, limits, runtime
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_strategy() {
    assert_err(
        &with_section("load_balancing: { type: fastest }"),
        "load_balancing.type",
        &["\"fastest\" is not a strategy; use one of: round-robin, random"],
    );
}

#[test]
fn unsupported_strategies() {
    for name in [
        "weight-based",
        "least_connection",
        "least-requests",
        "ip-hash",
        "p2c",
        "consistent-hash",
        "latency",
    ] {
        let e = err(&with_section(&format!(
            "load_balancing: {{ type: {name} }}"
        )));
        assert_eq!(e.path, "load_balancing.type");
        assert!(
            e.problem.starts_with(&format!(
                "strategy {name:?} is not supported yet; use one of: round-robin, random"
            )),
            "{e}"
        );
    }
    assert!(
        err(&with_section("load_balancing: { type: weight-based }"))
            .problem
            .contains("already honour backend weights")
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
        &with_section("limits: { max_upstream_connections: 0 }"),
        "limits.max_upstream_connections",
        &["0 is not allowed"],
    );
    assert_err(
        &with_section("limits: { max_pending_requests: -1 }"),
        "limits.max_pending_requests",
        &["-1 is not allowed: max_pending_requests must be an integer of at least 0"],
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
fn first_error_wins_in_document_order() {
    // Both backends are broken; the first one is reported.
    let doc = with_backends(&[
        "{ id: a, address: \"127.0.0.1:80\", weight: 0 }",
        "{ id: b, address: nowhere }",
    ]);
    assert_err(&doc, "backends[0].weight", &["0 is not allowed"]);
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
            with_section("load_balancing: { type: least_connection }"),
            "load_balancing.type: strategy \"least_connection\" is not supported yet; use one \
             of: round-robin, random",
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
