//! The `xdp` backend (not built yet).

use crate::backend::FrameIo;

/// Open the XDP backend on an interface.
pub fn open(
    dev: &str,
    _ifindex: i32,
    _ethertype: u16,
    _mtu: u32,
) -> Result<Box<dyn FrameIo>, String> {
    Err(format!(
        "backend xdp is not available in this build (interface {dev})"
    ))
}
