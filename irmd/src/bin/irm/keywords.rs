//! The model's keyword habits: `irm ipcp bootstrap type eth-dix name a layer l
//! device d`, any unambiguous prefix of a keyword (`lay` for `layer`), `device`
//! for `dev`, and keywords given more than once where a command takes several
//! values (`layer a layer b`). A bad keyword is a usage error ([`Usage`]:
//! exit status 2), kept apart from irmd's refusals (status 1).

use std::collections::BTreeMap;
use std::fmt;

/// A mistake in how the command was written (exit status 2, as iproute2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Usage {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Other spellings of a keyword: (spelling, keyword).
const SYNONYMS: &[(&str, &str)] = &[("device", "dev")];

/// The keyword `word` means among `allowed`: exact, a synonym, or the one
/// keyword (or synonym) it is a prefix of.
pub fn resolve(word: &str, allowed: &[&str]) -> Result<String, Usage> {
    let spellings = allowed.iter().map(|k| (*k, *k)).chain(
        SYNONYMS
            .iter()
            .filter(|(_, k)| allowed.contains(k))
            .copied(),
    );
    let mut hits: Vec<&str> = Vec::new();
    for (spelling, key) in spellings {
        if spelling == word {
            return Ok(key.to_string());
        }
        if !word.is_empty() && spelling.starts_with(word) && !hits.contains(&key) {
            hits.push(key);
        }
    }
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Usage(format!(
            "unknown keyword `{word}` (expected one of: {})",
            allowed.join(", ")
        ))),
        many => Err(Usage(format!(
            "keyword `{word}` is ambiguous ({})",
            many.join(", ")
        ))),
    }
}

/// Keyword/value pairs; keywords in `repeatable` may come more than once.
pub fn pairs_multi(
    args: &[String],
    allowed: &[&str],
    required: &[&str],
    repeatable: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, Usage> {
    if !args.len().is_multiple_of(2) {
        return Err(Usage(format!(
            "keyword `{}` has no value",
            args[args.len() - 1]
        )));
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kv in args.chunks(2) {
        let key = resolve(&kv[0], allowed)?;
        let values = out.entry(key.clone()).or_default();
        if !values.is_empty() && !repeatable.contains(&key.as_str()) {
            return Err(Usage(format!("keyword `{key}` given twice")));
        }
        values.push(kv[1].clone());
    }
    for r in required {
        if !out.contains_key(*r) {
            return Err(Usage(format!("missing `{r} <value>`")));
        }
    }
    Ok(out)
}

/// Keyword/value pairs, each keyword at most once.
pub fn pairs(
    args: &[String],
    allowed: &[&str],
    required: &[&str],
) -> Result<BTreeMap<String, String>, Usage> {
    Ok(pairs_multi(args, allowed, required, &[])?
        .into_iter()
        .map(|(k, mut v)| (k, v.remove(0)))
        .collect())
}

/// The IPCP types `irm` knows, with the model's name for the Ethernet one.
pub fn ipcp_type(t: &str) -> Result<(), Usage> {
    match t {
        "eth" | "eth-dix" => Ok(()),
        other => Err(Usage(format!(
            "IPCP type `{other}` is not supported (eth, or eth-dix as the model names it)"
        ))),
    }
}

/// `queues <n>`: receive queues, one worker thread each (1..=MAX_QUEUES).
pub fn queues(v: &str) -> Result<u16, Usage> {
    v.parse::<u16>()
        .ok()
        .filter(|q| (1..=irm::proto::MAX_QUEUES).contains(q))
        .ok_or_else(|| {
            Usage(format!(
                "queues `{v}` is not a queue count (1..={})",
                irm::proto::MAX_QUEUES
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_counts() {
        assert_eq!(queues("4"), Ok(4));
        assert_eq!(queues("1"), Ok(1));
        for bad in ["0", "65", "-1", "four", ""] {
            assert!(queues(bad).is_err(), "{bad}");
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const BOOT: &[&str] = &[
        "type",
        "name",
        "layer",
        "dev",
        "ethertype",
        "backend",
        "busy-poll",
    ];

    #[test]
    fn prefixes_and_synonyms() {
        assert_eq!(resolve("lay", BOOT).unwrap(), "layer");
        assert_eq!(resolve("device", BOOT).unwrap(), "dev");
        assert_eq!(resolve("devi", BOOT).unwrap(), "dev");
        assert_eq!(resolve("d", BOOT).unwrap(), "dev");
        assert_eq!(resolve("eth", BOOT).unwrap(), "ethertype");
        assert_eq!(resolve("n", BOOT).unwrap(), "name");
        assert!(resolve("b", BOOT)
            .unwrap_err()
            .contains("ambiguous (backend, busy-poll)"));
        assert!(resolve("colour", BOOT)
            .unwrap_err()
            .contains("unknown keyword"));
        assert!(resolve("", BOOT).unwrap_err().contains("unknown keyword"));
        // `device` is only a synonym where `dev` is allowed.
        assert!(resolve("device", &["name"]).is_err());
    }

    #[test]
    fn pairs_resolve_and_check() {
        let kv = pairs(
            &s(&["ty", "eth-dix", "na", "a", "l", "lan", "device", "eth1"]),
            BOOT,
            &["type", "name", "layer", "dev"],
        )
        .unwrap();
        assert_eq!(kv["type"], "eth-dix");
        assert_eq!(kv["dev"], "eth1");
        assert_eq!(kv["layer"], "lan");
        assert!(pairs(&s(&["dev", "a", "device", "b"]), BOOT, &[])
            .unwrap_err()
            .contains("`dev` given twice"));
        assert!(pairs(&s(&["type"]), BOOT, &[])
            .unwrap_err()
            .contains("no value"));
        assert!(pairs(&s(&["type", "eth"]), BOOT, &["dev"])
            .unwrap_err()
            .contains("missing `dev"));
    }

    #[test]
    fn repeated_layers() {
        let kv = pairs_multi(
            &s(&["layer", "a", "lay", "b"]),
            &["layer"],
            &["layer"],
            &["layer"],
        )
        .unwrap();
        assert_eq!(kv["layer"], s(&["a", "b"]));
    }

    #[test]
    fn types() {
        assert!(ipcp_type("eth").is_ok());
        assert!(ipcp_type("eth-dix").is_ok());
        assert!(ipcp_type("udp4").unwrap_err().contains("not supported"));
    }
}
