//! Replays the committed fuzz inputs on the stable toolchain, as ordinary tests: every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through its entry point, so
//! what the fuzzers found (and the crashes they once found) keeps being checked without nightly
//! or libFuzzer. A target whose corpus is missing or empty fails, so this cannot pass silently.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let (_, target) = stratus_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of stratus_fuzz::TARGETS");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name} is missing or empty: run the fuzzer and commit its corpus"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    let mut failed = Vec::new();
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{name} fails on {failed:#?}");
}

macro_rules! replay {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every entry point has a test here, a libFuzzer target and a corpus, and nothing else
        /// has a corpus or a target.
        #[test]
        fn every_target_is_wired() {
            let mut tested = vec![$(stringify!($name)),*];
            tested.sort_unstable();
            let mut listed: Vec<&str> = stratus_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            listed.sort_unstable();
            assert_eq!(tested, listed);
            let names = |dir: &str, suffix: &str| {
                let entries = std::fs::read_dir(fuzz_dir().join(dir));
                let mut v: Vec<String> = entries
                    .into_iter()
                    .flatten()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter_map(|n| n.strip_suffix(suffix).map(str::to_string))
                    .collect();
                v.sort_unstable();
                v
            };
            assert_eq!(names("fuzz_targets", ".rs"), listed);
            assert_eq!(names("corpus", ""), listed);
            let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
            for name in listed {
                assert!(manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")), "{name}");
                let wrapper =
                    std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
                        .unwrap();
                assert!(wrapper.contains(&format!("stratus_fuzz::{name}(data)")), "{name}");
            }
            for dir in names("regressions", "") {
                assert!(stratus_fuzz::TARGETS.iter().any(|(n, _)| *n == dir), "{dir}");
            }
        }
    };
}

replay!(
    cid_text,
    cid_binary,
    dagpb,
    car,
    multipart,
    compose,
    jwt,
    authorization,
    range,
    memo_json,
    computeshare_json,
    twocloud_body,
    wallet_signature,
);
