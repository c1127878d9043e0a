//! Captures: a core's inputs, recorded so that a run can be replayed exactly.
//!
//! A capture starts with a [`CaptureHeader`] (everything needed to build the same core: the
//! seed, the shard, the configuration text, the listener identity and the fixed wall clock),
//! followed by one record per input, with its time as an offset from the core's creation,
//! and a record for each point where the runtime drained the core's output; it ends
//! with a footer holding the SHA-256 of every output the core produced ([`OutputDigest`]).
//! `spooky replay` rebuilds the core from the header, feeds the inputs in order and checks
//! that the outputs hash to the same value.
//!
//! Replaying is only exact for a core built with [`CryptoMode::Deterministic`](crate::quic::crypto::CryptoMode::Deterministic) (seeded
//! randomness and X25519, a fixed clock) and an Ed25519 certificate, whose signatures are
//! deterministic: with anything else the TLS handshake differs and the recorded packets no
//! longer decrypt. The capture holds the listener's private key: treat it like the key.
//!
//! Encoding (all integers little-endian): the magic `SPKYCAP1`, the header, then records
//! `tag: u8, offset_ns: u64, body`; drain records are `5, outputs: u64, exhausted: u8`; the
//! footer record has tag 0xff, 8 zero bytes and the 32-byte digest.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{
    Control, Datagram, EcnCodepoint, Input, Output, SocketKind, TcpCommand, TcpEvent, TcpId,
};

const MAGIC: &[u8; 8] = b"SPKYCAP1";

const TAG_DATAGRAM: u8 = 1;
const TAG_TIMEOUT: u8 = 2;
const TAG_TCP: u8 = 3;
const TAG_DRAIN: u8 = 4;
/// The runtime drained the core's output here: how many outputs it took and whether it went
/// on until `poll_output` had nothing more (a blocked send stops it early). Replays drain at
/// the same points and by the same amounts, since batching changes how answers are packed
/// into datagrams.
const TAG_FLUSH: u8 = 5;
const TAG_FOOTER: u8 = 0xff;

/// What a replay needs to build the same core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureHeader {
    /// The core's seed.
    pub seed: [u8; 32],
    /// The deterministic crypto seed.
    pub crypto_seed: [u8; 32],
    /// The fixed wall clock (seconds since the Unix epoch).
    pub unix_time: u64,
    /// The shard number.
    pub shard: u16,
    /// GSO segments the runtime allowed.
    pub max_gso_segments: u16,
    /// The configuration, as YAML text.
    pub config_yaml: String,
    /// The listener's certificate chain (DER), leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// The listener's private key (DER, PKCS#8).
    pub key: Vec<u8>,
}

/// A capture that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture byte {offset}: {problem}")]
pub struct CaptureError {
    /// Where in the file.
    pub offset: usize,
    /// What is wrong.
    pub problem: String,
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            put_u8(out, 4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            put_u8(out, 6);
            out.extend_from_slice(&v6.octets());
        }
    }
}
fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    put_ip(out, addr.ip());
    put_u16(out, addr.port());
}

/// Reads a capture front to back.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, problem: impl Into<String>) -> Result<T, CaptureError> {
        Err(CaptureError {
            offset: self.at,
            problem: problem.into(),
        })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CaptureError> {
        if self.data.len() - self.at < n {
            return self.fail(format!("truncated: {n} more bytes expected"));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CaptureError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CaptureError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, CaptureError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CaptureError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn ip(&mut self) -> Result<IpAddr, CaptureError> {
        match self.u8()? {
            4 => Ok(IpAddr::from(
                <[u8; 4]>::try_from(self.take(4)?).expect("4 bytes"),
            )),
            6 => Ok(IpAddr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("16 bytes"),
            )),
            other => self.fail(format!("bad address family {other}")),
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, CaptureError> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn seed(&mut self) -> Result<[u8; 32], CaptureError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
}

impl CaptureHeader {
    /// The header's encoding, with the magic in front.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.seed);
        out.extend_from_slice(&self.crypto_seed);
        put_u64(&mut out, self.unix_time);
        put_u16(&mut out, self.shard);
        put_u16(&mut out, self.max_gso_segments);
        put_bytes(&mut out, self.config_yaml.as_bytes());
        put_u32(&mut out, self.cert_chain.len() as u32);
        for cert in &self.cert_chain {
            put_bytes(&mut out, cert);
        }
        put_bytes(&mut out, &self.key);
        out
    }
}

/// Encodes inputs as they are fed to a core. Keep one per core; write [`CaptureEncoder::take`]
/// to the file now and then, and [`CaptureEncoder::finish`] at the end.
pub struct CaptureEncoder {
    /// When the core started; offsets count from here.
    epoch: Instant,
    pending: Vec<u8>,
    digest: OutputDigest,
    /// Outputs since the last flush record.
    drained: u64,
}

impl CaptureEncoder {
    /// An encoder whose first bytes are `header`'s encoding. `core_start` is the `now` the
    /// core was built with: input times are recorded relative to it, so that a replayed core
    /// built at some other instant sees the same intervals (its timers start at creation).
    pub fn new(header: &CaptureHeader, core_start: Instant) -> CaptureEncoder {
        CaptureEncoder {
            epoch: core_start,
            pending: header.encode(),
            digest: OutputDigest::new(),
            drained: 0,
        }
    }

    fn offset(&mut self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Records an input (call just before handing it to the core).
    pub fn input(&mut self, input: &Input) {
        let offset = self.offset(input.now());
        let out = &mut self.pending;
        match input {
            Input::Datagram(d) => {
                put_u8(out, TAG_DATAGRAM);
                put_u64(out, offset);
                put_u8(out, matches!(d.socket, SocketKind::Upstream) as u8);
                put_addr(out, d.from);
                match d.local_ip {
                    Some(ip) => put_ip(out, ip),
                    None => put_u8(out, 0),
                }
                put_u8(out, d.ecn.map_or(0, |e| e as u8 + 1));
                put_u32(out, d.segment_size.map_or(0, |s| s as u32));
                put_bytes(out, &d.data);
            }
            Input::Timeout { .. } => {
                put_u8(out, TAG_TIMEOUT);
                put_u64(out, offset);
            }
            Input::Tcp { id, event, .. } => {
                put_u8(out, TAG_TCP);
                put_u64(out, offset);
                put_u64(out, id.0);
                match event {
                    TcpEvent::Connected => put_u8(out, 0),
                    TcpEvent::ConnectFailed(why) => {
                        put_u8(out, 1);
                        put_bytes(out, why.as_bytes());
                    }
                    TcpEvent::Data(bytes) => {
                        put_u8(out, 2);
                        put_bytes(out, bytes);
                    }
                    TcpEvent::Sent(n) => {
                        put_u8(out, 3);
                        put_u64(out, *n as u64);
                    }
                    TcpEvent::Closed(why) => {
                        put_u8(out, 4);
                        put_bytes(out, why.as_deref().unwrap_or("").as_bytes());
                    }
                }
            }
            Input::Control { command, .. } => match command {
                Control::Drain => {
                    put_u8(out, TAG_DRAIN);
                    put_u64(out, offset);
                }
                // A reload's configuration comes with its files; captures do not replay it.
                Control::Reload(_) => {}
            },
        }
    }

    /// Records that the runtime has drained `poll_output`: the outputs passed to
    /// [`CaptureEncoder::output`] since the last call, and whether it stopped because
    /// `poll_output` returned `None` (`exhausted`) or for its own reasons.
    pub fn flushed(&mut self, exhausted: bool) {
        put_u8(&mut self.pending, TAG_FLUSH);
        put_u64(&mut self.pending, self.drained);
        put_u8(&mut self.pending, exhausted as u8);
        self.drained = 0;
    }

    /// Records an output (call for everything `poll_output` returns, with the buffer it
    /// filled).
    pub fn output(&mut self, output: &Output, buf: &[u8]) {
        self.drained += 1;
        self.digest.record(output, buf);
    }

    /// The bytes encoded since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// The final bytes: what is pending and the footer with the outputs' digest.
    pub fn finish(mut self) -> Vec<u8> {
        put_u8(&mut self.pending, TAG_FOOTER);
        put_u64(&mut self.pending, 0);
        self.pending.extend_from_slice(&self.digest.finish());
        self.pending
    }
}

/// One step of a recorded run.
#[derive(Debug)]
pub enum Step {
    /// Feed this input.
    Input(Input),
    /// Drain the core's output: this many outputs, then (if `exhausted`) until it has none.
    Flush {
        /// Outputs the runtime took.
        outputs: u64,
        /// Whether it went on until `poll_output` returned `None`.
        exhausted: bool,
    },
}

/// A decoded capture.
pub struct Capture {
    /// How to build the core.
    pub header: CaptureHeader,
    /// The inputs and drain points, with times relative to `epoch` as given to
    /// [`Capture::decode`].
    pub steps: Vec<Step>,
    /// The outputs' digest from the recording, if the recording ended cleanly.
    pub digest: Option<[u8; 32]>,
}

impl Capture {
    /// Decodes a capture; input times are `epoch` (the replaying core's start) plus their
    /// recorded offsets.
    pub fn decode(data: &[u8], epoch: Instant) -> Result<Capture, CaptureError> {
        let mut r = Reader { data, at: 0 };
        if r.take(8)? != MAGIC {
            return r.fail("not a Spooky capture (bad magic)");
        }
        let seed = r.seed()?;
        let crypto_seed = r.seed()?;
        let unix_time = r.u64()?;
        let shard = r.u16()?;
        let max_gso_segments = r.u16()?;
        let config_yaml = String::from_utf8(r.bytes()?.to_vec())
            .or_else(|_| r.fail("configuration is not UTF-8"))?;
        let certs = r.u32()?;
        let mut cert_chain = Vec::new();
        for _ in 0..certs {
            cert_chain.push(r.bytes()?.to_vec());
        }
        let key = r.bytes()?.to_vec();
        let header = CaptureHeader {
            seed,
            crypto_seed,
            unix_time,
            shard,
            max_gso_segments,
            config_yaml,
            cert_chain,
            key,
        };
        let mut steps = Vec::new();
        let mut digest = None;
        while r.at < data.len() {
            let tag = r.u8()?;
            if tag == TAG_FLUSH {
                let outputs = r.u64()?;
                let exhausted = r.u8()? != 0;
                steps.push(Step::Flush { outputs, exhausted });
                continue;
            }
            let now = epoch + Duration::from_nanos(r.u64()?);
            let input = match tag {
                TAG_DATAGRAM => {
                    let socket = if r.u8()? == 1 {
                        SocketKind::Upstream
                    } else {
                        SocketKind::Listener
                    };
                    let from = r.addr()?;
                    let local_ip = match data.get(r.at) {
                        Some(0) => {
                            r.at += 1;
                            None
                        }
                        _ => Some(r.ip()?),
                    };
                    let ecn = match r.u8()? {
                        0 => None,
                        n => EcnCodepoint::from_bits(n - 1),
                    };
                    let segment_size = match r.u32()? {
                        0 => None,
                        n => Some(n as usize),
                    };
                    let data = BytesMut::from(r.bytes()?);
                    Input::Datagram(Datagram {
                        now,
                        socket,
                        from,
                        local_ip,
                        ecn,
                        data,
                        segment_size,
                    })
                }
                TAG_TIMEOUT => Input::Timeout { now },
                TAG_TCP => {
                    let id = TcpId(r.u64()?);
                    let event = match r.u8()? {
                        0 => TcpEvent::Connected,
                        1 => TcpEvent::ConnectFailed(
                            String::from_utf8_lossy(r.bytes()?).into_owned(),
                        ),
                        2 => TcpEvent::Data(Bytes::copy_from_slice(r.bytes()?)),
                        3 => TcpEvent::Sent(r.u64()? as usize),
                        4 => {
                            let why = r.bytes()?;
                            TcpEvent::Closed(
                                (!why.is_empty())
                                    .then(|| String::from_utf8_lossy(why).into_owned()),
                            )
                        }
                        other => return r.fail(format!("bad TCP event {other}")),
                    };
                    Input::Tcp { now, id, event }
                }
                TAG_DRAIN => Input::Control {
                    now,
                    command: Control::Drain,
                },
                TAG_FOOTER => {
                    digest = Some(r.seed()?);
                    break;
                }
                other => return r.fail(format!("bad record type {other}")),
            };
            steps.push(Step::Input(input));
        }
        Ok(Capture {
            header,
            steps,
            digest,
        })
    }

    /// Runs the capture through `core` (built from the header) and returns the digest of its
    /// outputs, to compare with [`Capture::digest`].
    pub fn replay(self, core: &mut crate::Core) -> ReplayReport {
        let mut digest = OutputDigest::new();
        let mut buf = Vec::new();
        let mut inputs = 0u64;
        for step in self.steps {
            match step {
                Step::Input(input) => {
                    inputs += 1;
                    core.handle_input(input);
                }
                Step::Flush { outputs, exhausted } => {
                    for _ in 0..outputs {
                        let Some(output) = core.poll_output(&mut buf) else {
                            break; // diverged; the digest will say so
                        };
                        digest.record(&output, &buf);
                    }
                    if exhausted {
                        while let Some(output) = core.poll_output(&mut buf) {
                            digest.record(&output, &buf);
                        }
                    }
                }
            }
        }
        let outputs = digest.outputs();
        let replayed = digest.finish();
        ReplayReport {
            inputs,
            outputs,
            recorded: self.digest,
            replayed,
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Inputs fed.
    pub inputs: u64,
    /// Outputs the core produced.
    pub outputs: u64,
    /// The recording's output digest (`None` if it did not end cleanly).
    pub recorded: Option<[u8; 32]>,
    /// The replay's output digest.
    pub replayed: [u8; 32],
}

impl ReplayReport {
    /// True if the replay produced exactly the recorded outputs.
    pub fn identical(&self) -> bool {
        self.recorded == Some(self.replayed)
    }
}

/// SHA-256 over every output of a core, in order: datagrams with their destination and
/// bytes, TCP commands with their connection and content. Two runs that produce the same
/// digest did the same thing.
pub struct OutputDigest {
    context: ring::digest::Context,
    outputs: u64,
}

impl Default for OutputDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputDigest {
    /// An empty digest.
    pub fn new() -> OutputDigest {
        OutputDigest {
            context: ring::digest::Context::new(&ring::digest::SHA256),
            outputs: 0,
        }
    }

    /// Adds one output (and the buffer `poll_output` filled).
    pub fn record(&mut self, output: &Output, buf: &[u8]) {
        self.outputs += 1;
        match output {
            Output::Transmit(t) => {
                self.context.update(b"udp");
                self.context.update(t.destination.to_string().as_bytes());
                self.context
                    .update(&(t.segment_size.unwrap_or(0) as u64).to_le_bytes());
                self.context.update(&buf[..t.size]);
            }
            Output::Tcp(id, command) => {
                self.context.update(b"tcp");
                self.context.update(&id.0.to_le_bytes());
                match command {
                    TcpCommand::Send(bytes) => self.context.update(bytes),
                    other => self.context.update(format!("{other:?}").as_bytes()),
                }
            }
        }
    }

    /// Outputs recorded so far.
    pub fn outputs(&self) -> u64 {
        self.outputs
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.context.finish().as_ref());
        out
    }
}
