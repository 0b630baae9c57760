//! Everything a bdev-module or lvol integration test uses, under the names those tests use:
//! `use keel_testkit::prelude::*;`.

pub use crate::fixtures::{dma, open_rw, pattern, use_interrupt_mode, write_then_read, TempFile};
pub use crate::io::{iov as iov_slice, iov_dma as iov, one, Batch};
pub use crate::reactors::{cores, run, run_on, yield_iterations};
