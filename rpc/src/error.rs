//! JSON-RPC errors with SPDK's codes.

/// SPDK's `SPDK_JSONRPC_ERROR_INVALID_STATE`: the method exists but may not be called in the
/// server's current state (before or after `framework_start_init`).
pub const INVALID_STATE: i32 = -1;

/// A JSON-RPC error object: `code` is a JSON-RPC code (-32700 … -32603) or a negative errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// The code sent to the client.
    pub code: i32,
    /// A message saying what was wrong, naming the offending parameter where there is one.
    pub message: String,
}

/// What a method handler returns: the `result` value or an error.
pub type RpcResult = Result<serde_json::Value, RpcError>;

impl RpcError {
    /// -32700: the request is not valid JSON.
    pub fn parse_error(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32700,
            message: msg.into(),
        }
    }
    /// -32600: not a valid JSON-RPC 2.0 request object.
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32600,
            message: msg.into(),
        }
    }
    /// -32601: no such method (SPDK's code). The message says whether `method` is an SPDK
    /// method Keel does not have yet, or a near miss of a method Keel has (a typo), or neither.
    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: not_found_message(method, &crate::registry::method_names()),
        }
    }
    /// -32602: params missing, of the wrong type or out of range.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32602,
            message: msg.into(),
        }
    }
    /// -32603: the server failed.
    pub fn internal(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32603,
            message: msg.into(),
        }
    }
    /// A negative errno, as SPDK answers for operation failures (e.g. -17 EEXIST, -19 ENODEV).
    pub fn errno(errno: i32, msg: impl Into<String>) -> Self {
        RpcError {
            code: -errno.abs(),
            message: msg.into(),
        }
    }
}

/// The message of a -32601 answer for `method`, given the names Keel serves (`keel`).
fn not_found_message(method: &str, keel: &[&'static str]) -> String {
    // Error path only: a few hundred short comparisons.
    let shown: String = method.chars().take(128).collect();
    if crate::spdk_methods::SPDK_METHODS
        .binary_search(&method)
        .is_ok()
    {
        return format!(
            "Method not found: Keel does not support the SPDK method {shown} yet \
             (rpc_get_methods lists the methods Keel has)"
        );
    }
    let near = |names: &[&'static str]| -> Option<&'static str> {
        names
            .iter()
            .map(|n| (edit_distance(method, n), *n))
            .filter(|(d, n)| *d <= 2 && *d * 4 <= n.len())
            .min()
            .map(|(_, n)| n)
    };
    if let Some(k) = near(keel) {
        return format!("Method not found: {shown} (did you mean {k}?)");
    }
    if let Some(s) = near(crate::spdk_methods::SPDK_METHODS) {
        return format!(
            "Method not found: {shown} (did you mean SPDK's {s}? Keel does not support it yet)"
        );
    }
    format!(
        "Method not found: {shown} is neither a Keel nor an SPDK method \
         (rpc_get_methods lists the methods Keel has)"
    )
}

/// Levenshtein distance of two short ASCII-ish names (by chars), bounded work: names longer
/// than 128 chars compare as far apart.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() > 128 || b.len() > 128 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_methods_are_sorted_and_unique() {
        let m = crate::spdk_methods::SPDK_METHODS;
        assert!(m.len() > 200, "the list is SPDK's whole method table");
        assert!(
            m.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
    }

    #[test]
    fn unknown_methods_are_told_apart() {
        let keel = ["bdev_malloc_create", "nvmf_get_subsystems"];
        let spdk = not_found_message("bdev_nvme_attach_controller", &keel);
        assert_eq!(
            spdk,
            "Method not found: Keel does not support the SPDK method \
             bdev_nvme_attach_controller yet (rpc_get_methods lists the methods Keel has)"
        );
        // A typo of a method Keel has: the suggestion is Keel's.
        let typo = not_found_message("bdev_maloc_create", &keel);
        assert!(typo.contains("did you mean bdev_malloc_create?"), "{typo}");
        // A typo of an SPDK method Keel lacks.
        let typo = not_found_message("bdev_nvme_atach_controller", &keel);
        assert!(
            typo.contains("SPDK's bdev_nvme_attach_controller") && typo.contains("not support"),
            "{typo}"
        );
        let other = not_found_message("frobnicate", &keel);
        assert!(
            other.contains("neither a Keel nor an SPDK method"),
            "{other}"
        );
        // Short names are not "near" everything.
        let short = not_found_message("ab", &["rpc"]);
        assert!(short.contains("neither"), "{short}");
        let e = RpcError::method_not_found("bdev_nvme_attach_controller");
        assert_eq!(e.code, -32601);
        // A huge name is cut in the message and compared cheaply.
        let long = "x".repeat(100_000);
        assert!(not_found_message(&long, &keel).len() < 400);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("abc", "ab"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
