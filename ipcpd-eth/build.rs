//! Compiles the XDP program (`ebpf/ethflow_xdp.c`) with clang into OUT_DIR,
//! where `src/xdp` embeds it. Without clang (or when it fails) the crate still
//! builds: the `xdp` backend then refuses with the reason, and `raw` works.
//!
//! `CLANG` overrides the compiler's path.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ethflow_xdp_program)");
    println!("cargo::rerun-if-env-changed=CLANG");
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("../ebpf/ethflow_xdp.c");
    println!("cargo::rerun-if-changed={}", source.display());
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ethflow_xdp.o");
    match compile(&source, &out) {
        Ok(()) => println!("cargo::rustc-cfg=ethflow_xdp_program"),
        Err(why) => {
            println!("cargo::warning=building ipcpd-eth without the XDP program: {why}");
            println!("cargo::rustc-env=ETHFLOW_XDP_MISSING={why}");
        }
    }
}

fn compile(source: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The kernel headers include <asm/types.h>, which Debian keeps in the
    // multiarch directory of the *host* (the BPF target has none of its own).
    let arch =
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    // -g: aya needs the BTF that clang emits with debug info.
    let output = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &multiarch, "-c",
        ])
        .arg(source)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("built without clang: XDP program not available ({clang}: {e})"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("no message");
        return Err(format!(
            "clang could not compile ebpf/ethflow_xdp.c: {first}"
        ));
    }
    Ok(())
}
