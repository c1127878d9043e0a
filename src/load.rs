//! Loading a configuration file and the files it names.

use std::path::Path;
use std::sync::Arc;

use spooky_core::{Config, TlsMaterials};

/// A configuration that failed to load: which file, and what is wrong where.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration file itself could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("{file}: {error}")]
    Invalid {
        /// The file.
        file: String,
        /// Key path, value and what is allowed.
        error: spooky_core::ConfigError,
    },
}

/// Reads, parses and validates `path`, then reads the certificates and keys it names
/// (relative paths are relative to the current directory).
pub fn load(path: &Path) -> Result<(Arc<Config>, TlsMaterials), LoadError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    let config = Config::from_yaml(&text).map_err(|error| LoadError::Invalid {
        file: file.clone(),
        error,
    })?;
    let tls = TlsMaterials::load(&config, |p| std::fs::read(p))
        .map_err(|error| LoadError::Invalid { file, error })?;
    Ok((Arc::new(config), tls))
}
