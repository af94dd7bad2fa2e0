//! The numbers and layouts C programs see: error codes, `fccntl` commands
//! and flags, `fqueue` event bits and `qosspec_t`. Each value is listed,
//! with where it is documented, in `docs/capi.md`; the headers in
//! `capi/include/ouroboros/` define the same values, and the constant
//! checker in `capi/examples/constants.c` compares the two.

use std::time::Duration;

use irm::Qos;

// Error numbers of the model's `errno.h` (the same numbers as irm's).
pub const ENOTALLOC: i32 = irm::error::ENOTALLOC;
pub const EIRMD: i32 = irm::error::EIRMD;
pub const EFLOWDOWN: i32 = irm::error::EFLOWDOWN;

// Flow flags (`FLOWSFLAGS`/`FLOWGFLAGS`), octal as in fcntl.h.
pub const FLOWFRDONLY: u32 = 0o0;
pub const FLOWFWRONLY: u32 = 0o1;
pub const FLOWFRDWR: u32 = 0o2;
pub const FLOWFACCMODE: u32 = 0o3;
pub const FLOWFDOWN: u32 = 0o4;
pub const FLOWFRNOBLOCK: u32 = 0o1000;
pub const FLOWFWNOBLOCK: u32 = 0o2000;
pub const FLOWFNONBLOCK: u32 = FLOWFRNOBLOCK | FLOWFWNOBLOCK;
pub const FLOWFRNOPART: u32 = 0o10000;
pub const FLOWFWNOPART: u32 = 0o20000;
pub const FLOWFDEFAULT: u32 = FLOWFRDWR | FLOWFWNOPART;
pub const FLOWFINVALID: u32 = FLOWFWRONLY | FLOWFRDWR;
/// Every flag `FLOWSFLAGS` accepts.
pub const FLOWF_KNOWN: u32 = FLOWFACCMODE | FLOWFDOWN | FLOWFNONBLOCK | FLOWFRNOPART | FLOWFWNOPART;

// FRCT flags: accepted and stored; ethflow has no FRCT (see docs/capi.md).
pub const FRCTFRESCNTRL: u32 = 0o1;
pub const FRCTFRTX: u32 = 0o2;
pub const FRCTFLINGER: u32 = 0o4;

// fccntl commands.
pub const FLOWSRCVTIMEO: i32 = 0o1;
pub const FLOWGRCVTIMEO: i32 = 0o2;
pub const FLOWSSNDTIMEO: i32 = 0o3;
pub const FLOWGSNDTIMEO: i32 = 0o4;
pub const FLOWGQOSSPEC: i32 = 0o5;
pub const FLOWSFLAGS: i32 = 0o6;
pub const FLOWGFLAGS: i32 = 0o7;
pub const FLOWGRXQLEN: i32 = 0o10;
pub const FLOWGTXQLEN: i32 = 0o11;
pub const FRCTSFLAGS: i32 = 0o1000;
pub const FRCTGFLAGS: i32 = 0o2000;

// fqueue event types (`enum fqtype`), one bit each.
pub const FLOW_PKT: i32 = 1 << 0;
pub const FLOW_DOWN: i32 = 1 << 1;
pub const FLOW_UP: i32 = 1 << 2;
pub const FLOW_ALLOC: i32 = 1 << 3;
pub const FLOW_DEALLOC: i32 = 1 << 4;
pub const FLOW_PEER: i32 = 1 << 5;

/// The cubes' liveness timeout (`qos_raw.timeout` ...), in ms.
pub const QOS_DEFAULT_TIMEOUT_MS: u32 = 120_000;

/// `qosspec_t`, field for field (natural C alignment: 40 bytes on LP64).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosSpec {
    /// ms
    pub delay: u32,
    /// bit/s
    pub bandwidth: u64,
    /// class of nines
    pub availability: u8,
    pub loss: u32,
    /// errors per billion bits
    pub ber: u32,
    pub in_order: u8,
    pub max_gap: u32,
    /// liveness timeout in ms; 0 = irmd's default
    pub timeout: u32,
}

impl QosSpec {
    /// What irm asks irmd for.
    pub fn to_qos(self) -> Qos {
        Qos {
            delay: self.delay,
            bandwidth: self.bandwidth,
            availability: self.availability,
            loss: self.loss,
            ber: self.ber,
            in_order: self.in_order != 0,
            max_gap: self.max_gap,
            timeout: u64::from(self.timeout),
            // C programs get secure flows from the name's configuration.
            encrypt: false,
        }
    }

    /// What a C program is told (a timeout beyond u32 ms reads as the maximum).
    pub fn from_qos(q: &Qos) -> QosSpec {
        QosSpec {
            delay: q.delay,
            bandwidth: q.bandwidth,
            availability: q.availability,
            loss: q.loss,
            ber: q.ber,
            in_order: u8::from(q.in_order),
            max_gap: q.max_gap,
            timeout: u32::try_from(q.timeout).unwrap_or(u32::MAX),
        }
    }

    /// `qos_raw` without a timeout of its own: what a NULL `qosspec_t *` asks for.
    pub fn raw_default() -> QosSpec {
        QosSpec::from_qos(&Qos::raw())
    }
}

/// A `struct timespec` from C, checked: negative or out-of-range fields are
/// refused (EINVAL).
pub fn duration_of(sec: i64, nsec: i64) -> Option<Duration> {
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    Some(Duration::new(sec as u64, nsec as u32))
}

/// The other way: (tv_sec, tv_nsec), saturating.
pub fn timespec_of(d: Duration) -> (i64, i64) {
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i64::from(d.subsec_nanos()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qosspec_layout_is_the_c_one() {
        // delay@0 bandwidth@8 availability@16 loss@20 ber@24 in_order@28 max_gap@32 timeout@36
        assert_eq!(std::mem::size_of::<QosSpec>(), 40);
        assert_eq!(std::mem::offset_of!(QosSpec, bandwidth), 8);
        assert_eq!(std::mem::offset_of!(QosSpec, availability), 16);
        assert_eq!(std::mem::offset_of!(QosSpec, loss), 20);
        assert_eq!(std::mem::offset_of!(QosSpec, in_order), 28);
        assert_eq!(std::mem::offset_of!(QosSpec, timeout), 36);
    }

    #[test]
    fn qos_round_trips() {
        let q = Qos::video().with_timeout(5000);
        assert_eq!(QosSpec::from_qos(&q).to_qos(), q);
        let huge = Qos::raw().with_timeout(u64::MAX);
        assert_eq!(QosSpec::from_qos(&huge).timeout, u32::MAX);
    }

    #[test]
    fn errno_numbers_are_the_models() {
        assert_eq!((ENOTALLOC, EIRMD, EFLOWDOWN), (1000, 1002, 1005));
        assert_eq!(irm::Error::FlowPeer.code(), 1006);
        // A failed secure allocation: flow_alloc returns these negated.
        assert_eq!(crate::table::err(&irm::Error::Crypt), -1008);
        assert_eq!(crate::table::err(&irm::Error::Auth), -1009);
    }

    #[test]
    fn flags_are_distinct_bits_beside_the_access_mode() {
        let bits = [
            FLOWFDOWN,
            FLOWFRNOBLOCK,
            FLOWFWNOBLOCK,
            FLOWFRNOPART,
            FLOWFWNOPART,
        ];
        for (i, a) in bits.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            assert_eq!(a & FLOWFACCMODE, 0);
            for b in &bits[i + 1..] {
                assert_eq!(a & b, 0);
            }
        }
        assert_eq!(FLOWFDEFAULT, 0o20002);
        assert_eq!(FLOWFRDONLY, 0);
    }

    #[test]
    fn timespecs_are_checked() {
        assert_eq!(
            duration_of(1, 500_000_000),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(duration_of(-1, 0), None);
        assert_eq!(duration_of(0, 1_000_000_000), None);
        assert_eq!(timespec_of(Duration::from_millis(1500)), (1, 500_000_000));
    }
}
