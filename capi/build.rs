//! The shared library's soname follows the C convention
//! (`libouroboros-dev.so.0`); scripts/install.sh installs the file under
//! that name with the `libouroboros-dev.so` link beside it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libouroboros-dev.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
