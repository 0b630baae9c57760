//! The NVMe/TCP transport.
