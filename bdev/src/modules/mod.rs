//! Leaf bdev modules, each with its own RPC methods.

pub mod delay;
pub mod error;
pub mod malloc;
pub mod null;
pub mod stack;
pub mod uring;

/// SPDK's `dif_pi_format` option of `bdev_malloc_create` / `bdev_null_create`: Keel's RAM
/// modules have no protection information, so only the default 0 is accepted (any other value
/// would change the data layout the host sees).
pub(crate) fn refuse_dif_pi_format(
    module: &str,
    dif_pi_format: u32,
) -> Result<(), keel_rpc::RpcError> {
    if dif_pi_format == 0 {
        return Ok(());
    }
    Err(keel_rpc::RpcError::errno(
        libc::EINVAL,
        format!(
            "dif_pi_format {dif_pi_format} is not supported: Keel's {module} bdev has no \
             protection information (only the default 0 is accepted)"
        ),
    ))
}
