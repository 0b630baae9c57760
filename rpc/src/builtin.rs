//! Built-in framework methods.
