//! Per-core rate limits for `bdev_set_qos_limit`, enforced without a shared lock.
