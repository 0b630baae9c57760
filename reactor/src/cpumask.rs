//! `-m/--cpumask` parsing: SPDK-style hex masks (`0x3`, `3`) or lists (`[0,2]`, `[0-3,6]`).

/// A set of cores for reactors, in ascending order, non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    cores: Vec<u32>,
}

/// Why a core mask was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuMaskError {
    /// Neither a hex mask nor a core list.
    #[error("invalid core mask {0:?}: expected a hex mask like 0x3 or a list like [0,1]")]
    Syntax(String),
    /// Selects no core.
    #[error("core mask {0:?} selects no core")]
    Empty(String),
    /// Names a core this machine (or this process's affinity) does not have.
    #[error("core {core} does not exist on this machine (usable cores: {usable})")]
    NoSuchCore { core: u32, usable: String },
}

impl CpuMask {
    /// Parse a mask without checking that the cores exist.
    pub fn parse(_s: &str) -> Result<CpuMask, CpuMaskError> {
        todo!()
    }
    /// Parse and check every core against the process's CPU affinity set.
    pub fn parse_and_validate(_s: &str) -> Result<CpuMask, CpuMaskError> {
        todo!()
    }
    /// The cores, ascending.
    pub fn cores(&self) -> &[u32] {
        &self.cores
    }
}
