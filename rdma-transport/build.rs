//! keel-rdma needs nothing from rdma-core to build: the libraries are loaded at run time
//! (src/ffi/rdma_core.rs). Where rdma-core's headers are installed (Debian: libibverbs-dev
//! librdmacm-dev; CI installs them), this builds the C side of the layout test
//! (csrc/layout.c: every binding's size and field offsets as the C compiler sees the headers)
//! and enables `cfg(keel_rdma_layout)` for `src/ffi/layout_tests.rs`; elsewhere it says, with a
//! warning, that the check is skipped.

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether the C compiler finds both headers (runs its preprocessor on two `#include`s).
fn headers_present() -> Result<(), String> {
    let compiler = cc::Build::new()
        .try_get_compiler()
        .map_err(|e| format!("no C compiler ({e})"))?;
    let mut child = Command::new(compiler.path())
        .args(compiler.args())
        .args(["-E", "-x", "c", "-o", "/dev/null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the C compiler {:?}: {e}", compiler.path()))?;
    // A compiler that exits early closes the pipe: its exit status says what happened.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"#include <infiniband/verbs.h>\n#include <rdma/rdma_cma.h>\n");
    let status = child
        .wait()
        .map_err(|e| format!("the C compiler did not finish: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} cannot preprocess <infiniband/verbs.h> and <rdma/rdma_cma.h> (rdma-core \
             headers not installed? apt-get install libibverbs-dev librdmacm-dev)",
            compiler.path()
        ))
    }
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/layout.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg(keel_rdma_layout)");
    match headers_present() {
        Ok(()) => {
            cc::Build::new()
                .file("csrc/layout.c")
                .warnings(true)
                .extra_warnings(true)
                .compile("keel_rdma_layout");
            println!("cargo:rustc-cfg=keel_rdma_layout");
        }
        Err(why) => println!(
            "cargo:warning=keel-rdma: the C layout check of the rdma-core bindings is skipped: \
             {why}; keel-rdma builds and runs without them (rdma-core is loaded at run time)"
        ),
    }
}
