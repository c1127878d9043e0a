//! Recording a shard's inputs to a capture file (`spooky run --record DIR`), for exact
//! replay with `spooky replay`. Off the normal path: without `--record`, nothing here runs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use spooky_core::capture::{CaptureEncoder, CaptureHeader};
use spooky_core::{Input, Output};

/// One shard's capture file.
pub(crate) struct Recorder {
    encoder: Option<CaptureEncoder>,
    file: BufWriter<File>,
}

impl Recorder {
    /// Creates `dir/shard-<index>.spkcap` for a core built at `core_start`.
    pub(crate) fn create(
        dir: &Path,
        index: usize,
        header: &CaptureHeader,
        core_start: Instant,
    ) -> io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("shard-{index}.spkcap"));
        // Owner-only: the header holds the listener's private key.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        let file = BufWriter::with_capacity(1 << 20, file);
        tracing::info!(path = %path.display(), "recording this shard's inputs");
        Ok(Recorder {
            encoder: Some(CaptureEncoder::new(header, core_start)),
            file,
        })
    }

    pub(crate) fn input(&mut self, input: &Input) {
        if let Some(encoder) = &mut self.encoder {
            encoder.input(input);
        }
    }

    /// The shard has drained the core's output (`exhausted`: until there was none left).
    pub(crate) fn flushed(&mut self, exhausted: bool) {
        if let Some(encoder) = &mut self.encoder {
            encoder.flushed(exhausted);
        }
    }

    pub(crate) fn output(&mut self, output: &Output, buf: &[u8]) {
        if let Some(encoder) = &mut self.encoder {
            encoder.output(output, buf);
        }
    }

    /// Writes what was encoded since the last call (once per loop turn).
    pub(crate) fn write_pending(&mut self) {
        if let Some(encoder) = &mut self.encoder {
            let bytes = encoder.take();
            if let Err(e) = self.file.write_all(&bytes) {
                tracing::error!(error = %e, "capture write failed; recording stops");
                self.encoder = None;
            }
        }
    }

    /// Writes the footer (the outputs' digest) and closes the file.
    pub(crate) fn finish(mut self) {
        self.write_pending();
        if let Some(encoder) = self.encoder.take() {
            let footer = encoder.finish();
            if let Err(e) = self
                .file
                .write_all(&footer)
                .and_then(|()| self.file.flush())
            {
                tracing::error!(error = %e, "capture footer write failed");
            }
        }
    }
}
