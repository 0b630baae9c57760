//! HOT PATH: raid5 — striping with one rotating (left-symmetric) parity strip per stripe.
//!
//! - [`write`]: writes (and unmap/write-zeroes), one stripe operation per stripe touched.
//! - [`read`]: reads that go through a stripe operation (a piece on a member that is not
//!   active, or a read to reconstruct from parity).

pub(crate) mod read;
pub(crate) mod write;
