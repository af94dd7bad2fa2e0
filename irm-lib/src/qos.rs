//! QoS specifications, with presets named like the model's QoS cubes.

use serde::{Deserialize, Serialize};

/// What an application asks of a flow. Only `timeout` (the liveness timeout) is
/// acted on by the Ethernet layer today; the other fields travel with the flow
/// request so a peer and future layers can see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qos {
    /// Delay bound in ms (`u32::MAX` = none).
    pub delay: u32,
    /// Bandwidth in bit/s (0 = none).
    pub bandwidth: u64,
    /// Availability class (nines).
    pub availability: u8,
    /// Tolerated loss in parts per million.
    pub loss: u32,
    /// Tolerated bit error rate (parts per billion).
    pub ber: u32,
    /// In-order delivery wanted.
    pub in_order: bool,
    /// Max gap in SDUs before declaring loss.
    pub max_gap: u32,
    /// Flow liveness timeout in milliseconds; 0 = use irmd's default.
    pub timeout: u64,
    /// Demand a secure flow. A flow to a name this host has a security
    /// configuration for (`irm name create … cacrtpath …`) is secure either
    /// way; with `encrypt` set, a name without one fails with EAUTH instead
    /// of giving a plain flow.
    pub encrypt: bool,
}

impl Qos {
    pub const fn raw() -> Qos {
        Qos {
            delay: u32::MAX,
            bandwidth: 0,
            availability: 0,
            loss: 1,
            ber: 1,
            in_order: false,
            max_gap: u32::MAX,
            timeout: 0,
            encrypt: false,
        }
    }
    pub const fn best_effort() -> Qos {
        Qos {
            delay: u32::MAX,
            bandwidth: 0,
            availability: 0,
            loss: 1,
            ber: 0,
            in_order: true,
            max_gap: u32::MAX,
            timeout: 0,
            encrypt: false,
        }
    }
    pub const fn video() -> Qos {
        Qos {
            delay: 100,
            bandwidth: 100_000_000,
            availability: 3,
            loss: 1,
            ber: 0,
            in_order: true,
            max_gap: 100,
            timeout: 0,
            encrypt: false,
        }
    }
    pub const fn voice() -> Qos {
        Qos {
            delay: 50,
            bandwidth: 100_000,
            availability: 5,
            loss: 1,
            ber: 0,
            in_order: true,
            max_gap: 20,
            timeout: 0,
            encrypt: false,
        }
    }
    pub const fn data() -> Qos {
        Qos {
            delay: 1000,
            bandwidth: 0,
            availability: 0,
            loss: 0,
            ber: 0,
            in_order: true,
            max_gap: 2000,
            timeout: 0,
            encrypt: false,
        }
    }
    pub const fn raw_safe() -> Qos {
        Qos {
            ber: 0,
            ..Qos::raw()
        }
    }
    /// `raw` that must be secure (see [`Qos::encrypt`]).
    pub const fn raw_crypt() -> Qos {
        Qos {
            encrypt: true,
            ..Qos::raw()
        }
    }

    /// Preset by its model name (`raw`, `best_effort`, `video`, `voice`, `data`, `raw_safe`,
    /// `raw_crypt`).
    pub fn by_name(name: &str) -> Option<Qos> {
        Some(match name {
            "raw" => Qos::raw(),
            "best_effort" | "be" => Qos::best_effort(),
            "video" => Qos::video(),
            "voice" => Qos::voice(),
            "data" => Qos::data(),
            "raw_safe" => Qos::raw_safe(),
            "raw_crypt" => Qos::raw_crypt(),
            _ => return None,
        })
    }

    /// Same spec with a liveness timeout in milliseconds.
    pub const fn with_timeout(mut self, ms: u64) -> Qos {
        self.timeout = ms;
        self
    }
}

impl Default for Qos {
    fn default() -> Self {
        Qos::raw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_by_name() {
        assert_eq!(Qos::by_name("voice"), Some(Qos::voice()));
        assert_eq!(Qos::by_name("nope"), None);
        assert_eq!(Qos::raw().with_timeout(5).timeout, 5);
        assert!(Qos::by_name("raw_crypt").unwrap().encrypt);
        assert!(!Qos::raw().encrypt);
    }
}
