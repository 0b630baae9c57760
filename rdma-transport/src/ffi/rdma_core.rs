//! Loading rdma-core at run time. `libibverbs.so.1` and `librdmacm.so.1` are opened with
//! `dlopen` (through `libloading`) the first time something needs them — creating the RDMA
//! transport, the CM listener, listing devices — and their exported functions are copied into
//! one table that lives for the rest of the process. Nothing in Keel is linked against
//! rdma-core, so `keel-tgt` starts and serves TCP on a host without it; asking for RDMA there
//! answers [`LoadError`] ("rdma-core is not installed ...").
//!
//! The per-I/O verbs (`ibv_post_send`, `ibv_poll_cq`, ...) are `static inline` in rdma-core's
//! header and never go through this table: they call the provider through
//! `ibv_context->ops` (see [`super::verbs`]), exactly as the C inline functions do.
//!
//! [`LIBDIR_ENV`] (`KEEL_RDMA_CORE_LIBDIR`) names a directory to load both libraries from
//! instead of the dynamic linker's search path (an rdma-core built from source, or a test
//! forcing the "not installed" path with a directory that does not have them).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable naming a directory to load `libibverbs.so.1` and
/// `librdmacm.so.1` from (unset: the dynamic linker's search path, as for any library).
pub const LIBDIR_ENV: &str = "KEEL_RDMA_CORE_LIBDIR";

/// The soname of libibverbs (ABI 1; every rdma-core since 2016).
pub const LIBIBVERBS: &str = "libibverbs.so.1";
/// The soname of librdmacm.
pub const LIBRDMACM: &str = "librdmacm.so.1";

/// Why rdma-core could not be loaded. Shown to users after "RDMA transport: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The library file does not exist (rdma-core is not installed).
    NotFound {
        /// What was looked for: the soname, or the path under [`LIBDIR_ENV`].
        lib: String,
    },
    /// The library exists but `dlopen` failed (wrong architecture, a missing dependency...).
    Open {
        /// What was opened.
        lib: String,
        /// The dynamic linker's message.
        reason: String,
    },
    /// The library lacks a function Keel needs (an rdma-core older than Keel supports).
    Symbol {
        /// Which library.
        lib: String,
        /// The missing function.
        symbol: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { lib } => write!(
                f,
                "rdma-core is not installed ({lib} not found: install rdma-core / \
                 ibverbs-providers librdmacm1)"
            ),
            LoadError::Open { lib, reason } => {
                write!(f, "cannot load rdma-core's {lib}: {reason}")
            }
            LoadError::Symbol { lib, symbol } => write!(
                f,
                "rdma-core's {lib} has no {symbol} (rdma-core is older than Keel supports; \
                 install rdma-core 22 or later)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// An open library and what was asked for (for messages).
pub(crate) struct Lib {
    lib: libloading::Library,
    name: String,
}

impl Lib {
    /// Copies the function `symbol` (NUL-terminated) out of the library.
    ///
    /// # Safety
    /// `T` must be the function pointer type of `symbol`'s C declaration.
    pub(crate) unsafe fn get<T: Copy>(
        &self,
        symbol: &'static str,
        nul_terminated: &'static [u8],
    ) -> Result<T, LoadError> {
        // SAFETY: the caller gives the symbol's true type; the function pointer copied out
        // stays valid because the library is never unloaded (it lives in `RDMA_CORE`).
        match unsafe { self.lib.get::<T>(nul_terminated) } {
            Ok(f) => Ok(*f),
            Err(_) => Err(LoadError::Symbol {
                lib: self.name.clone(),
                symbol,
            }),
        }
    }
}

/// Where to look for `soname`: under `libdir`, or by name (the dynamic linker's search path).
fn lib_path(libdir: Option<&OsString>, soname: &str) -> PathBuf {
    match libdir {
        Some(dir) => PathBuf::from(dir).join(soname),
        None => PathBuf::from(soname),
    }
}

/// Opens one library, telling "not there" from "there but unusable".
fn open(libdir: Option<&OsString>, soname: &str) -> Result<Lib, LoadError> {
    let path = lib_path(libdir, soname);
    let name = path.display().to_string();
    if libdir.is_some() && !path.exists() {
        return Err(LoadError::NotFound { lib: name });
    }
    // SAFETY: rdma-core's libraries run no initialisers with preconditions on the caller
    // (libibverbs reads its configuration lazily, on the first device list).
    match unsafe { libloading::Library::new(&path) } {
        Ok(lib) => Ok(Lib { lib, name }),
        // Not found: the dynamic linker names this library with "No such file or directory"
        // (glibc: "NAME: cannot open shared object file: ...", musl: "... NAME: ..."). A
        // dependency of it that is missing names the dependency instead: "cannot load".
        Err(e) if is_not_found(&e.to_string(), &name) => Err(LoadError::NotFound { lib: name }),
        Err(e) => Err(LoadError::Open {
            lib: name,
            reason: e.to_string(),
        }),
    }
}

/// Whether the dynamic linker's message `msg` says that `name` itself does not exist.
fn is_not_found(msg: &str, name: &str) -> bool {
    msg.contains("No such file or directory") && msg.contains(&format!("{name}:"))
}

/// Both libraries' function tables. The libraries stay loaded for the life of the process.
pub struct RdmaCore {
    /// libibverbs' exported functions.
    pub verbs: super::verbs::VerbsFns,
    /// librdmacm's exported functions.
    pub cm: super::cm::CmFns,
    _libs: [libloading::Library; 2],
}

static RDMA_CORE: OnceLock<Result<RdmaCore, LoadError>> = OnceLock::new();

fn load_now() -> Result<RdmaCore, LoadError> {
    let libdir = std::env::var_os(LIBDIR_ENV);
    let verbs = open(libdir.as_ref(), LIBIBVERBS)?;
    let cm = open(libdir.as_ref(), LIBRDMACM)?;
    // SAFETY: `verbs` is libibverbs and `cm` librdmacm; the tables declare each function
    // with its rdma-core prototype.
    let (vf, cf) = unsafe {
        (
            super::verbs::VerbsFns::load(&verbs)?,
            super::cm::CmFns::load(&cm)?,
        )
    };
    log::info!("rdma: loaded rdma-core ({}, {})", verbs.name, cm.name);
    Ok(RdmaCore {
        verbs: vf,
        cm: cf,
        _libs: [verbs.lib, cm.lib],
    })
}

/// Loads rdma-core on the first call; later calls return the same table (or the same error:
/// a library installed while the target runs is not picked up until it restarts).
pub fn load() -> Result<&'static RdmaCore, &'static LoadError> {
    RDMA_CORE.get_or_init(load_now).as_ref()
}

/// The loaded table, for calls on objects that exist (every rdma-core object was created
/// through a call that loaded it first).
#[inline]
pub(crate) fn loaded() -> &'static RdmaCore {
    match load() {
        Ok(t) => t,
        Err(e) => panic!("an rdma-core call without rdma-core loaded: {e}"),
    }
}

/// Declares a table of exported C functions of one library, its loader, and a forwarding
/// `unsafe fn` per entry with the C name, so callers write `ibv_alloc_pd(ctx)` as with a
/// linked library.
macro_rules! rdma_core_fns {
    (
        $(#[$tm:meta])* $table:ident, $field:ident;
        $( $(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*
    ) => {
        $(#[$tm])*
        pub struct $table {
            $( $(#[$m])* pub $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?, )*
        }

        impl $table {
            /// Copies every function out of `lib`.
            ///
            /// # Safety
            /// `lib` must be the library these prototypes describe.
            pub(crate) unsafe fn load(
                lib: &super::rdma_core::Lib,
            ) -> Result<Self, super::rdma_core::LoadError> {
                Ok(Self {
                    $(
                        // SAFETY: the caller's contract: the prototype above is the symbol's.
                        $name: unsafe {
                            lib.get(stringify!($name), concat!(stringify!($name), "\0").as_bytes())?
                        },
                    )*
                })
            }
        }

        $(
            $(#[$m])*
            ///
            /// # Safety
            /// As for the C function; rdma-core must have been loaded
            /// ([`super::rdma_core::load`]) before, which every object's creation does.
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: forwarded to the C function with its own contract.
                unsafe { (super::rdma_core::loaded().$field.$name)($($arg),*) }
            }
        )*
    };
}
pub(crate) use rdma_core_fns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_message_is_the_documented_one() {
        let e = LoadError::NotFound {
            lib: LIBIBVERBS.into(),
        };
        assert_eq!(
            format!("RDMA transport: {e}"),
            "RDMA transport: rdma-core is not installed (libibverbs.so.1 not found: install \
             rdma-core / ibverbs-providers librdmacm1)"
        );
    }

    #[test]
    fn a_directory_without_the_libraries_is_not_found() {
        let dir = OsString::from("/nonexistent-keel-rdma-core");
        match open(Some(&dir), LIBIBVERBS) {
            Err(LoadError::NotFound { lib }) => {
                assert_eq!(lib, "/nonexistent-keel-rdma-core/libibverbs.so.1")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a library that does not exist"),
        }
    }

    #[test]
    fn a_missing_dependency_is_not_a_missing_library() {
        let glibc = "libnl-3.so.200: cannot open shared object file: No such file or directory";
        assert!(!is_not_found(glibc, LIBIBVERBS));
        assert!(is_not_found(
            "libibverbs.so.1: cannot open shared object file: No such file or directory",
            LIBIBVERBS
        ));
        assert!(is_not_found(
            "Error loading shared library libibverbs.so.1: No such file or directory",
            LIBIBVERBS
        ));

        // For real: a library whose dependency is gone (built with the C driver rustc links
        // with). The answer names the dependency, and is "cannot load", not "not installed".
        let dir = std::env::temp_dir().join(format!("keel-rdma-dep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("x.c");
        std::fs::write(&src, "int keel_x(void) { return 1; }\n").unwrap();
        let cc = |args: &[&str]| {
            let st = std::process::Command::new("cc")
                .args(args)
                .current_dir(&dir)
                .status()
                .expect("run cc (the C driver rustc links with)");
            assert!(st.success(), "cc {args:?}");
        };
        cc(&["-shared", "-fPIC", "-o", "libkeeldep.so", "x.c"]);
        cc(&[
            "-shared",
            "-fPIC",
            "-o",
            LIBIBVERBS,
            "x.c",
            "-L.",
            "-Wl,--no-as-needed",
            "-lkeeldep",
        ]);
        std::fs::remove_file(dir.join("libkeeldep.so")).unwrap();
        let r = open(Some(&dir.clone().into_os_string()), LIBIBVERBS);
        let _ = std::fs::remove_dir_all(&dir);
        match r {
            Err(LoadError::Open { reason, .. }) => {
                assert!(reason.contains("libkeeldep.so"), "{reason}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("loaded a library whose dependency is gone"),
        }
    }

    #[test]
    fn an_unknown_soname_is_not_found_and_a_non_library_cannot_load() {
        match open(None, "libkeel-no-such-library.so.1") {
            Err(LoadError::NotFound { lib }) => assert_eq!(lib, "libkeel-no-such-library.so.1"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a library that does not exist"),
        }
        // A file that exists but is not a shared object: "cannot load", not "not installed".
        let dir = std::env::temp_dir().join(format!("keel-rdma-core-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LIBIBVERBS), b"not an ELF file").unwrap();
        let r = open(Some(&dir.clone().into_os_string()), LIBIBVERBS);
        let _ = std::fs::remove_dir_all(&dir);
        match r {
            Err(e @ LoadError::Open { .. }) => {
                assert!(e.to_string().starts_with("cannot load rdma-core's "), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("loaded a text file"),
        }
    }
}
