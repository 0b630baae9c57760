//! Helpers shared by the integration tests: a reactor runtime per test process, running work on
//! a core and getting its result back, and small futures for waiting inside reactor tasks —
//! all from the test kit (`keel_testkit::reactors`), under the names these tests use.

#[allow(unused_imports)] // each test file uses its own subset
pub use keel_testkit::reactors::{call_on as run_on, on_core, start as runtime, until};
