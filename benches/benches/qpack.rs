//! QPACK (static table only) encode and decode of typical request and response header lists,
//! and Huffman coding of a 64-byte string.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spooky_core::fields::FieldSection;
use spooky_core::h3::qpack::{FieldDecoder, decode_field_section, encode_field_section, huffman};

type Fields = Vec<(&'static [u8], &'static [u8])>;

fn fields(list: &[(&'static str, &'static str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

/// What a browser sends for a page on a site it has visited before: 12 fields.
fn browser_request() -> Fields {
    fields(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "www.example.com"),
        (
            ":path",
            "/products/shoes/index.html?utm_source=newsletter&page=2",
        ),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
        (
            "cookie",
            "session=3f9a7c2e41b84d0f9e6a5b1c; theme=dark; _ga=GA1.2.1234567890.1700000000; consent=yes",
        ),
        ("sec-fetch-mode", "navigate"),
        ("upgrade-insecure-requests", "1"),
        ("priority", "u=0, i"),
    ])
}

/// A typical static-file response: 8 fields.
fn typical_response() -> Fields {
    fields(&[
        (":status", "200"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "48213"),
        ("date", "Mon, 01 Jan 2027 12:00:00 GMT"),
        ("server", "spooky"),
        ("cache-control", "public, max-age=3600"),
        ("etag", "\"5f3e2a1b-bc55\""),
        ("vary", "accept-encoding"),
    ])
}

fn encode(fields: &Fields, out: &mut Vec<u8>) {
    out.clear();
    encode_field_section(fields.iter().copied(), out);
}

fn bench_sections(c: &mut Criterion) {
    let mut group = c.benchmark_group("qpack");
    for (name, fields) in [
        ("request_12_fields", browser_request()),
        ("response_8_fields", typical_response()),
    ] {
        let mut block = Vec::new();
        encode(&fields, &mut block);
        let raw: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        group.throughput(Throughput::Elements(fields.len() as u64));

        let mut out = Vec::with_capacity(1024);
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                encode(black_box(&fields), &mut out);
                black_box(out.len())
            })
        });

        // The convenience function: a fresh scratch buffer per call.
        let mut decoded = FieldSection::new();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                decode_field_section(black_box(&block), 64 * 1024, &mut decoded).unwrap();
                black_box(decoded.len())
            })
        });

        // What a connection does: one decoder and one section, reused.
        let mut decoder = FieldDecoder::new();
        group.bench_function(BenchmarkId::new("decode_reused", name), |b| {
            b.iter(|| {
                decoder
                    .decode(black_box(&block), 64 * 1024, &mut decoded)
                    .unwrap();
                black_box(decoded.len())
            })
        });

        decode_field_section(&block, 64 * 1024, &mut decoded).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), fields);
        println!(
            "qpack {name}: {} fields, {raw} bytes raw, {} bytes encoded",
            fields.len(),
            block.len()
        );
    }
    group.finish();
}

fn bench_huffman(c: &mut Criterion) {
    let text = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.00";
    assert_eq!(text.len(), 64);
    let mut coded = Vec::new();
    huffman::encode(text, &mut coded);
    let mut group = c.benchmark_group("huffman");
    group.throughput(Throughput::Bytes(text.len() as u64));
    let mut out = Vec::with_capacity(128);
    group.bench_function("encode_64B", |b| {
        b.iter(|| {
            out.clear();
            huffman::encode(black_box(text), &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("decode_64B", |b| {
        b.iter(|| {
            out.clear();
            huffman::decode(black_box(&coded), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.finish();
    out.clear();
    huffman::decode(&coded, &mut out).unwrap();
    assert_eq!(&out[..], &text[..]);
}

criterion_group!(benches, bench_sections, bench_huffman);
criterion_main!(benches);
