//! A short, seeded fuzzing run of every target (a few seconds in all): no
//! parser panics on mutated fixtures; and every input that once made one
//! panic (kept under fuzz/regressions/<target>/) now gets an answer.

use medseg_fuzz::{fuzz, mutate, repo_root, run_one, Target};
use rand::SeedableRng;

#[test]
fn mutated_fixtures_never_make_a_parser_panic() {
    for target in Target::ALL {
        let r = fuzz(target, &repo_root(), 20261205, 400, 30.0).unwrap();
        assert!(
            r.executions >= 50,
            "{}: {} executions",
            target.name(),
            r.executions
        );
        let msgs: Vec<String> = r
            .findings
            .iter()
            .map(|(n, b, m)| format!("{n} ({} bytes): {m}", b.len()))
            .collect();
        assert!(msgs.is_empty(), "{}: {msgs:#?}", target.name());
    }
}

#[test]
fn kept_crash_inputs_no_longer_panic() {
    let scratch = tempfile::tempdir().unwrap();
    let mut replayed = 0;
    for target in Target::ALL {
        let dir = repo_root().join("fuzz/regressions").join(target.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            if let Err(m) = run_one(target, &name, &bytes, scratch.path()) {
                panic!("{}/{name}: {m}", target.name());
            }
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn mutation_is_seeded_and_changes_the_input() {
    let input: Vec<u8> = (0..200u8).collect();
    let other = vec![7u8; 50];
    let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut changed = 0;
    for _ in 0..100 {
        let x = mutate(&input, &other, &mut a);
        let y = mutate(&input, &other, &mut b);
        assert_eq!(x, y);
        changed += usize::from(x != input);
    }
    assert!(
        changed >= 90,
        "only {changed} of 100 mutations changed the input"
    );
}
