//! NVMe and NVMe-oF wire structures. All multi-byte fields are little-endian; this target only
//! runs on little-endian hosts (checked at compile time below), so structs are `repr(C)` and
//! read/written in place, with their sizes and offsets checked against the spec by tests.
//!
//! - [`cmd`]: the 64-byte submission queue entry, the 16-byte completion, opcodes, SGL.
//! - [`status`]: status code types and values.
//! - further modules: Identify structures, log pages, Fabrics commands, Connect data,
//!   controller registers.

pub mod cmd;
pub mod status;

#[cfg(not(target_endian = "little"))]
compile_error!("keel-nvmf reads NVMe structures in place and needs a little-endian CPU");
