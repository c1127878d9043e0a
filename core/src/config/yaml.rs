//! YAML → [`Config`]: loads the document with `yaml-rust2` and walks the tree by hand.
//!
//! Walking by hand (instead of deriving) keeps every error precise: each value is read together
//! with its key path, so a problem is reported as `backends[1].weight: 0 is not allowed: …`
//! rather than as a position in a token stream. Unknown keys are errors everywhere, so a typo
//! never silently falls back to a default.
//!
//! A key whose value is empty (`key:`, `~` or `null`) counts as absent: optional keys take their
//! default, required keys are reported as missing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use yaml_rust2::{ScanError, Yaml, YamlLoader};

use super::duration::{format_duration, parse_duration};
use super::{
    AdminConfig, BackendConfig, BackendProtocol, CircuitBreaker, Config, ConfigError, DEFAULT_POOL,
    HashKey, HeaderEdits, HealthCheck, InitialHealth, Limits, ListenConfig, ListenProtocol,
    ListenTls, LoadBalancing, LogConfig, LogLevel, OutlierDetection, PoolConfig, RetryPolicy,
    Route, RuntimeConfig, RuntimeKind, Timeouts, UpstreamTls,
};

#[cfg(test)]
mod tests;

type Result<T> = std::result::Result<T, ConfigError>;

const TOP_KEYS: &[&str] = &[
    "listen",
    "backends",
    "load_balancing",
    "log",
    "timeouts",
    "limits",
    "runtime",
    "circuit_breaker",
    "outlier_detection",
    "retries",
    "admin",
    "pools",
    "routes",
];
const POOL_KEYS: &[&str] = &["name", "backends", "load_balancing"];
const ROUTE_KEYS: &[&str] = &[
    "match",
    "pool",
    "strip_prefix",
    "request_headers",
    "response_headers",
];
const MATCH_KEYS: &[&str] = &["host", "path_prefix", "headers"];
const EDIT_KEYS: &[&str] = &["set", "remove"];
const ADMIN_KEYS: &[&str] = &["address"];
const LISTEN_KEYS: &[&str] = &["protocol", "address", "port", "tls"];
const LISTEN_TLS_KEYS: &[&str] = &["cert", "key"];
const BACKEND_KEYS: &[&str] = &["id", "address", "weight", "protocol", "tls", "health_check"];
const BACKEND_TLS_KEYS: &[&str] = &["ca", "insecure_skip_verify", "server_name"];
const HEALTH_CHECK_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "expected_status",
    "initial",
];
const LOAD_BALANCING_KEYS: &[&str] = &["type", "key"];
const CIRCUIT_BREAKER_KEYS: &[&str] = &["max_connections", "max_pending_requests", "max_requests"];
const OUTLIER_KEYS: &[&str] = &[
    "enabled",
    "consecutive_5xx",
    "consecutive_failures",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejection_percent",
];
const RETRY_KEYS: &[&str] = &[
    "max_retries",
    "retry_on",
    "per_try_timeout",
    "budget_percent",
    "min_retries_in_flight",
];
const LOG_KEYS: &[&str] = &["level"];
const TIMEOUT_KEYS: &[&str] = &[
    "connect",
    "response_headers",
    "request",
    "upstream_idle",
    "client_idle",
    "drain",
];
const LIMIT_KEYS: &[&str] = &[
    "max_concurrent_streams",
    "max_header_size",
    "max_request_body",
    "max_connections",
];
const RUNTIME_KEYS: &[&str] = &["kind", "shards"];
/// Keys that moved to another section: old path, new path (named in the unknown-key error).
const MOVED_KEYS: &[(&str, &str)] = &[
    (
        "limits.max_upstream_connections",
        "circuit_breaker.max_connections",
    ),
    (
        "limits.max_pending_requests",
        "circuit_breaker.max_pending_requests",
    ),
];

/// Strategies, as listed in errors.
const STRATEGIES: &str = "round-robin, weight-based, random, least-requests (alias \
     least_connection), p2c, consistent-hash, ip-hash, latency";
/// What `load_balancing.key` may be.
const HASH_KEYS: &str = "client-ip, path, header:NAME, cookie:NAME";

/// How long a health probe may take when `timeout` is not given (capped at the interval).
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `expected_status`.
const DEFAULT_EXPECTED_STATUS: (u16, u16) = (200, 399);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Parses and validates a whole configuration document.
pub(super) fn parse(text: &str) -> Result<Config> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| syntax_error(&e))?;
    let root = match docs.as_slice() {
        [] | [Yaml::Null] => {
            return Err(ConfigError::new(
                "",
                format!(
                    "the configuration is empty; expected a mapping with the keys {}",
                    TOP_KEYS.join(", ")
                ),
            ));
        }
        [doc] => doc,
        more => {
            return Err(ConfigError::new(
                "",
                format!(
                    "found {} YAML documents; a configuration is a single document \
                     (remove the extra `---` separators)",
                    more.len()
                ),
            ));
        }
    };
    config(&Node::new(String::new(), root))
}

/// Reports a YAML syntax error with its position, prettifying the loader's messages.
fn syntax_error(e: &ScanError) -> ConfigError {
    let info = e.info();
    let message = match info.strip_suffix(": duplicated key in mapping") {
        Some(key) => {
            // The loader prints the key with `Debug`, as in `String("port")`.
            let key = key
                .strip_prefix("String(")
                .and_then(|k| k.strip_suffix(')'))
                .unwrap_or(key);
            format!("key {key} appears twice in the same mapping")
        }
        None => info.to_string(),
    };
    let mark = e.marker();
    ConfigError::new(
        "",
        format!(
            "invalid YAML: {message} at line {}, column {}",
            mark.line(),
            mark.col() + 1
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Tree walking helpers
// ---------------------------------------------------------------------------------------------

/// A value together with its key path.
struct Node<'a> {
    path: String,
    value: &'a Yaml,
}

impl<'a> Node<'a> {
    fn new(path: String, value: &'a Yaml) -> Self {
        Node { path, value }
    }

    /// The last path segment, such as `weight` for `backends[0].weight`, for messages.
    fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }

    fn error(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path.clone(), problem)
    }

    /// "expected X, found Y".
    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.error(format!(
            "expected {expected}, found {}",
            describe(self.value)
        ))
    }

    /// A number or boolean, which YAML would read as text if it were quoted.
    fn is_unquoted_scalar(&self) -> bool {
        matches!(
            self.value,
            Yaml::Integer(_) | Yaml::Real(_) | Yaml::Boolean(_)
        )
    }
}

/// What a value is, for "found …" in type errors; scalars are quoted.
fn describe(value: &Yaml) -> String {
    match value {
        Yaml::Integer(i) => format!("the integer {i}"),
        Yaml::Real(r) => format!("the number {r}"),
        Yaml::String(s) => format!("the string {s:?}"),
        Yaml::Boolean(b) => format!("the boolean {b}"),
        Yaml::Array(items) if items.is_empty() => "an empty list".to_string(),
        Yaml::Array(_) => "a list".to_string(),
        Yaml::Hash(_) => "a mapping".to_string(),
        Yaml::Null => "an empty value".to_string(),
        Yaml::Alias(_) | Yaml::BadValue => "an invalid value".to_string(),
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping whose keys have been checked against the allowed set.
struct Map<'a> {
    path: String,
    entries: Vec<(&'a str, &'a Yaml)>,
}

impl<'a> Map<'a> {
    /// Checks that `node` is a mapping with string keys, all of them in `allowed`.
    fn new(node: &Node<'a>, what: &str, allowed: &[&str]) -> Result<Map<'a>> {
        let Yaml::Hash(hash) = node.value else {
            return Err(node.wrong_type(&format!(
                "{what} (a mapping with the keys {})",
                allowed.join(", ")
            )));
        };
        let mut entries = Vec::with_capacity(hash.len());
        for (key, value) in hash {
            let Yaml::String(key) = key else {
                return Err(node.error(format!(
                    "keys must be names, found {} as a key; allowed keys: {}",
                    describe(key),
                    allowed.join(", ")
                )));
            };
            if !allowed.contains(&key.as_str()) {
                let moved = MOVED_KEYS
                    .iter()
                    .find(|(old, _)| *old == child_path(&node.path, key))
                    .map(|(_, new)| format!(" (this setting moved to {new})"))
                    .unwrap_or_default();
                return Err(node.error(format!(
                    "unknown key {key:?}; allowed keys: {}{moved}",
                    allowed.join(", ")
                )));
            }
            entries.push((key.as_str(), value));
        }
        Ok(Map {
            path: node.path.clone(),
            entries,
        })
    }

    /// The value of `key`, or `None` when it is missing or empty.
    fn get(&self, key: &str) -> Option<Node<'a>> {
        self.entries
            .iter()
            .find(|(k, v)| *k == key && !matches!(v, Yaml::Null))
            .map(|(k, v)| Node::new(child_path(&self.path, k), v))
    }

    /// Whether `key` is written at all, even with an empty value.
    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// The value of `key`; an error naming `expected` when it is missing or empty.
    fn require(&self, key: &str, expected: &str) -> Result<Node<'a>> {
        self.get(key).ok_or_else(|| {
            let problem = if self.has(key) {
                format!("has no value; expected {expected}")
            } else {
                format!("is required; expected {expected}")
            };
            ConfigError::new(child_path(&self.path, key), problem)
        })
    }

    /// Parses `key` with `read` when present.
    fn opt<T>(&self, key: &str, read: impl FnOnce(&Node<'a>) -> Result<T>) -> Result<Option<T>> {
        self.get(key).map(|node| read(&node)).transpose()
    }
}

/// An optional section: parsed with `read` when present, `Default` otherwise.
fn section<'a, T: Default>(
    map: &Map<'a>,
    key: &str,
    read: impl FnOnce(&Node<'a>) -> Result<T>,
) -> Result<T> {
    Ok(map.opt(key, read)?.unwrap_or_default())
}

/// A string value. `free_text` adds a hint to quote numbers and booleans given instead.
fn string<'a>(node: &Node<'a>, expected: &str, free_text: bool) -> Result<&'a str> {
    match node.value {
        Yaml::String(s) => Ok(s),
        _ if free_text && node.is_unquoted_scalar() => Err(node.error(format!(
            "expected {expected}, found {}; put it in quotes to use it as text",
            describe(node.value)
        ))),
        _ => Err(node.wrong_type(expected)),
    }
}

/// An integer in `lo..=hi`.
fn integer(node: &Node<'_>, lo: i64, hi: i64) -> Result<i64> {
    let range = if hi == i64::from(u32::MAX) && lo <= 1 {
        format!("an integer of at least {lo}")
    } else {
        format!("an integer from {lo} to {hi}")
    };
    match node.value {
        Yaml::Integer(i) if (lo..=hi).contains(i) => Ok(*i),
        Yaml::Integer(i) => {
            let range = if *i > hi {
                format!("an integer from {lo} to {hi}")
            } else {
                range
            };
            Err(node.error(format!(
                "{i} is not allowed: {} must be {range}",
                node.name()
            )))
        }
        Yaml::String(s) if s.trim().parse::<i64>().is_ok() => Err(node.error(format!(
            "expected {range}, found {}; write the number without quotes",
            describe(node.value)
        ))),
        _ => Err(node.wrong_type(&range)),
    }
}

fn u16_in(node: &Node<'_>, lo: u16, hi: u16) -> Result<u16> {
    // The range check makes the conversion lossless.
    Ok(integer(node, lo.into(), hi.into())? as u16)
}

fn u32_in(node: &Node<'_>, lo: u32, hi: u32) -> Result<u32> {
    Ok(integer(node, lo.into(), hi.into())? as u32)
}

fn boolean(node: &Node<'_>) -> Result<bool> {
    match node.value {
        Yaml::Boolean(b) => Ok(*b),
        Yaml::String(s) if matches!(s.as_str(), "yes" | "no" | "on" | "off" | "y" | "n") => {
            Err(node.error(format!(
                "expected true or false, found the string {s:?}; write true or false"
            )))
        }
        _ => Err(node.wrong_type("true or false")),
    }
}

/// A file path; must not be empty. Files are not read here.
fn file_path(node: &Node<'_>) -> Result<PathBuf> {
    let path = string(node, "a file path", true)?;
    if path.trim().is_empty() {
        return Err(node.error(format!(
            "{path:?} is not allowed: {} must be a non-empty file path",
            node.name()
        )));
    }
    Ok(PathBuf::from(path))
}

/// A duration greater than zero, such as `5s`.
fn positive_duration(node: &Node<'_>) -> Result<Duration> {
    let expected = "a duration such as 250ms, 5s, 1m or 2h";
    let duration = match node.value {
        Yaml::String(s) => parse_duration(s).map_err(|e| node.error(e))?,
        Yaml::Integer(n) => {
            return Err(node.error(format!(
                "{n} is not a duration: durations need a unit: ms, s, m or h (for example {n}s)"
            )));
        }
        Yaml::Real(r) => {
            return Err(node.error(format!(
                "{r} is not a duration: durations need a unit: ms, s, m or h (for example {r}s)"
            )));
        }
        _ => return Err(node.wrong_type(expected)),
    };
    if duration.is_zero() {
        return Err(node.error(format!(
            "{} is not allowed: {} must be longer than zero",
            quote_value(node.value),
            node.name()
        )));
    }
    Ok(duration)
}

/// A scalar as the user wrote it, quoted when it is a string.
fn quote_value(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => format!("{s:?}"),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        other => describe(other),
    }
}

/// A byte count: an integer, or a string such as `512KiB`, `10MiB`, `1GiB`; within `lo..=hi`.
fn size(node: &Node<'_>, lo: u64, hi: u64) -> Result<u64> {
    let expected =
        "a size in bytes such as 1048576, or a number with KiB, MiB or GiB such as 10MiB";
    let range = || {
        if hi == u64::MAX {
            format!("{} must be at least {lo} bytes", node.name())
        } else {
            format!(
                "{} must be from {lo} to {hi} bytes ({} to {})",
                node.name(),
                format_size(lo),
                format_size(hi)
            )
        }
    };
    let bytes = match node.value {
        Yaml::Integer(i) => match u64::try_from(*i) {
            Ok(bytes) => bytes,
            Err(_) => return Err(node.error(format!("{i} is not allowed: {}", range()))),
        },
        Yaml::String(s) => parse_size(s)
            .ok_or_else(|| node.error(format!("{s:?} is not a size; expected {expected}")))?,
        _ => return Err(node.wrong_type(expected)),
    };
    if !(lo..=hi).contains(&bytes) {
        let shown = match node.value {
            Yaml::String(s) => format!("{s:?} ({bytes} bytes)"),
            _ => bytes.to_string(),
        };
        return Err(node.error(format!("{shown} is not allowed: {}", range())));
    }
    Ok(bytes)
}

/// `1024`, `512KiB`, `10MiB`, `1GiB`; `None` when malformed or too large.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let multiplier = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

/// Bytes in the largest binary unit that divides them exactly, such as `64KiB`.
fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

fn config(root: &Node<'_>) -> Result<Config> {
    let map = Map::new(root, "a configuration", TOP_KEYS)?;
    let listen = listen(&map.require("listen", "a mapping with the keys address, port and tls")?)?;
    let backends = backends(&map.require("backends", "a list of backends")?)?;
    let load_balancing = match map.get("load_balancing") {
        Some(node) => load_balancing(&node)?,
        None => LoadBalancing::RoundRobin,
    };
    let log = match map.get("log") {
        Some(node) => log(&node)?,
        None => LogConfig {
            level: LogLevel::Info,
        },
    };
    let timeouts = section(&map, "timeouts", timeouts)?;
    let limits = section(&map, "limits", limits)?;
    let runtime = section(&map, "runtime", runtime)?;
    let circuit_breaker = section(&map, "circuit_breaker", circuit_breaker)?;
    let outlier_detection = section(&map, "outlier_detection", outlier_detection)?;
    let retries = section(&map, "retries", retries)?;
    let admin = map.opt("admin", admin)?;
    let pools = map.opt("pools", pools)?.unwrap_or_default();
    check_backend_ids_across_pools(&backends, &pools)?;
    let routes = map
        .opt("routes", |n| routes(n, &pools))?
        .unwrap_or_default();
    Ok(Config {
        listen,
        backends,
        load_balancing,
        log,
        timeouts,
        limits,
        runtime,
        circuit_breaker,
        outlier_detection,
        retries,
        admin,
        pools,
        routes,
    })
}

fn listen(node: &Node<'_>) -> Result<ListenConfig> {
    let map = Map::new(node, "the listener", LISTEN_KEYS)?;
    let protocol = map
        .opt("protocol", listen_protocol)?
        .unwrap_or(ListenProtocol::Http3);
    let address = listen_address(&map.require("address", "an IP address such as 127.0.0.1")?)?;
    let port = u16_in(
        &map.require("port", "an integer from 1 to 65535")?,
        1,
        65535,
    )?;
    let tls = listen_tls(&map.require("tls", "a mapping with the keys cert and key")?)?;
    Ok(ListenConfig {
        protocol,
        address,
        port,
        tls,
    })
}

fn listen_protocol(node: &Node<'_>) -> Result<ListenProtocol> {
    let name = string(node, "a protocol name: http3", false)?;
    match name {
        "http3" | "h3" | "http/3" => Ok(ListenProtocol::Http3),
        "http1" | "h1" | "http/1.1" | "http2" | "h2" | "http/2" => Err(node.error(format!(
            "{name:?} is not supported for clients; Spooky listens for http3 only"
        ))),
        _ => Err(node.error(format!("{name:?} is not a listen protocol; use: http3"))),
    }
}

fn listen_address(node: &Node<'_>) -> Result<IpAddr> {
    let text = string(node, "an IP address such as 127.0.0.1", false)?;
    let trimmed = text.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip);
    }
    if trimmed.parse::<SocketAddr>().is_ok() {
        return Err(node.error(format!(
            "{text:?} includes a port; put only the IP address here and the port in listen.port"
        )));
    }
    Err(node.error(format!(
        "{text:?} is not an IP address; expected IPv4 or IPv6 such as 127.0.0.1, 0.0.0.0 or ::1 \
         (hostnames are not resolved)"
    )))
}

fn listen_tls(node: &Node<'_>) -> Result<ListenTls> {
    let map = Map::new(node, "the listener's certificate and key", LISTEN_TLS_KEYS)?;
    let cert = file_path(&map.require("cert", "the path of the certificate chain (PEM or DER)")?)?;
    let key = file_path(&map.require("key", "the path of the private key (PEM or DER)")?)?;
    Ok(ListenTls { cert, key })
}

fn backends(node: &Node<'_>) -> Result<Vec<BackendConfig>> {
    let Yaml::Array(items) = node.value else {
        return Err(node.wrong_type("a list of backends"));
    };
    if items.is_empty() {
        return Err(node.error("the list is empty; at least one backend is required"));
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", node.path);
        let backend = backend(&Node::new(path.clone(), item))?;
        if let Some(first) = seen.insert(backend.id.clone(), i) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!(
                    "{:?} is used twice (also {}[{first}].id); backend ids must be unique",
                    backend.id, node.path
                ),
            ));
        }
        backends.push(backend);
    }
    Ok(backends)
}

fn backend(node: &Node<'_>) -> Result<BackendConfig> {
    let map = Map::new(node, "a backend", BACKEND_KEYS)?;
    let id = backend_id(&map.require("id", "a backend id such as backend1")?)?;
    let address = backend_address(&map.require("address", "an address such as 127.0.0.1:8080")?)?;
    let weight = map.opt("weight", |n| u32_in(n, 1, 65535))?.unwrap_or(1);
    let protocol = map
        .opt("protocol", backend_protocol)?
        .unwrap_or(BackendProtocol::Http1);
    let tls = match (protocol, map.get("tls")) {
        (BackendProtocol::Http1, Some(tls)) => {
            return Err(tls.error(
                "TLS to HTTP/1.1 backends is not supported yet; remove the tls block, \
                 or set protocol: http3 if the backend speaks HTTP/3",
            ));
        }
        (BackendProtocol::Http1, None) => UpstreamTls::default(),
        (BackendProtocol::Http3, Some(tls)) => upstream_tls(&tls)?,
        (BackendProtocol::Http3, None) => {
            return Err(ConfigError::new(
                child_path(&map.path, "tls"),
                "is required for an http3 backend: set tls.ca to the CA bundle that issued the \
                 backend's certificate, or (development only) tls.insecure_skip_verify: true; \
                 Spooky verifies the certificate of every HTTP/3 backend",
            ));
        }
    };
    let health_check = map.opt("health_check", health_check)?;
    Ok(BackendConfig {
        id,
        address,
        weight,
        protocol,
        tls,
        health_check,
    })
}

fn backend_id(node: &Node<'_>) -> Result<String> {
    let id = string(node, "a backend id such as backend1", true)?;
    if id.is_empty() {
        return Err(node.error(
            "\"\" is not allowed: a backend id must not be empty; \
             use letters, digits, '_', '.' and '-'",
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(node.error(format!(
            "{id:?} contains {bad:?}; backend ids may only use letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(id.to_string())
}

fn backend_address(node: &Node<'_>) -> Result<SocketAddr> {
    let text = string(node, "an address such as 127.0.0.1:8080", false)?;
    let trimmed = text.trim();
    let expected = "expected host:port such as 127.0.0.1:8080 or [::1]:8080";
    if let Ok(addr) = trimmed.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(node.error(format!(
                "{text:?} has port 0; a backend port must be from 1 to 65535"
            )));
        }
        return Ok(addr);
    }
    match trimmed.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => {
            return Err(node.error(format!("{text:?} is not a socket address; {expected}")));
        }
        Ok(IpAddr::V6(_)) => {
            return Err(node.error(format!(
                "{text:?} is not a socket address; {expected} (IPv6 addresses need brackets \
                 and a port)"
            )));
        }
        Err(_) => {}
    }
    let names_host = trimmed.rsplit_once(':').filter(|(host, port)| {
        !host.is_empty()
            && !host.contains(':')
            && port.parse::<u16>().is_ok()
            && host.parse::<IpAddr>().is_err()
    });
    if let Some((_, port)) = names_host {
        return Err(node.error(format!(
            "{text:?} names a host; hostnames are not resolved by the core, use an IP address \
             such as 127.0.0.1:{port} or [::1]:{port}"
        )));
    }
    Err(node.error(format!("{text:?} is not a socket address; {expected}")))
}

fn backend_protocol(node: &Node<'_>) -> Result<BackendProtocol> {
    let name = string(node, "a protocol name: http1 or http3", false)?;
    match name {
        "http1" | "http/1.1" | "h1" => Ok(BackendProtocol::Http1),
        "http3" | "http/3" | "h3" => Ok(BackendProtocol::Http3),
        _ => Err(node.error(format!(
            "{name:?} is not a backend protocol; use one of: http1 (or http/1.1, h1), \
             http3 (or http/3, h3)"
        ))),
    }
}

fn upstream_tls(node: &Node<'_>) -> Result<UpstreamTls> {
    let map = Map::new(node, "the backend's TLS settings", BACKEND_TLS_KEYS)?;
    let ca = map.opt("ca", file_path)?;
    let insecure_skip_verify = map.opt("insecure_skip_verify", boolean)?.unwrap_or(false);
    let server_name = map.opt("server_name", server_name)?;
    match (&ca, insecure_skip_verify) {
        (None, false) => {
            let why = if map.has("insecure_skip_verify") {
                "is required for an http3 backend when insecure_skip_verify is false: Spooky \
                 must verify the backend's certificate against a CA bundle"
            } else {
                "is required for an http3 backend: Spooky verifies the backend's certificate \
                 against this CA bundle (for development only, set insecure_skip_verify: true \
                 instead)"
            };
            return Err(ConfigError::new(child_path(&map.path, "ca"), why));
        }
        (Some(_), true) => {
            return Err(ConfigError::new(
                child_path(&map.path, "insecure_skip_verify"),
                "true conflicts with ca: either verify the backend against the CA bundle or \
                 skip verification, not both; remove one of the two",
            ));
        }
        _ => {}
    }
    Ok(UpstreamTls {
        ca,
        insecure_skip_verify,
        server_name,
    })
}

fn server_name(node: &Node<'_>) -> Result<String> {
    let name = string(node, "a server name such as backend.internal", true)?;
    if rustls_pki_types::ServerName::try_from(name).is_err() {
        return Err(node.error(format!(
            "{name:?} is not a valid server name; expected a DNS name such as backend.internal \
             or an IP address"
        )));
    }
    Ok(name.to_string())
}

fn health_check(node: &Node<'_>) -> Result<HealthCheck> {
    let map = Map::new(node, "a health check", HEALTH_CHECK_KEYS)?;
    let path = probe_path(&map.require("path", "a URL path such as /health")?)?;
    let interval = positive_duration(&map.require("interval", "a duration such as 5s")?)?;
    let timeout = match map.get("timeout") {
        Some(node) => {
            let timeout = positive_duration(&node)?;
            if timeout > interval {
                return Err(node.error(format!(
                    "{} is not allowed: the timeout must not be longer than interval ({})",
                    quote_value(node.value),
                    format_duration(interval)
                )));
            }
            timeout
        }
        None => DEFAULT_PROBE_TIMEOUT.min(interval),
    };
    let healthy_threshold = map
        .opt("healthy_threshold", |n| u32_in(n, 1, u32::MAX))?
        .unwrap_or(2);
    let unhealthy_threshold = map
        .opt("unhealthy_threshold", |n| u32_in(n, 1, u32::MAX))?
        .unwrap_or(3);
    let expected_status = map
        .opt("expected_status", expected_status)?
        .unwrap_or(DEFAULT_EXPECTED_STATUS);
    let initial = map
        .opt("initial", initial_health)?
        .unwrap_or(InitialHealth::Healthy);
    Ok(HealthCheck {
        path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status,
        initial,
    })
}

fn initial_health(node: &Node<'_>) -> Result<InitialHealth> {
    let name = string(node, "healthy or unknown", false)?;
    match name {
        "healthy" => Ok(InitialHealth::Healthy),
        "unknown" => Ok(InitialHealth::Unknown),
        _ => Err(node.error(format!(
            "{name:?} is not an initial state; use healthy (takes traffic at once) or unknown \
             (takes traffic after its first successful probe)"
        ))),
    }
}

fn probe_path(node: &Node<'_>) -> Result<String> {
    let path = string(node, "a URL path such as /health", true)?;
    if !path.starts_with('/') {
        return Err(node.error(format!(
            "{path:?} is not allowed: the health check path must start with /, such as /health"
        )));
    }
    if let Some(bad) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(node.error(format!(
            "{path:?} contains {bad:?}; a URL path may only contain visible ASCII characters \
             (percent-encode the rest)"
        )));
    }
    Ok(path.to_string())
}

fn expected_status(node: &Node<'_>) -> Result<(u16, u16)> {
    let expected = "a status code such as 200 or a range such as \"200-399\"";
    let code = |n: i64| -> Result<u16> {
        if (100..=599).contains(&n) {
            Ok(n as u16)
        } else {
            Err(node.error(format!(
                "{n} is not allowed: status codes are from 100 to 599"
            )))
        }
    };
    match node.value {
        Yaml::Integer(n) => code(*n).map(|c| (c, c)),
        Yaml::String(s) => {
            let malformed = || {
                node.error(format!(
                    "{s:?} is not a status code or range; expected {expected}"
                ))
            };
            let number = |text: &str| text.trim().parse::<i64>().map_err(|_| malformed());
            let (low, high) = match s.split_once('-') {
                Some((low, high)) => (code(number(low)?)?, code(number(high)?)?),
                None => {
                    let c = code(number(s)?)?;
                    (c, c)
                }
            };
            if low > high {
                return Err(node.error(format!(
                    "{s:?} is not allowed: the range is inverted; write the lower code first, \
                     such as \"{high}-{low}\""
                )));
            }
            Ok((low, high))
        }
        _ => Err(node.wrong_type(expected)),
    }
}

fn load_balancing(node: &Node<'_>) -> Result<LoadBalancing> {
    let map = Map::new(node, "the balancing settings", LOAD_BALANCING_KEYS)?;
    let strategy = map.opt("type", strategy)?.unwrap_or(Strategy::RoundRobin);
    let Some(key_node) = map.get("key") else {
        return Ok(strategy.without_key());
    };
    let key = hash_key(&key_node)?;
    match (&strategy, key) {
        (Strategy::ConsistentHash, key) => Ok(LoadBalancing::ConsistentHash(key)),
        (Strategy::IpHash, HashKey::ClientIp) => {
            Ok(LoadBalancing::ConsistentHash(HashKey::ClientIp))
        }
        (Strategy::IpHash, _) => Err(key_node.error(format!(
            "{} is not allowed: ip-hash always hashes the client IP; remove key, or set \
             type: consistent-hash to hash by this key",
            quote_value(key_node.value)
        ))),
        (_, _) => Err(key_node.error(format!(
            "{} is not allowed: key is only used by consistent-hash and ip-hash, not by {}; \
             remove it or set type: consistent-hash",
            quote_value(key_node.value),
            strategy.name()
        ))),
    }
}

/// Strategy names as written, before `key` is combined in.
enum Strategy {
    RoundRobin,
    WeightBased,
    Random,
    LeastRequests,
    PowerOfTwo,
    ConsistentHash,
    IpHash,
    Latency,
}

impl Strategy {
    /// The canonical name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::WeightBased => "weight-based",
            Strategy::Random => "random",
            Strategy::LeastRequests => "least-requests",
            Strategy::PowerOfTwo => "p2c",
            Strategy::ConsistentHash => "consistent-hash",
            Strategy::IpHash => "ip-hash",
            Strategy::Latency => "latency",
        }
    }

    /// The strategy when no `key` is given (hashing strategies hash the client IP).
    fn without_key(self) -> LoadBalancing {
        match self {
            Strategy::RoundRobin => LoadBalancing::RoundRobin,
            Strategy::WeightBased => LoadBalancing::WeightBased,
            Strategy::Random => LoadBalancing::Random,
            Strategy::LeastRequests => LoadBalancing::LeastRequests,
            Strategy::PowerOfTwo => LoadBalancing::PowerOfTwoChoices,
            Strategy::ConsistentHash | Strategy::IpHash => {
                LoadBalancing::ConsistentHash(HashKey::ClientIp)
            }
            Strategy::Latency => LoadBalancing::Latency,
        }
    }
}

fn strategy(node: &Node<'_>) -> Result<Strategy> {
    let name = string(node, &format!("a strategy name: {STRATEGIES}"), false)?;
    // Names are lowercase and matched exactly, except that `_` and `-` are interchangeable.
    let normalized = name.replace('_', "-");
    Ok(match normalized.as_str() {
        "round-robin" | "roundrobin" => Strategy::RoundRobin,
        "weight-based" | "weighted" | "weighted-round-robin" => Strategy::WeightBased,
        "random" => Strategy::Random,
        "least-requests" | "least-request" | "least-connection" | "least-connections"
        | "least-conn" => Strategy::LeastRequests,
        "p2c" | "power-of-two-choices" => Strategy::PowerOfTwo,
        "consistent-hash" | "maglev" => Strategy::ConsistentHash,
        "ip-hash" => Strategy::IpHash,
        "latency" | "ewma" | "peak-ewma" => Strategy::Latency,
        _ => {
            return Err(node.error(format!(
                "{name:?} is not a strategy; use one of: {STRATEGIES}"
            )));
        }
    })
}

fn hash_key(node: &Node<'_>) -> Result<HashKey> {
    let text = string(node, &format!("a hash key: {HASH_KEYS}"), false)?;
    let bad_name = |what: &str, example: &str| {
        node.error(format!(
            "{text:?} needs a {what} name after the colon, such as {what}:{example}; a name \
             is letters, digits and symbols such as '-' and '_', without spaces or separators \
             such as ':', ';' or '='"
        ))
    };
    // Header and cookie names are HTTP tokens (RFC 9110 §5.6.2).
    let is_token = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match text.split_once(':') {
        None if text == "client-ip" || text == "ip" => Ok(HashKey::ClientIp),
        None if text == "path" => Ok(HashKey::Path),
        Some(("header", name)) => {
            let name = name.trim().to_ascii_lowercase();
            if !is_token(&name) {
                return Err(bad_name("header", "x-user-id"));
            }
            Ok(HashKey::Header(name))
        }
        Some(("cookie", name)) => {
            let name = name.trim();
            if !is_token(name) {
                return Err(bad_name("cookie", "session"));
            }
            Ok(HashKey::Cookie(name.to_owned()))
        }
        _ => Err(node.error(format!(
            "{text:?} is not a hash key; use one of: {HASH_KEYS}"
        ))),
    }
}

fn pools(node: &Node<'_>) -> Result<Vec<PoolConfig>> {
    let Yaml::Array(items) = node.value else {
        return Err(node.wrong_type("a list of pools"));
    };
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let map = Map::new(
            &Node::new(format!("{}[{i}]", node.path), item),
            "a pool",
            POOL_KEYS,
        )?;
        let name_node = map.require("name", "a pool name such as api")?;
        let name = string(&name_node, "a pool name such as api", true)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(name_node.error(format!(
                "{name:?} is not allowed: pool names use letters, digits, '_', '.' and '-'"
            )));
        }
        if name == DEFAULT_POOL {
            return Err(name_node.error(format!(
                "\"{DEFAULT_POOL}\" is the pool of the top-level backends; choose another name"
            )));
        }
        if let Some(first) = pools.iter().position(|p| p.name == name) {
            return Err(name_node.error(format!(
                "{name:?} is used twice (also {}[{first}].name); pool names must be unique",
                node.path
            )));
        }
        let backends = backends(&map.require("backends", "a list of backends")?)?;
        let load_balancing = match map.get("load_balancing") {
            Some(node) => load_balancing(&node)?,
            None => LoadBalancing::RoundRobin,
        };
        pools.push(PoolConfig {
            name: name.to_owned(),
            backends,
            load_balancing,
        });
    }
    Ok(pools)
}

/// Backend ids are unique across the default pool and every named pool (metrics and logs name
/// backends by id).
fn check_backend_ids_across_pools(default: &[BackendConfig], pools: &[PoolConfig]) -> Result<()> {
    let mut seen: HashMap<&str, String> = HashMap::new();
    let all = default
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("backends[{i}].id"), b))
        .chain(pools.iter().enumerate().flat_map(|(p, pool)| {
            pool.backends
                .iter()
                .enumerate()
                .map(move |(i, b)| (format!("pools[{p}].backends[{i}].id"), b))
        }));
    for (path, b) in all {
        if let Some(first) = seen.insert(&b.id, path.clone()) {
            return Err(ConfigError::new(
                path,
                format!(
                    "{:?} is used twice (also {first}); backend ids must be unique across all pools",
                    b.id
                ),
            ));
        }
    }
    Ok(())
}

fn routes(node: &Node<'_>, pools: &[PoolConfig]) -> Result<Vec<Route>> {
    let Yaml::Array(items) = node.value else {
        return Err(node.wrong_type("a list of routes"));
    };
    let mut routes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let map = Map::new(
            &Node::new(format!("{}[{i}]", node.path), item),
            "a route",
            ROUTE_KEYS,
        )?;
        let mut route = Route::default();
        if let Some(m) = map.get("match") {
            let m = Map::new(&m, "a match", MATCH_KEYS)?;
            if let Some(host) = m.get("host") {
                route.host = Some(host_pattern(&host)?);
            }
            if let Some(prefix) = m.get("path_prefix") {
                route.path_prefix = Some(path_prefix(&prefix)?);
            }
            if let Some(headers) = m.get("headers") {
                let Yaml::Hash(pairs) = headers.value else {
                    return Err(headers.wrong_type(
                        "a mapping of header names to values, such as { x-canary: \"1\" }",
                    ));
                };
                for (name, value) in pairs {
                    let name = header_name(&headers, name, HeaderUse::Match)?;
                    let value_node = Node::new(child_path(&headers.path, &name), value);
                    if route.headers.iter().any(|(n, _)| *n == name) {
                        return Err(repeated_header(&value_node, &name));
                    }
                    let value = header_value(&value_node)?;
                    route.headers.push((name, value));
                }
            }
        }
        let pool_node = map.require("pool", "the name of a pool, or default")?;
        let pool = string(&pool_node, "the name of a pool, or default", true)?;
        if pool != DEFAULT_POOL && !pools.iter().any(|p| p.name == pool) {
            let known: Vec<&str> = std::iter::once(DEFAULT_POOL)
                .chain(pools.iter().map(|p| p.name.as_str()))
                .collect();
            return Err(pool_node.error(format!(
                "{pool:?} is not a pool; use one of: {}",
                known.join(", ")
            )));
        }
        route.pool = pool.to_owned();
        if let Some(strip) = map.get("strip_prefix") {
            route.strip_prefix = Some(path_prefix(&strip)?);
        }
        if let Some(edits) = map.get("request_headers") {
            route.request_headers = header_edits(&edits)?;
        }
        if let Some(edits) = map.get("response_headers") {
            route.response_headers = header_edits(&edits)?;
        }
        routes.push(route);
    }
    Ok(routes)
}

/// `api.example.com` or `*.example.com`: dot-separated labels of letters, digits and `-`,
/// lowercased (hosts are compared case-insensitively).
fn host_pattern(node: &Node<'_>) -> Result<String> {
    let allowed = "expected a host name such as api.example.com, or *.example.com for any of its \
                   subdomains: letters, digits, '-' and '.', without scheme, port or path";
    let text = string(node, "a host name such as api.example.com", false)?;
    let bare = text.strip_prefix("*.").unwrap_or(text);
    let valid = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        let hint = if text.contains("://") {
            " (remove the scheme)"
        } else if text.contains('/') {
            " (remove the path; match paths with path_prefix)"
        } else if text.contains(':') {
            " (remove the port; hosts are matched without it)"
        } else {
            ""
        };
        return Err(node.error(format!("{text:?} is not a host pattern{hint}; {allowed}")));
    }
    Ok(text.to_ascii_lowercase())
}

fn path_prefix(node: &Node<'_>) -> Result<String> {
    let text = string(node, "a path prefix such as /api/", true)?;
    if !text.starts_with('/') || text.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(node.error(format!(
            "{text:?} is not a path prefix; it must start with / and contain only visible ASCII"
        )));
    }
    Ok(text.to_owned())
}

/// What a header name in the configuration is used for (its error messages differ).
#[derive(Clone, Copy)]
enum HeaderUse {
    /// `match.headers`.
    Match,
    /// `request_headers` / `response_headers`.
    Edit,
}

/// Fields that describe the connection or the message framing, or that Spooky writes itself:
/// routes neither match nor edit them.
const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// A header field name (an HTTP token), lowercased. `at` is where errors are reported.
fn header_name(at: &Node<'_>, name: &Yaml, purpose: HeaderUse) -> Result<String> {
    const TOKEN: &str =
        "header names use letters, digits and the symbols !#$%&'*+-.^_`|~ (no spaces, no ':')";
    let name = match name {
        Yaml::String(name) => name,
        Yaml::Integer(_) | Yaml::Real(_) | Yaml::Boolean(_) => {
            return Err(at.error(format!(
                "{} is not a header name; put it in quotes to use it as text",
                quote_value(name)
            )));
        }
        other => {
            return Err(at.error(format!("{} is not a header name; {TOKEN}", describe(other))));
        }
    };
    let lower = name.to_ascii_lowercase();
    let token = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(at.error(format!("{name:?} is not a valid header name; {TOKEN}")));
    }
    if MANAGED_HEADERS.contains(&lower.as_str()) {
        let managed = MANAGED_HEADERS.join(", ");
        return Err(at.error(match purpose {
            HeaderUse::Match if lower == "host" => format!(
                "{name:?} cannot be matched as a header; use match.host (it covers both \
                 :authority and host)"
            ),
            HeaderUse::Match => format!(
                "{name:?} cannot be matched: Spooky manages it (connection-specific or \
                 framing); routes cannot match {managed}"
            ),
            HeaderUse::Edit => format!(
                "{name:?} cannot be changed: Spooky manages it (connection-specific or \
                 framing); routes cannot set or remove {managed}"
            ),
        }));
    }
    Ok(lower)
}

/// A header field value: text without control characters (tab excepted) and without leading
/// or trailing spaces or tabs, as requests must have them (RFC 9110 §5.5).
fn header_value(node: &Node<'_>) -> Result<String> {
    let value = string(node, "a header value", true)?;
    let bytes = value.as_bytes();
    let control = bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
    let padded =
        matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t'));
    if control || padded {
        return Err(node.error(format!(
            "{value:?} is not a valid header value; header values must not contain control \
             characters (tab excepted) or start or end with a space or tab"
        )));
    }
    Ok(value.to_owned())
}

/// A header given twice in one mapping, differing only in case.
fn repeated_header(node: &Node<'_>, name: &str) -> ConfigError {
    node.error(format!(
        "{name:?} is given twice (header names are case-insensitive); give each header once"
    ))
}

fn header_edits(node: &Node<'_>) -> Result<HeaderEdits> {
    let map = Map::new(node, "header changes", EDIT_KEYS)?;
    let mut edits = HeaderEdits::default();
    if let Some(set) = map.get("set") {
        let Yaml::Hash(pairs) = set.value else {
            return Err(
                set.wrong_type("a mapping of header names to values, such as { x-env: prod }")
            );
        };
        for (name, value) in pairs {
            let name = header_name(&set, name, HeaderUse::Edit)?;
            let value_node = Node::new(child_path(&set.path, &name), value);
            if edits.set.iter().any(|(n, _)| *n == name) {
                return Err(repeated_header(&value_node, &name));
            }
            let value = header_value(&value_node)?;
            edits.set.push((name, value));
        }
    }
    if let Some(remove) = map.get("remove") {
        let Yaml::Array(names) = remove.value else {
            return Err(remove.wrong_type("a list of header names, such as [x-debug]"));
        };
        for (i, name) in names.iter().enumerate() {
            let item = Node::new(format!("{}[{i}]", remove.path), name);
            edits
                .remove
                .push(header_name(&item, name, HeaderUse::Edit)?);
        }
    }
    Ok(edits)
}

fn admin(node: &Node<'_>) -> Result<AdminConfig> {
    let map = Map::new(node, "the admin endpoint", ADMIN_KEYS)?;
    let address = map.require("address", "an IP:port such as 127.0.0.1:9901")?;
    let text = string(&address, "an IP:port such as 127.0.0.1:9901", false)?;
    let address = text.parse::<SocketAddr>().map_err(|_| {
        address.error(format!(
            "{text:?} is not a socket address; expected IP:port such as 127.0.0.1:9901 or [::1]:9901"
        ))
    })?;
    Ok(AdminConfig { address })
}

fn circuit_breaker(node: &Node<'_>) -> Result<CircuitBreaker> {
    let map = Map::new(node, "the circuit breaker", CIRCUIT_BREAKER_KEYS)?;
    let defaults = CircuitBreaker::default();
    Ok(CircuitBreaker {
        max_connections: map
            .opt("max_connections", |n| u32_in(n, 1, u32::MAX))?
            .unwrap_or(defaults.max_connections),
        max_pending_requests: map
            .opt("max_pending_requests", |n| u32_in(n, 0, u32::MAX))?
            .unwrap_or(defaults.max_pending_requests),
        max_requests: map
            .opt("max_requests", |n| u32_in(n, 1, u32::MAX))?
            .unwrap_or(defaults.max_requests),
    })
}

fn outlier_detection(node: &Node<'_>) -> Result<OutlierDetection> {
    let map = Map::new(node, "outlier detection", OUTLIER_KEYS)?;
    let defaults = OutlierDetection::default();
    let base = map
        .opt("base_ejection_time", positive_duration)?
        .unwrap_or(defaults.base_ejection_time);
    let max = match map.get("max_ejection_time") {
        Some(node) => {
            let max = positive_duration(&node)?;
            if max < base {
                return Err(node.error(format!(
                    "{} is not allowed: max_ejection_time must be at least base_ejection_time ({})",
                    quote_value(node.value),
                    format_duration(base)
                )));
            }
            max
        }
        None => defaults.max_ejection_time.max(base),
    };
    Ok(OutlierDetection {
        enabled: map.opt("enabled", boolean)?.unwrap_or(defaults.enabled),
        consecutive_5xx: map
            .opt("consecutive_5xx", |n| u32_in(n, 0, 1_000_000))?
            .unwrap_or(defaults.consecutive_5xx),
        consecutive_failures: map
            .opt("consecutive_failures", |n| u32_in(n, 0, 1_000_000))?
            .unwrap_or(defaults.consecutive_failures),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: map
            .opt("max_ejection_percent", |n| u32_in(n, 0, 100))?
            .unwrap_or(defaults.max_ejection_percent),
    })
}

fn retries(node: &Node<'_>) -> Result<RetryPolicy> {
    let map = Map::new(node, "the retry policy", RETRY_KEYS)?;
    let defaults = RetryPolicy::default();
    let mut policy = RetryPolicy {
        max_retries: map
            .opt("max_retries", |n| u32_in(n, 0, 10))?
            .unwrap_or(defaults.max_retries),
        per_try_timeout: map.opt("per_try_timeout", positive_duration)?,
        budget_percent: map
            .opt("budget_percent", |n| u32_in(n, 0, 100))?
            .unwrap_or(defaults.budget_percent),
        min_retries_in_flight: map
            .opt("min_retries_in_flight", |n| u32_in(n, 0, 1_000_000))?
            .unwrap_or(defaults.min_retries_in_flight),
        ..defaults
    };
    if let Some(node) = map.get("retry_on") {
        let Yaml::Array(items) = node.value else {
            return Err(node.wrong_type("a list such as [connect-failure, reset, 503]"));
        };
        policy.on_connect_failure = false;
        policy.on_reset = false;
        policy.on_statuses.clear();
        for (i, item) in items.iter().enumerate() {
            let item = Node::new(format!("{}[{i}]", node.path), item);
            match item.value {
                Yaml::Integer(code) if (500..=599).contains(code) => {
                    policy.on_statuses.push(*code as u16)
                }
                Yaml::String(s) if s == "connect-failure" => policy.on_connect_failure = true,
                Yaml::String(s) if s == "reset" => policy.on_reset = true,
                Yaml::String(s) if s.trim().parse::<i64>().is_ok() => {
                    return Err(item.error(format!(
                        "{s:?} is not a retry condition; write status codes without quotes, \
                         such as 503"
                    )));
                }
                _ => {
                    return Err(item.error(format!(
                        "{} is not a retry condition; use connect-failure, reset (which also \
                         covers timeouts), or a 5xx status code from 500 to 599 such as 503",
                        quote_value(item.value)
                    )));
                }
            }
        }
    }
    Ok(policy)
}

fn log(node: &Node<'_>) -> Result<LogConfig> {
    let map = Map::new(node, "the log settings", LOG_KEYS)?;
    let level = map.opt("level", log_level)?.unwrap_or(LogLevel::Info);
    Ok(LogConfig { level })
}

fn log_level(node: &Node<'_>) -> Result<LogLevel> {
    let allowed = "trace, debug, info, warn, error";
    let name = string(node, &format!("a log level: {allowed}"), false)?;
    match name {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(node.error(format!(
            "{name:?} is not a log level; use one of: {allowed}"
        ))),
    }
}

fn timeouts(node: &Node<'_>) -> Result<Timeouts> {
    let map = Map::new(node, "the timeouts", TIMEOUT_KEYS)?;
    let defaults = Timeouts::default();
    let read = |key: &str, default: Duration| -> Result<Duration> {
        Ok(map.opt(key, positive_duration)?.unwrap_or(default))
    };
    Ok(Timeouts {
        connect: read("connect", defaults.connect)?,
        response_headers: read("response_headers", defaults.response_headers)?,
        request: read("request", defaults.request)?,
        upstream_idle: read("upstream_idle", defaults.upstream_idle)?,
        client_idle: read("client_idle", defaults.client_idle)?,
        drain: read("drain", defaults.drain)?,
    })
}

fn limits(node: &Node<'_>) -> Result<Limits> {
    let map = Map::new(node, "the limits", LIMIT_KEYS)?;
    let defaults = Limits::default();
    let max_request_body = match map.get("max_request_body") {
        Some(node) if matches!(node.value, Yaml::String(s) if s == "unlimited") => None,
        Some(node) => Some(size(&node, 0, u64::MAX)?),
        None => defaults.max_request_body,
    };
    Ok(Limits {
        max_concurrent_streams: map
            .opt("max_concurrent_streams", |n| u32_in(n, 1, 10_000))?
            .unwrap_or(defaults.max_concurrent_streams),
        // The range check keeps the value well inside u32.
        max_header_size: map
            .opt("max_header_size", |n| size(n, KIB, MIB))?
            .map_or(defaults.max_header_size, |bytes| bytes as u32),
        max_request_body,
        max_connections: map
            .opt("max_connections", |n| u32_in(n, 1, u32::MAX))?
            .unwrap_or(defaults.max_connections),
    })
}

fn runtime(node: &Node<'_>) -> Result<RuntimeConfig> {
    let map = Map::new(node, "the runtime settings", RUNTIME_KEYS)?;
    let defaults = RuntimeConfig::default();
    let kind = map.opt("kind", runtime_kind)?.unwrap_or(defaults.kind);
    let shards = map
        .opt("shards", |n| u16_in(n, 1, 1024))?
        .or(defaults.shards);
    Ok(RuntimeConfig { kind, shards })
}

fn runtime_kind(node: &Node<'_>) -> Result<RuntimeKind> {
    let name = string(node, "a runtime: tokio or mio", false)?;
    match name {
        "tokio" => Ok(RuntimeKind::Tokio),
        "mio" => Ok(RuntimeKind::Mio),
        _ => Err(node.error(format!("{name:?} is not a runtime; use one of: tokio, mio"))),
    }
}
