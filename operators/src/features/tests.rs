use super::*;

#[test]
fn catalogue_names_are_unique_and_documented() {
    let defs = defs();
    assert!(defs.len() >= 40, "{} features", defs.len());
    let mut names: Vec<&str> = defs.iter().map(|d| d.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), defs.len());
    for d in &defs {
        assert!(
            !d.description.is_empty() && !d.unit.is_empty() && d.null_when != Some(""),
            "{}",
            d.name
        );
        assert!(
            d.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}

#[test]
fn features_md_matches_the_catalogue() {
    crate::assert_doc_fresh("docs/FEATURES.md", &markdown(), "features_md");
}

#[test]
fn gap_buckets_keep_four_leading_bits() {
    assert_eq!(gap_bucket(15_999), 15);
    assert_eq!(gap_bucket(16_000), 16);
    // 16–31 µs in steps of 2, 32–63 in steps of 4, ...
    assert_eq!(gap_bucket(17_500), 16);
    assert_eq!(gap_bucket(19_000), 18);
    assert_eq!(gap_bucket(35_000), 32);
    assert_eq!(gap_bucket(36_000), 36);
    // 1 s = 1,000,000 µs = 0b1111_0100_0010_0100_0000: four leading bits kept.
    assert_eq!(gap_bucket(1_000_000_000), 0b1111_0000_0000_0000_0000);
    assert_eq!(gap_bucket(-5), 0);
}

#[test]
fn pearson_of_known_series() {
    let c = |v: &[(f64, f64)]| pearson(v.iter().copied());
    assert_eq!(c(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]), Some(1.0));
    assert_eq!(c(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]), Some(-1.0));
    assert_eq!(c(&[(1.0, 1.0), (2.0, 1.0)]), None);
    assert_eq!(c(&[(1.0, 1.0)]), None);
    let r = c(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]).expect("varying series");
    assert!((r - 0.5).abs() < 1e-12, "{r}");
}

#[test]
fn entropy_of_known_distributions() {
    assert_eq!(
        entropy_bits([5].into_iter()).map(f64::to_bits),
        Some(0.0f64.to_bits())
    );
    assert_eq!(entropy_bits([1, 1].into_iter()), Some(1.0));
    assert_eq!(entropy_bits([2, 2, 2, 2].into_iter()), Some(2.0));
    assert_eq!(entropy_bits(std::iter::empty()), None);
}
