//! Builds the C shim over rdma-core's static-inline verbs (csrc/shim.c) and the layout table
//! (csrc/layout.c), and links libibverbs and librdmacm (Debian: libibverbs-dev librdmacm-dev).

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/layout.c");
    cc::Build::new()
        .file("csrc/shim.c")
        .file("csrc/layout.c")
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-Werror=implicit-function-declaration")
        .compile("keel_rdma_shim");
    println!("cargo:rustc-link-lib=ibverbs");
    println!("cargo:rustc-link-lib=rdmacm");
}
