//! The real routing tables in `../shared/data/` beside the repository (read compressed, never
//! copied in): a full Internet table as one router saw it in 2023.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use flate2::read::GzDecoder;
use ipnet::{Ipv4Net, Ipv6Net};

/// `$POP_FULLTABLE_DIR`, else `shared/data/fulltable-2023` next to the repository.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POP_FULLTABLE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fulltable-2023")
}

/// The IPv4 and IPv6 prefixes of the full table.
pub fn read() -> anyhow::Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
    Ok((read_file("ipv4.txt.gz")?, read_file("ipv6.txt.gz")?))
}

fn read_file<T: std::str::FromStr>(name: &str) -> anyhow::Result<Vec<T>> {
    let path = dir().join(name);
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "opening {} (the full routing table; set POP_FULLTABLE_DIR to its directory)",
            path.display()
        )
    })?;
    let mut prefixes = Vec::new();
    for (number, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let text = line.split_whitespace().next().unwrap_or("");
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match text.parse() {
            Ok(prefix) => prefixes.push(prefix),
            Err(_) => bail!("{}:{}: not a prefix: {text:?}", path.display(), number + 1),
        }
    }
    Ok(prefixes)
}
