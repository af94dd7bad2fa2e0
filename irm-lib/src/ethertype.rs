//! Ethertypes a layer may use: one parser and one table of refused values,
//! for `irm ipcp bootstrap ... ethertype X`, irmd and `ipcpd-eth --ethertype`.
//!
//! Forms: `0x88b5` (hex), `88b5` (bare hex, as the model's CLI takes it) and
//! decimal (`34997`). A bare string of 1–4 decimal digits reads differently
//! as hex and as decimal (`8100` is 0x8100 or 0x1fa4), so it is refused with
//! both readings rather than guessed.
//!
//! Refused: values below 0x0600 (802.3 length fields), 0xFFFF (reserved), and
//! the registered types of other protocols — an IPCP on such a type would
//! take, or with backend xdp drop, that protocol's traffic on the interface.
//! The IEEE local experimental types 0x88B5 and 0x88B6 are meant for uses
//! like ours; 0x88B5 is the default.

/// The default ethertype: IEEE 802 local experimental 1.
pub const DEFAULT_ETHERTYPE: u16 = 0x88b5;

/// Registered ethertypes of other protocols, sorted by value.
pub const REFUSED: &[(u16, &str)] = &[
    (0x0800, "IPv4"),
    (0x0806, "ARP"),
    (0x0842, "Wake-on-LAN"),
    (0x22f0, "AVTP (IEEE 1722)"),
    (0x22f3, "TRILL"),
    (0x6003, "DECnet Phase IV"),
    (0x8035, "RARP"),
    (0x809b, "AppleTalk"),
    (0x80f3, "AppleTalk ARP"),
    (0x8100, "802.1Q VLAN tag"),
    (0x8137, "IPX"),
    (0x86dd, "IPv6"),
    (0x8808, "Ethernet flow control (PAUSE)"),
    (0x8809, "slow protocols (LACP)"),
    (0x8847, "MPLS unicast"),
    (0x8848, "MPLS multicast"),
    (0x8863, "PPPoE discovery"),
    (0x8864, "PPPoE session"),
    (0x887b, "HomePlug"),
    (0x888e, "EAPOL (802.1X)"),
    (0x8892, "PROFINET"),
    (0x889a, "HyperSCSI"),
    (0x88a2, "ATA over Ethernet"),
    (0x88a4, "EtherCAT"),
    (0x88a8, "802.1ad QinQ service tag"),
    (0x88ab, "Ethernet Powerlink"),
    (0x88b7, "OUI extended ethertype"),
    (0x88b8, "IEC 61850 GOOSE"),
    (0x88ba, "IEC 61850 sampled values"),
    (0x88cc, "LLDP"),
    (0x88cd, "SERCOS III"),
    (0x88e1, "HomePlug AV"),
    (0x88e3, "MRP (IEC 62439-2)"),
    (0x88e5, "MACsec"),
    (0x88e7, "802.1ah provider backbone bridging"),
    (0x88f7, "PTP (IEEE 1588)"),
    (0x88f8, "NC-SI"),
    (0x88fb, "PRP"),
    (0x8902, "CFM / Y.1731 (802.1ag)"),
    (0x8906, "FCoE"),
    (0x8914, "FCoE initialization (FIP)"),
    (0x8915, "RoCE"),
    (0x891d, "TTEthernet"),
    (0x892f, "HSR"),
    (0x893a, "IEEE 1905.1"),
    (0x893f, "802.1BR E-tag"),
    (0x894f, "NSH"),
    (0x9000, "Ethernet configuration testing (loopback)"),
    (0x9100, "QinQ (pre-802.1ad tag)"),
    (0x9200, "QinQ (pre-802.1ad tag)"),
    (0xcafe, "Veritas LLT"),
];

/// Why an ethertype was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EthertypeError {
    /// Not a number in any accepted form.
    NotANumber(String),
    /// More than 16 bits.
    TooLarge(String),
    /// 1–4 decimal digits without `0x`: hex and decimal readings differ.
    Ambiguous { text: String, hex: u16, dec: u16 },
    /// Below 0x0600: an 802.3 length, not an ethertype.
    Length(u16),
    /// 0xFFFF, reserved.
    Reserved,
    /// The registered type of another protocol.
    Taken { value: u16, protocol: &'static str },
}

impl std::fmt::Display for EthertypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EthertypeError::NotANumber(s) => write!(
                f,
                "ethertype `{s}` is not a number (write 0x88b5, 88b5 or 34997)"
            ),
            EthertypeError::TooLarge(s) => write!(f, "ethertype `{s}` does not fit in 16 bits"),
            EthertypeError::Ambiguous { text, hex, dec } => write!(
                f,
                "ethertype `{text}` is ambiguous: write 0x{hex:04x} for hex or 0x{dec:04x} \
                 for decimal {dec}"
            ),
            EthertypeError::Length(v) => write!(
                f,
                "ethertype 0x{v:04x} is below 0x0600: that range is an 802.3 frame length"
            ),
            EthertypeError::Reserved => f.write_str("ethertype 0xffff is reserved"),
            EthertypeError::Taken { value, protocol } => write!(
                f,
                "ethertype 0x{value:04x} belongs to {protocol}; use 0x88b5 or 0x88b6 \
                 (IEEE local experimental) or another unregistered value"
            ),
        }
    }
}

impl std::error::Error for EthertypeError {}

impl From<EthertypeError> for String {
    fn from(e: EthertypeError) -> String {
        e.to_string()
    }
}

/// The protocol that owns `value`, if it is in [`REFUSED`].
pub fn registered_protocol(value: u16) -> Option<&'static str> {
    REFUSED
        .binary_search_by_key(&value, |&(v, _)| v)
        .ok()
        .map(|i| REFUSED[i].1)
}

/// Checks a value: refused below 0x0600, at 0xFFFF, and for other protocols.
pub fn check_ethertype(value: u16) -> Result<u16, EthertypeError> {
    if value < 0x0600 {
        return Err(EthertypeError::Length(value));
    }
    if value == 0xffff {
        return Err(EthertypeError::Reserved);
    }
    if let Some(protocol) = registered_protocol(value) {
        return Err(EthertypeError::Taken { value, protocol });
    }
    Ok(value)
}

/// Parses an ethertype in any accepted form (see the module docs) and checks it.
pub fn parse_ethertype(s: &str) -> Result<u16, EthertypeError> {
    let text = s.trim();
    let too_large = || EthertypeError::TooLarge(text.to_string());
    let not_a_number = || EthertypeError::NotANumber(text.to_string());
    let hex = |h: &str| -> Result<u16, EthertypeError> {
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_a_number());
        }
        u32::from_str_radix(h, 16)
            .ok()
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(too_large)
    };
    let value = if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        hex(h)?
    } else if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        if text.len() <= 4 {
            let h = hex(text)?;
            let dec: u16 = text.parse().map_err(|_| not_a_number())?;
            return Err(EthertypeError::Ambiguous {
                text: text.to_string(),
                hex: h,
                dec,
            });
        }
        text.parse::<u64>()
            .ok()
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(too_large)?
    } else {
        hex(text)?
    };
    check_ethertype(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_default() {
        for s in ["0x88b5", "0X88B5", "88b5", "88B5", " 0x88b5 ", "34997"] {
            assert_eq!(parse_ethertype(s), Ok(0x88b5), "{s}");
        }
        assert_eq!(parse_ethertype("88b6"), Ok(0x88b6));
        assert_eq!(parse_ethertype("0xa000"), Ok(0xa000));
    }

    #[test]
    fn lengths_and_reserved_are_refused() {
        assert_eq!(
            parse_ethertype("0x05dc"),
            Err(EthertypeError::Length(0x05dc))
        );
        assert_eq!(parse_ethertype("0x0000"), Err(EthertypeError::Length(0)));
        assert_eq!(parse_ethertype("5ff"), Err(EthertypeError::Length(0x05ff)));
        assert_eq!(parse_ethertype("0x0600"), Ok(0x0600));
        assert_eq!(parse_ethertype("ffff"), Err(EthertypeError::Reserved));
        assert_eq!(parse_ethertype("65535"), Err(EthertypeError::Reserved));
        assert!(parse_ethertype("0x05dc")
            .unwrap_err()
            .to_string()
            .contains("802.3 frame length"));
    }

    #[test]
    fn other_protocols_are_refused_by_name() {
        for (s, name) in [
            ("0x0800", "IPv4"),
            ("0x0806", "ARP"),
            ("0x8035", "RARP"),
            ("86dd", "IPv6"),
            ("0x8100", "802.1Q"),
            ("0x88a8", "802.1ad"),
            ("0x9100", "QinQ"),
            ("0x8847", "MPLS"),
            ("0x8848", "MPLS"),
            ("0x8863", "PPPoE"),
            ("0x8864", "PPPoE"),
            ("88cc", "LLDP"),
            ("0x888e", "EAPOL"),
            ("0x88e5", "MACsec"),
            ("0x88f7", "PTP"),
            ("0x8906", "FCoE"),
            ("34525", "IPv6"),
        ] {
            let e = parse_ethertype(s).unwrap_err();
            assert!(matches!(e, EthertypeError::Taken { .. }), "{s}: {e:?}");
            assert!(e.to_string().contains(name), "{s}: {e}");
        }
    }

    #[test]
    fn short_decimal_digits_are_ambiguous() {
        let e = parse_ethertype("8100").unwrap_err();
        assert_eq!(
            e,
            EthertypeError::Ambiguous {
                text: "8100".into(),
                hex: 0x8100,
                dec: 8100
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("0x8100") && msg.contains("0x1fa4"), "{msg}");
        assert!(matches!(
            parse_ethertype("2048"),
            Err(EthertypeError::Ambiguous { .. })
        ));
    }

    #[test]
    fn garbage_and_overflow() {
        for s in ["", "0x", "zz", "0xg1", "-1", "88b5x", "0x88 b5"] {
            assert!(
                matches!(parse_ethertype(s), Err(EthertypeError::NotANumber(_))),
                "{s}: {:?}",
                parse_ethertype(s)
            );
        }
        for s in ["0x1ffff", "1ffff", "65536", "99999999999999999999999"] {
            assert!(
                matches!(parse_ethertype(s), Err(EthertypeError::TooLarge(_))),
                "{s}: {:?}",
                parse_ethertype(s)
            );
        }
    }

    #[test]
    fn table_is_sorted_without_duplicates_and_never_holds_the_default() {
        assert!(REFUSED.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(registered_protocol(DEFAULT_ETHERTYPE), None);
        assert_eq!(registered_protocol(0x88b6), None);
        assert!(REFUSED.iter().all(|&(v, _)| v >= 0x0600));
    }

    #[test]
    fn check_matches_parse() {
        for v in [0u16, 0x05ff, 0x0600, 0x0800, 0x88b5, 0x9100, 0xffff] {
            assert_eq!(
                check_ethertype(v),
                parse_ethertype(&format!("0x{v:04x}")),
                "{v:#x}"
            );
        }
    }
}
