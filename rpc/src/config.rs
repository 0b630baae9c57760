//! Config files in SPDK's JSON format: load (replay calls in order) and save.

/// Why a config could not be loaded; names the entry and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Not JSON, or not the `{"subsystems":[…]}` shape.
    #[error("config {path}: {message}")]
    Format { path: String, message: String },
    /// A call failed: which subsystem, which entry (0-based), which method, and the error.
    #[error("config {path}: subsystem {subsystem:?} entry {index} ({method}): {error}")]
    Call { path: String, subsystem: String, index: usize, method: String, error: crate::RpcError },
}

/// Load and replay a config file (async: runs on the main reactor).
pub async fn load_config_file(_path: &str) -> Result<(), ConfigError> {
    todo!()
}

/// Replay an already-parsed config value; `origin` names it in errors.
pub async fn load_config_value(_origin: &str, _config: &serde_json::Value) -> Result<(), ConfigError> {
    todo!()
}

/// The current state as a config value (what `save_config` answers).
pub fn save_config_value() -> serde_json::Value {
    todo!()
}
