//! The error of a failed verbs or RDMA CM call.

use crate::ffi::rdma_core::{self, LoadError};
use std::fmt;

/// A verbs / RDMA CM call failed: which call, and the errno it reported; or rdma-core itself
/// could not be loaded ([`Error::rdma_core`]).
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    op: &'static str,
    errno: i32,
    rdma_core: Option<&'static LoadError>,
}

impl Error {
    /// An error for `op` with an explicit errno.
    pub fn new(op: &'static str, errno: i32) -> Self {
        Self {
            op,
            errno,
            rdma_core: None,
        }
    }

    /// Loads rdma-core if this is the first call (see [`crate::ffi::rdma_core::load`]); the
    /// error says why it cannot be (op `"load rdma-core"`, errno ENOENT when not installed,
    /// ELIBACC otherwise).
    pub fn load_rdma_core() -> Result<(), Self> {
        match rdma_core::load() {
            Ok(_) => Ok(()),
            Err(e) => Err(Self {
                op: "load rdma-core",
                errno: match e {
                    LoadError::NotFound { .. } => libc::ENOENT,
                    _ => libc::ELIBACC,
                },
                rdma_core: Some(e),
            }),
        }
    }

    /// Why rdma-core could not be loaded, when that is the error.
    pub fn rdma_core(&self) -> Option<&'static LoadError> {
        self.rdma_core
    }

    /// An error for `op` from the calling thread's `errno` (EIO if none is set).
    pub fn last(op: &'static str) -> Self {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .filter(|&e| e != 0)
            .unwrap_or(libc::EIO);
        Self::new(op, errno)
    }

    /// An error for `op` from a call that returns 0 or an errno (positive or negated).
    pub(crate) fn check(op: &'static str, rc: libc::c_int) -> Result<(), Self> {
        match rc {
            0 => Ok(()),
            rc => Err(Self::new(op, rc.checked_abs().unwrap_or(libc::EIO))),
        }
    }

    /// An error for `op` from a call that returns 0, or -1 with `errno` set.
    pub(crate) fn check_errno(op: &'static str, rc: libc::c_int) -> Result<(), Self> {
        if rc == 0 {
            Ok(())
        } else {
            Err(Self::last(op))
        }
    }

    /// The failed call.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The errno the call reported.
    pub fn errno(&self) -> i32 {
        self.errno
    }
}

/// Debug shows the message too: examples' `main` prints errors with it.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("op", &self.op)
            .field("errno", &self.errno)
            .field("message", &self.to_string())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.rdma_core {
            return write!(f, "{e}");
        }
        write!(
            f,
            "{} failed: {}",
            self.op,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_maps_return_codes() {
        assert_eq!(Error::check("x", 0), Ok(()));
        assert_eq!(
            Error::check("x", libc::EINVAL).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            Error::check("x", -libc::ENOMEM).unwrap_err().errno(),
            libc::ENOMEM
        );
        let e = Error::new("ibv_alloc_pd", libc::ENOSPC);
        assert!(e.to_string().starts_with("ibv_alloc_pd failed: "));
        assert!(
            format!("{e:?}").contains("message: \"ibv_alloc_pd failed: "),
            "{e:?}"
        );
        assert_eq!(e.op(), "ibv_alloc_pd");
    }
}
