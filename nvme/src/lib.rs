//! `keel-nvme`: NVMe and NVMe-oF wire structures and the NVMe/TCP PDU codecs, shared by the
//! target (`keel-nvmf`), the host (`keel-nvmf-host`), the RDMA transport and the fuzzers. No
//! I/O, no reactor: pure encoders, decoders and validators.
//!
//! All multi-byte fields are little-endian; this target only
//! runs on little-endian hosts (checked at compile time below). The SQE/CQE are `repr(C)` and
//! read/written in place; the larger structures (Identify data, log pages, Connect data) are
//! byte buffers with named accessors at the spec's offsets. Every size and offset is checked
//! against the spec by a test, and nothing decoded from the wire is trusted: decoders return
//! a [`status::Status`] error, never panic and never read out of bounds.
//!
//! - [`bytes`]: little-endian field access on byte buffers.
//! - [`cmd`]: the 64-byte submission queue entry, the 16-byte completion, data direction.
//! - [`status`]: status codes as [`status::Status`] values.
//! - [`opcode`]: admin and NVM I/O command opcodes.
//! - [`fabrics`]: Fabrics commands (Connect, Property Get/Set, Disconnect), Connect data.
//! - [`registers`]: controller properties CAP, VS, CC, CSTS and their state machine.
//! - [`identify`]: Identify command, controller/namespace data, namespace lists.
//! - [`log`]: Get Log Page command and the log pages (error, SMART, discovery, ...).
//! - [`features`]: Get/Set Features command and feature encodings.
//! - [`aer`]: asynchronous event completions.
//! - [`sgl`]: SGL descriptors (HOT PATH).
//! - [`io`]: NVM I/O commands and LBA range checks (HOT PATH).
//! - [`reservation`]: reservation commands and the Report data.
//! - [`pdu`]: NVMe/TCP PDU wire formats, the data-PDU framing rule (one for both directions),
//!   the controller's receive validator, CRC32C digests.
//! - [`frame`]: the host's direction of NVMe/TCP framing (ICReq/ICResp, validation of what a
//!   controller sends, CapsuleCmd and H2CData headers).

pub mod aer;
pub mod bytes;
pub mod cmd;
pub mod fabrics;
pub mod features;
pub mod frame;
pub mod identify;
pub mod io;
pub mod log;
pub mod opcode;
pub mod pdu;
pub mod registers;
pub mod reservation;
pub mod sgl;
pub mod status;

#[cfg(not(target_endian = "little"))]
compile_error!("keel-nvme reads NVMe structures in place and needs a little-endian CPU");
