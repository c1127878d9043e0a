//! How shards and the [`Handle`](crate::Handle) reach a shard: two queues and a `mio::Waker`.
//!
//! Each shard owns the receiving ends; every shard (and the handle) holds the shard's
//! [`Mailbox`]. Both queues are std channels, which are lock-free; the `notified` flag makes a
//! burst of messages cost one wake-up (one `eventfd` write) instead of one per message.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use bytes::BytesMut;
use spooky_core::metrics::Metrics;
use spooky_core::{BackendStatus, EcnCodepoint};

/// Datagrams waiting for a shard from other shards, at most; more are dropped like any UDP
/// datagram the receiver cannot keep up with.
pub(crate) const STEER_QUEUE: usize = 8192;

/// Commands from the [`Handle`](crate::Handle).
#[derive(Debug)]
pub(crate) enum ControlMsg {
    /// Start a graceful drain.
    Drain,
    /// Reply with the core's counters, tagged with the shard's index.
    Metrics(mpsc::Sender<(usize, Metrics)>),
    /// Reply with what the core knows about each backend, tagged with the shard's index.
    Backends(mpsc::Sender<(usize, Vec<BackendStatus>)>),
    /// Exit at once.
    Stop,
    /// Apply a new configuration.
    Reload(Box<spooky_core::Reload>),
}

/// A client datagram (or GRO batch) that arrived at another shard's listener but belongs to a
/// connection of this shard.
#[derive(Debug)]
pub(crate) struct Steered {
    pub(crate) from: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) ecn: Option<EcnCodepoint>,
    pub(crate) data: BytesMut,
    pub(crate) segment_size: Option<usize>,
    /// Datagrams in `data`.
    pub(crate) count: u64,
}

/// The sending side of a shard's queues.
#[derive(Debug)]
pub(crate) struct Mailbox {
    waker: mio::Waker,
    /// True while a wake-up is outstanding: set by senders, cleared by the shard before it
    /// empties its queues.
    notified: AtomicBool,
    control: mpsc::Sender<ControlMsg>,
    steer: mpsc::SyncSender<Steered>,
}

/// The receiving side, owned by the shard.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) control: mpsc::Receiver<ControlMsg>,
    pub(crate) steer: mpsc::Receiver<Steered>,
}

impl Mailbox {
    /// A mailbox waking `waker`, and the inbox its shard reads.
    pub(crate) fn new(waker: mio::Waker) -> (Mailbox, Inbox) {
        let (control, control_rx) = mpsc::channel();
        let (steer, steer_rx) = mpsc::sync_channel(STEER_QUEUE);
        (
            Mailbox {
                waker,
                notified: AtomicBool::new(false),
                control,
                steer,
            },
            Inbox {
                control: control_rx,
                steer: steer_rx,
            },
        )
    }

    /// Wakes the shard unless a wake-up is already on its way.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel)
            && let Err(e) = self.waker.wake()
        {
            tracing::warn!(error = %e, "cannot wake a shard");
        }
    }

    /// Called by the owning shard before it empties its queues. Pairs with the swap in
    /// [`notify`](Self::notify): whatever was queued before a wake-up was skipped is visible
    /// to the shard afterwards.
    pub(crate) fn clear_notified(&self) {
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Sends a command and wakes the shard. False if the shard has exited.
    pub(crate) fn control(&self, message: ControlMsg) -> bool {
        let sent = self.control.send(message).is_ok();
        if sent {
            self.notify();
        }
        sent
    }

    /// Queues a steered datagram without waking the shard (the caller wakes each target
    /// once per receive batch). Gives the datagram back if the queue is full or the shard
    /// has exited.
    #[allow(clippy::result_large_err)]
    pub(crate) fn steer(&self, datagram: Steered) -> Result<(), mpsc::TrySendError<Steered>> {
        self.steer.try_send(datagram)
    }
}

/// Counters the runtime keeps per shard (the core cannot know them), readable from any
/// thread. Written by the shard only.
#[derive(Debug, Default)]
pub(crate) struct StatsCells {
    pub(crate) steered_datagrams: AtomicU64,
    pub(crate) steered_in: AtomicU64,
    pub(crate) steer_dropped: AtomicU64,
    pub(crate) send_blocked: AtomicU64,
    /// The core's counters when the shard exited.
    pub(crate) final_metrics: Mutex<Option<Metrics>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_messages_costs_one_wake_up() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(7)).unwrap();
        let (mailbox, inbox) = Mailbox::new(waker);
        for _ in 0..3 {
            assert!(mailbox.control(ControlMsg::Drain));
        }
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert_eq!(events.iter().count(), 1);
        mailbox.clear_notified();
        assert_eq!(inbox.control.try_iter().count(), 3);
        // Once cleared, the next message wakes again.
        assert!(mailbox.control(ControlMsg::Stop));
        poll.poll(&mut events, Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert_eq!(events.iter().count(), 1);
    }
}
