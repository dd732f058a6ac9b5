//! Confident learning against cleanlab 1.0.1 (fixtures from
//! `tools/make_cleanlab_fixtures.py`) and against a case worked by hand.

use medseg_learners::noisy::{confident_joint, correct_labels, find_label_issues, Prune};
use ndarray::Array2;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Case {
    name: String,
    labels: Vec<u16>,
    probs: Vec<Vec<f32>>,
    confident_joint: Vec<Vec<i64>>,
    flagged: BTreeMap<String, Vec<usize>>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn probs(rows: &[Vec<f32>]) -> Array2<f32> {
    let k = rows[0].len();
    Array2::from_shape_vec((rows.len(), k), rows.concat()).unwrap()
}

#[test]
fn flags_equal_cleanlab() {
    let f: Fixture =
        serde_json::from_str(include_str!("fixtures/cleanlab.json")).expect("fixture parses");
    assert_eq!(f.cases.len(), 3);
    for c in &f.cases {
        let p = probs(&c.probs);
        let joint = confident_joint(&c.labels, p.view()).unwrap();
        let want: Vec<i64> = c.confident_joint.concat();
        assert_eq!(
            joint.iter().copied().collect::<Vec<_>>(),
            want,
            "{}: joint",
            c.name
        );
        for (method, prune) in [
            ("prune_by_class", Prune::PruneByClass),
            ("prune_by_noise_rate", Prune::PruneByNoiseRate),
            ("both", Prune::Both),
        ] {
            let flags = find_label_issues(&c.labels, p.view(), prune).unwrap();
            let got: Vec<usize> = (0..flags.len()).filter(|&i| flags[i]).collect();
            assert!(!got.is_empty(), "{}: {method} flags nothing", c.name);
            assert_eq!(got, c.flagged[method], "{}: {method}", c.name);
        }
    }
}

/// Two classes, ten pixels each. Worked by hand:
/// - thresholds: class 0, mean p0 over the 0-labelled =
///   (7 * 0.9 + 0.1 + 0.1 + 0.4) / 10 = 0.69; class 1, mean p1 over the
///   1-labelled = (9 * 0.8 + 0.2) / 10 = 0.74;
/// - confident guesses: of the 0-labelled, seven (0.9, 0.1) are class 0, two
///   (0.1, 0.9) class 1, (0.4, 0.6) none; of the 1-labelled, nine (0.2, 0.8)
///   are class 1 and (0.8, 0.2) class 0: joint [[7, 2], [1, 9]], calibrated
///   to rows of 10: [[7.78, 2.22], [1, 9]], rounded [[8, 2], [1, 9]];
/// - by class: class 0 drops 10 - 8 = 2 pixels of lowest p0 (the two 0.1),
///   class 1 drops 10 - 9 = 1 (the 0.2); by noise rate: the 2 largest margins
///   p1 - p0 among the 0-labelled (0.8 twice) and the largest p0 - p1 among
///   the 1-labelled (0.6): the same three pixels; (0.4, 0.6) is kept;
/// - correction: the two flagged 0s become 1, the flagged 1 becomes 0.
#[test]
fn hand_worked_case() {
    let mut labels = vec![0u16; 10];
    labels.extend([1u16; 10]);
    let mut rows: Vec<Vec<f32>> = vec![vec![0.9, 0.1]; 7];
    rows.extend([vec![0.1, 0.9], vec![0.1, 0.9], vec![0.4, 0.6]]);
    rows.extend(vec![vec![0.2, 0.8]; 9]);
    rows.push(vec![0.8, 0.2]);
    let p = probs(&rows);
    let joint = confident_joint(&labels, p.view()).unwrap();
    assert_eq!(joint.iter().copied().collect::<Vec<_>>(), vec![8, 2, 1, 9]);
    for prune in [Prune::PruneByClass, Prune::PruneByNoiseRate, Prune::Both] {
        let flags = find_label_issues(&labels, p.view(), prune).unwrap();
        let got: Vec<usize> = (0..20).filter(|&i| flags[i]).collect();
        assert_eq!(got, vec![7, 8, 19], "{prune:?}");
    }
    let flags = find_label_issues(&labels, p.view(), Prune::Both).unwrap();
    let corrected = correct_labels(&labels, p.view(), &flags);
    let mut want = labels.clone();
    want[7] = 1;
    want[8] = 1;
    want[19] = 0;
    assert_eq!(corrected, want);
}
