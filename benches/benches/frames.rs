//! `FrameReader` over one response stream: a HEADERS frame and 16 DATA frames of 1 KiB,
//! fed whole and in 1200-byte pieces (about what one QUIC packet carries).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spooky_core::h3::frame::{self, Frame, FrameReader};
use spooky_core::h3::qpack::encode_field_section;

const DATA_FRAMES: usize = 16;
const DATA_LEN: usize = 1024;

fn stream_bytes() -> Vec<u8> {
    let mut block = Vec::new();
    encode_field_section(
        [
            (&b":status"[..], &b"200"[..]),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"16384"),
            (b"server", b"spooky"),
        ],
        &mut block,
    );
    let mut wire = Vec::new();
    frame::write_frame(frame::ty::HEADERS, &block, &mut wire);
    let payload = vec![0x5a; DATA_LEN];
    for _ in 0..DATA_FRAMES {
        frame::write_frame(frame::ty::DATA, &payload, &mut wire);
    }
    wire
}

/// Feeds every piece to a fresh reader; returns (frames seen, DATA bytes).
fn read_all(pieces: &[Bytes]) -> (usize, usize) {
    let mut reader = FrameReader::new(64 * 1024);
    let (mut frames, mut data) = (0, 0);
    for piece in pieces {
        // Cloning a `Bytes` is a reference-count bump, as when the stream hands over a chunk.
        let mut input = piece.clone();
        while let Some(f) = reader.read(&mut input).expect("valid frames") {
            frames += 1;
            if let Frame::Data(d) = f {
                data += d.len();
            }
        }
    }
    assert!(reader.at_frame_boundary());
    (frames, data)
}

fn bench_frames(c: &mut Criterion) {
    let wire = Bytes::from(stream_bytes());
    let mut group = c.benchmark_group("frame_reader");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    for (name, step) in [("whole", wire.len()), ("1200B_pieces", 1200)] {
        let pieces: Vec<Bytes> = (0..wire.len())
            .step_by(step)
            .map(|at| wire.slice(at..(at + step).min(wire.len())))
            .collect();
        let (frames, data) = read_all(&pieces);
        assert_eq!(data, DATA_FRAMES * DATA_LEN);
        assert!(frames > DATA_FRAMES);
        group.bench_with_input(
            BenchmarkId::new("headers_16x1KiB_data", name),
            &pieces,
            |b, pieces| b.iter(|| black_box(read_all(black_box(pieces)))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
