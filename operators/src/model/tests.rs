use super::*;

/// A small network's normal: `packets` varies, `bytes` follows it, `syns` is a
/// small count, `errors` is always 0; one gauge is sometimes null.
fn normal(n: usize) -> (Vec<String>, Vec<String>, Vec<Vec<f64>>) {
    let names = ["packets", "bytes", "syns", "errors", "rtt"].map(String::from);
    let dtypes = ["count", "count", "count", "count", "gauge"].map(String::from);
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut cols = vec![Vec::new(); 5];
    for i in 0..n {
        let p = 100.0 + 900.0 * next();
        cols[0].push(p.round());
        cols[1].push((p * (500.0 + 100.0 * next())).round());
        cols[2].push((3.0 * next()).round());
        cols[3].push(0.0);
        cols[4].push(if i % 7 == 0 { f64::NAN } else { 20.0 + next() });
    }
    (names.to_vec(), dtypes.to_vec(), cols)
}

fn set<'a>(names: &'a [String], dtypes: &'a [String], cols: Vec<Vec<f64>>) -> TrainingSet<'a> {
    TrainingSet {
        names,
        dtypes,
        columns: cols,
        windows: 10,
        entities: 5,
        first_window_us: 0,
        last_window_us: 270_000_000,
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_row_unlike_training_scores_above_the_threshold_and_says_why() {
    let (names, dtypes, cols) = normal(2000);
    let model = fit(&set(&names, &dtypes, cols.clone()), FitOptions::default()).expect("fit");
    assert!(model.threshold > 1.0, "{}", model.threshold);
    // Training rows: at most about the false-positive rate above.
    let above = (0..2000)
        .filter(|&i| {
            let row: Vec<f64> = cols.iter().map(|c| c[i]).collect();
            model.score(&row).score > model.threshold
        })
        .count();
    assert!(above <= 3, "{above} training rows above the threshold");
    // An ordinary row, then one whose bytes do not follow its packets and
    // whose error count, always 0 in training, is not.
    let ordinary = model.score(&[500.0, 275_000.0, 1.0, 0.0, 20.5]);
    assert!(ordinary.score < model.threshold, "{ordinary:?}");
    let odd = model.score(&[120.0, 9_000_000.0, 2.0, 40.0, 20.5]);
    assert!(odd.score > model.threshold, "{odd:?}");
    // The score alone, as every row gets it, is the same number.
    let mut scratch = (Vec::new(), Vec::new());
    let alone = model.score_value(&[120.0, 9_000_000.0, 2.0, 40.0, 20.5], &mut scratch);
    assert_eq!(alone, odd.score);
    let named: Vec<&str> = odd
        .top
        .iter()
        .take(3)
        .map(|(k, _)| names[*k].as_str())
        .collect();
    assert!(
        named[0] == "errors" && named.contains(&"bytes") && !named.contains(&"rtt"),
        "{named:?}"
    );
}

#[test]
fn the_same_data_gives_the_same_bytes_and_the_file_reads_back() {
    let (names, dtypes, cols) = normal(600);
    let a = fit(&set(&names, &dtypes, cols.clone()), FitOptions::default()).expect("fit");
    let b = fit(&set(&names, &dtypes, cols), FitOptions::default()).expect("fit");
    assert_eq!(a.to_json(), b.to_json());
    let back = Model::from_bytes(a.to_json().as_bytes(), &strs(&names), &strs(&dtypes))
        .expect("reads back");
    assert_eq!(back, a);
}

#[test]
fn files_that_do_not_match_are_refused_with_the_reason() {
    let (names, dtypes, cols) = normal(300);
    let m = fit(&set(&names, &dtypes, cols), FitOptions::default()).expect("fit");
    let text = m.to_json();
    let (n, d) = (strs(&names), strs(&dtypes));
    let err =
        |bytes: &[u8], n: &[&str], d: &[&str]| Model::from_bytes(bytes, n, d).expect_err("refused");
    assert!(err(&text.as_bytes()[..text.len() / 2], &n, &d).contains("not JSON"));
    assert!(err(b"{\"a\": 1}", &n, &d).contains("not a model file"));
    let other = text.replacen("\"version\":1", "\"version\":9", 1);
    assert!(err(other.as_bytes(), &n, &d).contains("format version 9"));
    let other = text.replacen(SMARTCORE, "0.3.2", 1);
    assert!(err(other.as_bytes(), &n, &d).contains("smartcore 0.3.2"));
    assert!(err(text.as_bytes(), &n[..4], &d[..4]).contains("another feature catalogue"));
    let mut renamed = n.clone();
    renamed[2] = "syn_packets";
    assert!(err(text.as_bytes(), &renamed, &d).contains("another feature catalogue"));
    let mut broken = m.clone();
    broken.components[0].pop();
    assert!(err(broken.to_json().as_bytes(), &n, &d).contains("corrupt"));
}

#[test]
fn too_little_training_data_is_an_error() {
    let (names, dtypes, cols) = normal(5);
    let e = fit(&set(&names, &dtypes, cols), FitOptions::default()).expect_err("too few");
    assert!(e.contains("training row"), "{e}");
}
