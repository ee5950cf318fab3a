//! Helpers shared by the source tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// A file under ../shared/data, which the tests need beside the checkout.
pub fn data(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: the tests need ../shared/data beside the checkout",
        p.display()
    );
    p
}

/// Failed passwords per remote address by loghub's structured parse of
/// OpenSSH_2k.log: templates E9/E10 are one each, E14 ("message repeated N
/// times: [ Failed password ...]") is N. The address is the word after " from "
/// in the content column, read without the pipeline's patterns.
pub fn loghub_failed_passwords() -> BTreeMap<IpAddr, u64> {
    let csv =
        std::fs::read_to_string(data("syslog/loghub/OpenSSH_2k.log_structured.csv")).expect("csv");
    let mut want: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let id = if line.contains(",E9,") {
            "E9"
        } else if line.contains(",E10,") {
            "E10"
        } else if line.contains(",E14,") {
            "E14"
        } else {
            continue;
        };
        let content = line.splitn(7, ',').nth(6).unwrap_or("");
        let ip: IpAddr = content
            .split(" from ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("address");
        let n = if id == "E14" {
            content
                .split_whitespace()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .expect("count")
        } else {
            1
        };
        *want.entry(ip).or_default() += n;
    }
    want
}
