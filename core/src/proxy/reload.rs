//! Applying a new configuration without dropping connections.
//!
//! Client connections and requests in flight are untouched. New connections get the new
//! listener certificate and limits. Backends are matched by id: one whose address,
//! protocol and TLS settings are unchanged keeps its connections, health and outlier state
//! (weight and health check may change); one that is gone, or changed where it listens, is
//! retired (it finishes what it has and takes nothing new) and a changed one is added anew.
//! Timeouts, limits, retries, outlier detection, circuit breakers and the balancing
//! strategy apply to the next request.

use std::sync::Arc;

use super::{Backend, Core, TimerKey, listener_config};
use crate::config::{BackendConfig, Config};
use crate::quic::crypto::{self, TlsMaterials};

impl Core {
    pub(super) fn reload(&mut self, new: Arc<Config>, tls: TlsMaterials) {
        if new.listen.socket_addr() != self.config.listen.socket_addr() {
            tracing::warn!(
                current = %self.config.listen.socket_addr(),
                configured = %new.listen.socket_addr(),
                "the listen address cannot change without a restart; keeping the current one"
            );
        }
        match crypto::server_crypto(&tls.server, self.crypto_mode) {
            Ok(server_crypto) => {
                let config = listener_config(&new, server_crypto, self.crypto_mode, &mut self.rng);
                self.client_endpoint
                    .set_server_config(Some(Arc::new(config)));
            }
            Err(reason) => {
                tracing::error!(%reason, "new listener certificate unusable; keeping the current one")
            }
        }

        // Match every backend of every pool by id; the pools are rebuilt around them.
        let mut keep = vec![false; self.backends.len()];
        let (mut added, mut retired) = (0, 0);
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut wanted_backends = new.all_backends().enumerate();
        for (_, _, count) in super::pool::pool_layout(&new) {
            let mut list = Vec::with_capacity(count);
            for (i, wanted) in wanted_backends.by_ref().take(count) {
                let current = self
                    .backends
                    .iter()
                    .position(|b| !b.retired && b.config.id == wanted.id);
                let b = match current {
                    Some(b) if same_endpoint(&self.backends[b].config, wanted) => {
                        self.update_backend(b, wanted);
                        b
                    }
                    _ => {
                        let verify = tls.backends.get(i).and_then(Option::as_ref);
                        match Backend::new(wanted, verify, &new, self.crypto_mode, &mut self.rng) {
                            Ok(backend) => {
                                self.backends.push(backend);
                                keep.push(false);
                                added += 1;
                                self.backends.len() - 1
                            }
                            Err(error) => {
                                tracing::error!(backend = %wanted.id, %error, "cannot add backend");
                                continue;
                            }
                        }
                    }
                };
                keep[b] = true;
                list.push(b);
            }
            members.push(list);
        }
        for (b, kept) in keep.into_iter().enumerate() {
            if !kept && !self.backends[b].retired {
                self.retire_backend(b);
                retired += 1;
            }
        }

        drop(wanted_backends);
        self.config = new;
        self.build_pools(members);
        for b in 0..self.backends.len() {
            let probing =
                self.backends[b].config.health_check.is_some() && !self.backends[b].retired;
            if probing && self.timers_probe_missing(b) {
                self.timers.set(TimerKey::Probe(b), Some(self.now));
            }
        }
        tracing::info!(
            backends = self.backends.iter().filter(|b| !b.retired).count(),
            pools = self.pools.len(),
            routes = self.config.routes.len(),
            added,
            retired,
            "configuration reloaded"
        );
    }

    /// A kept backend takes its new weight and health check.
    fn update_backend(&mut self, b: usize, wanted: &BackendConfig) {
        let backend = &mut self.backends[b];
        if backend.config.health_check != wanted.health_check {
            match &wanted.health_check {
                // Probe with the new settings right away.
                Some(_) => self.timers.set(TimerKey::Probe(b), Some(self.now)),
                // No more probes: nothing says it is unhealthy any more.
                None => {
                    self.timers.set(TimerKey::Probe(b), None);
                    backend.health = super::health::Health::new(None);
                }
            }
        }
        backend.config = wanted.clone();
    }

    /// Takes a backend out for good: no new requests, no probes; idle connections close now,
    /// busy ones when their requests are done.
    fn retire_backend(&mut self, b: usize) {
        let backend = &mut self.backends[b];
        backend.retired = true;
        tracing::info!(backend = %backend.id, "backend removed by reload; finishing its requests");
        self.timers.set(TimerKey::Probe(b), None);
        self.timers.set(TimerKey::Uneject(b), None);
        let idle: Vec<_> = self.backends[b].tcp_idle.drain(..).collect();
        for tcp in idle {
            self.close_tcp(tcp);
        }
        for h in self.backends[b].quic_conns.clone() {
            self.close_idle_backend_conn(h);
        }
    }

    fn timers_probe_missing(&self, b: usize) -> bool {
        !self.timers.contains(TimerKey::Probe(b))
    }
}

/// True if two configurations of a backend reach it the same way (so its connections stay).
fn same_endpoint(a: &BackendConfig, b: &BackendConfig) -> bool {
    a.address == b.address && a.protocol == b.protocol && a.tls == b.tls
}
