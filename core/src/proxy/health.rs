//! Health: active probes, passive outlier detection, and what a failed attempt leads to
//! (a retry elsewhere, or an error for the client).
//!
//! A probe is an exchange without a client: it goes through the same dispatch and backend
//! code as real requests (so it exercises what real requests need: a connection, TLS, an
//! answer), and its result updates the backend's health instead of reaching anyone.

use std::time::{Duration, Instant};

use super::exchange::{Exchange, Leg, RespState};
use super::{Core, ExId, TimerKey};
use crate::config::{BackendProtocol, InitialHealth};
use crate::fields::FieldSection;
use crate::h3::Code;
use crate::h3::message;

/// A backend's health as active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HealthState {
    Healthy,
    Unhealthy,
    /// No probe has answered yet and the config said to wait for one.
    Unknown,
}

#[derive(Debug)]
pub(super) struct Health {
    pub(super) state: HealthState,
    successes: u32,
    failures: u32,
    /// The probe in flight.
    probe: Option<ExId>,
}

impl Health {
    pub(super) fn new(initial: Option<InitialHealth>) -> Health {
        Health {
            state: match initial {
                Some(InitialHealth::Unknown) => HealthState::Unknown,
                _ => HealthState::Healthy,
            },
            successes: 0,
            failures: 0,
            probe: None,
        }
    }
}

/// Passive outlier detection state.
#[derive(Debug, Default)]
pub(super) struct Outlier {
    consecutive_5xx: u32,
    consecutive_failures: u32,
    pub(super) ejected_until: Option<Instant>,
    ejections: u32,
    last_ejection_end: Option<Instant>,
}

/// What went wrong with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection could be made; nothing was sent.
    Connect,
    /// Connecting (or waiting for a connection) took too long; nothing was sent.
    ConnectTimeout,
    /// The connection failed or the stream was reset before a response arrived.
    Reset,
    /// No response headers within the per-try timeout.
    Timeout,
    /// The backend answered with a status the retry policy retries.
    Status(u16),
}

impl Core {
    pub(super) fn refresh_availability(&mut self, b: usize) {
        let available = self.backends[b].takes_traffic();
        self.set_backend_available(b, available);
    }

    /// Schedules the first probe of every backend with a health check.
    pub(super) fn schedule_initial_probes(&mut self) {
        for b in 0..self.backends.len() {
            if let Some(hc) = &self.backends[b].config.health_check {
                // Spread the first probes over a tenth of the interval.
                let spread = hc.interval.as_nanos() as u64 / 10;
                let delay = Duration::from_nanos(self.rng.below(spread.max(1)));
                self.timers.set(TimerKey::Probe(b), Some(self.now + delay));
            }
            self.refresh_availability(b);
        }
    }

    /// Time for backend `b`'s next probe.
    pub(super) fn on_probe_timer(&mut self, b: usize) {
        let Some(hc) = self.backends[b].config.health_check.clone() else {
            return;
        };
        // Next probe: one interval from now, give or take a tenth (so probes of many
        // backends and shards do not march in step).
        let tenth = hc.interval.as_nanos() as u64 / 10;
        let jitter = self.rng.below(2 * tenth.max(1));
        let next =
            self.now + hc.interval - Duration::from_nanos(tenth) + Duration::from_nanos(jitter);
        self.timers.set(TimerKey::Probe(b), Some(next));
        if self.draining
            || self.backends[b]
                .health
                .probe
                .is_some_and(|p| self.exchanges.contains(p))
        {
            return;
        }
        let backend = &self.backends[b];
        let scheme: &[u8] = match backend.protocol {
            BackendProtocol::Http1 => b"http",
            BackendProtocol::Http3 => b"https",
        };
        let authority = backend.server_name.clone();
        let fields: FieldSection = [
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", scheme),
            (b":authority", authority.as_bytes()),
            (b":path", hc.path.as_bytes()),
            (b"user-agent", b"spooky-health-check"),
        ]
        .into_iter()
        .collect();
        let Ok(head) = message::validate_request(fields) else {
            tracing::warn!(backend = %backend.id, path = %hc.path, "health check path is not a valid request path");
            return;
        };
        let mut e = Exchange::new(
            usize::MAX,
            quinn_proto::StreamId::from(quinn_proto::VarInt::from_u32(0)),
            backend.address,
            self.now,
            u64::from(self.config.limits.max_header_size),
        );
        e.probe = Some(b);
        e.head = Some(Box::new(head));
        e.req = super::exchange::ReqState::Complete;
        e.replayable = true;
        let ex = self.exchanges.insert(e);
        self.backends[b].health.probe = Some(ex);
        self.exchanges[ex].backend = Some(b);
        self.add_in_flight(b, 1);
        self.set_exchange_deadline(ex, self.now + hc.timeout);
        self.attach_to_backend(ex, b);
    }

    /// A probe ended: `status` is the final status if one arrived and the response completed.
    pub(super) fn on_probe_done(&mut self, b: usize, ex: ExId, status: Option<u16>) {
        let Some(hc) = self.backends[b].config.health_check.clone() else {
            return;
        };
        if self.backends[b].health.probe == Some(ex) {
            self.backends[b].health.probe = None;
        }
        let ok = status.is_some_and(|s| (hc.expected_status.0..=hc.expected_status.1).contains(&s));
        self.metrics.health_probes += 1;
        if !ok {
            self.metrics.health_probe_failures += 1;
        }
        let backend = &mut self.backends[b];
        let health = &mut backend.health;
        let before = health.state;
        if ok {
            health.successes += 1;
            health.failures = 0;
            let enough =
                health.state == HealthState::Unknown || health.successes >= hc.healthy_threshold;
            if health.state != HealthState::Healthy && enough {
                health.state = HealthState::Healthy;
            }
        } else {
            health.failures += 1;
            health.successes = 0;
            let enough =
                health.state == HealthState::Unknown || health.failures >= hc.unhealthy_threshold;
            if health.state != HealthState::Unhealthy && enough {
                health.state = HealthState::Unhealthy;
            }
        }
        if health.state != before {
            if health.state == HealthState::Healthy && backend.outlier.ejected_until.is_some() {
                // Probes saw it fail and now see it recover (a restart, say): the ejection
                // was about the failure that is over.
                backend.outlier.ejected_until = None;
                backend.outlier.last_ejection_end = Some(self.now);
                self.timers.set(TimerKey::Uneject(b), None);
            }
            let backend = &self.backends[b];
            match backend.health.state {
                HealthState::Healthy => tracing::info!(backend = %backend.id, "backend is healthy"),
                HealthState::Unhealthy => {
                    tracing::warn!(backend = %backend.id, status = ?status, "backend is unhealthy")
                }
                HealthState::Unknown => {}
            }
            self.metrics.health_transitions += 1;
            self.refresh_availability(b);
        }
    }

    /// A response head from backend `b` (not a probe): feeds outlier detection and latency.
    pub(super) fn on_backend_response(&mut self, b: usize, status: u16, attempt_started: Instant) {
        let elapsed = self.now.saturating_duration_since(attempt_started);
        let backend = &mut self.backends[b];
        backend
            .latency
            .observe(self.now, elapsed.as_secs_f64() * 1e6);
        let latency = backend.latency.value_us();
        self.set_backend_latency(b, latency);
        let outlier = &mut self.backends[b].outlier;
        outlier.consecutive_failures = 0;
        if status >= 500 {
            outlier.consecutive_5xx += 1;
            let limit = self.config.outlier_detection.consecutive_5xx;
            if limit > 0 && outlier.consecutive_5xx >= limit {
                self.eject(b, "consecutive 5xx responses");
            }
        } else {
            outlier.consecutive_5xx = 0;
        }
    }

    /// A failed attempt at backend `b` (connect failure, reset, timeout): feeds outlier
    /// detection.
    fn on_backend_failure(&mut self, b: usize) {
        let outlier = &mut self.backends[b].outlier;
        outlier.consecutive_failures += 1;
        let limit = self.config.outlier_detection.consecutive_failures;
        if limit > 0 && outlier.consecutive_failures >= limit {
            self.eject(b, "consecutive connection failures");
        }
    }

    fn eject(&mut self, b: usize, why: &str) {
        let policy = &self.config.outlier_detection;
        if !policy.enabled || self.backends[b].outlier.ejected_until.is_some() {
            return;
        }
        // Never eject more than the configured share of the backend's own pool (a retired
        // backend has none and takes no new requests, so ejecting it changes nothing).
        let Some(pool) = self.pools.get(self.backends[b].pool) else {
            return;
        };
        let ejected = pool
            .members
            .iter()
            .filter(|&&m| self.backends[m].outlier.ejected_until.is_some())
            .count();
        if (ejected + 1) * 100 > policy.max_ejection_percent as usize * pool.members.len() {
            tracing::debug!(backend = %self.backends[b].id, "not ejecting: too much of the pool is ejected");
            return;
        }
        let outlier = &mut self.backends[b].outlier;
        // A backend that stayed in for a whole maximum ejection time starts over.
        if outlier
            .last_ejection_end
            .is_some_and(|end| self.now.saturating_duration_since(end) >= policy.max_ejection_time)
        {
            outlier.ejections = 0;
        }
        let factor = 1u32 << outlier.ejections.min(16);
        let length = (policy.base_ejection_time * factor).min(policy.max_ejection_time);
        outlier.ejections += 1;
        outlier.ejected_until = Some(self.now + length);
        outlier.consecutive_5xx = 0;
        outlier.consecutive_failures = 0;
        self.metrics.ejections += 1;
        tracing::warn!(backend = %self.backends[b].id, reason = why, seconds = length.as_secs_f64(), "ejecting backend");
        self.timers
            .set(TimerKey::Uneject(b), Some(self.now + length));
        self.refresh_availability(b);
    }

    pub(super) fn on_uneject_timer(&mut self, b: usize) {
        let outlier = &mut self.backends[b].outlier;
        if outlier.ejected_until.take().is_some() {
            outlier.last_ejection_end = Some(self.now);
            tracing::info!(backend = %self.backends[b].id, "ejection over; backend back in rotation");
            self.refresh_availability(b);
        }
    }

    /// An attempt failed before a response reached the client: retry elsewhere if the policy
    /// and the request allow it, otherwise answer with 502/504 (or pass on the status).
    /// Returns true if the exchange was handed to another attempt.
    pub(super) fn attempt_failed(&mut self, ex: ExId, failure: Failure) -> bool {
        let Some(e) = self.exchanges.get(ex) else {
            return false;
        };
        let Some(b) = e.backend else {
            return false;
        };
        if let Some(probe_backend) = e.probe {
            // Probes are never retried; the health state machine counts the failure.
            self.on_probe_done(probe_backend, ex, None);
            self.abort_exchange(ex, None, Code::REQUEST_CANCELLED);
            return false;
        }
        if !matches!(failure, Failure::Status(_)) {
            self.on_backend_failure(b);
        }
        if self.may_retry(ex, failure) {
            self.metrics.retries += 1;
            tracing::debug!(backend = %self.backends[b].id, ?failure, "retrying on another backend");
            self.release_backend(ex, Code::REQUEST_CANCELLED);
            let e = &mut self.exchanges[ex];
            e.leg = Leg::Unassigned;
            e.to_backend.clear();
            e.end_queued = false;
            e.request_sent = false;
            e.attempts += 1;
            e.tried.push(b);
            e.backend = None;
            if !e.retrying {
                e.retrying = true;
                self.retries_in_flight += 1;
            }
            self.add_in_flight(b, -1);
            self.dispatch(ex);
            return true;
        }
        match failure {
            Failure::Connect => {
                self.metrics.upstream_failures += 1;
                self.respond_error(ex, 502, "cannot connect to backend");
            }
            Failure::Reset => {
                self.metrics.upstream_failures += 1;
                self.respond_error(ex, 502, "backend failed before responding");
            }
            Failure::Timeout => {
                self.metrics.upstream_timeouts += 1;
                self.respond_error(ex, 504, "upstream timed out");
            }
            Failure::ConnectTimeout => {
                self.metrics.upstream_timeouts += 1;
                self.respond_error(ex, 504, "timed out connecting to backend");
            }
            // The caller forwards the response as it is.
            Failure::Status(_) => {}
        }
        false
    }

    fn may_retry(&self, ex: ExId, failure: Failure) -> bool {
        let policy = &self.config.retries;
        let e = &self.exchanges[ex];
        if e.attempts >= policy.max_retries || e.resp != RespState::AwaitHead || e.client_done {
            return false;
        }
        let condition = match failure {
            Failure::Connect | Failure::ConnectTimeout => policy.on_connect_failure,
            Failure::Reset | Failure::Timeout => policy.on_reset,
            Failure::Status(s) => policy.on_statuses.contains(&s),
        };
        // Safe to repeat: nothing of the body is gone (we still hold what we read), and
        // either nothing reached the backend or the method is idempotent.
        let idempotent = e.head.as_ref().is_some_and(|h| h.method.is_idempotent());
        let nothing_sent = matches!(failure, Failure::Connect | Failure::ConnectTimeout);
        if !condition || e.body_forwarded || !(nothing_sent || idempotent) {
            return false;
        }
        if self.now >= e.started + self.config.timeouts.request {
            return false;
        }
        // The budget: retries in flight are a bounded share of all requests in flight.
        let in_flight = self.exchanges.len() as u64;
        let allowed = (in_flight * u64::from(policy.budget_percent) / 100)
            .max(u64::from(policy.min_retries_in_flight));
        let extra = u64::from(!e.retrying);
        u64::from(self.retries_in_flight) + extra <= allowed
    }

    /// Whether a response with this status from the backend should be retried instead of
    /// forwarded (only decided, not done).
    pub(super) fn retry_status(&self, ex: ExId, status: u16) -> bool {
        self.config.retries.on_statuses.contains(&status)
            && self.exchanges.get(ex).is_some_and(|e| e.probe.is_none())
            && self.may_retry(ex, Failure::Status(status))
    }

    /// A final response head arrived from the backend. Returns false if the attempt was
    /// retried instead (the response is discarded).
    pub(super) fn final_response_head(&mut self, ex: ExId, status: u16) -> bool {
        let Some(e) = self.exchanges.get(ex) else {
            return false;
        };
        let Some(b) = e.backend else {
            return true;
        };
        if e.probe.is_some() {
            return true;
        }
        let started = e.attempt_started;
        self.on_backend_response(b, status, started);
        if self.retry_status(ex, status) {
            return !self.attempt_failed(ex, Failure::Status(status));
        }
        true
    }

    /// A probe exchange is being removed.
    pub(super) fn probe_removed(&mut self, e: &Exchange, ex: ExId) {
        if let Some(b) = e.probe {
            let status = (e.resp == RespState::Complete).then_some(e.status);
            if self.backends[b].health.probe == Some(ex) {
                self.on_probe_done(b, ex, status);
            }
        }
    }
}
