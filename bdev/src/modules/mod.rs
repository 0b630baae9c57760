//! Leaf bdev modules, each with its own RPC methods.

pub mod delay;
pub mod error;
pub mod malloc;
pub mod null;
pub mod stack;
pub mod uring;
