//! Prints the CID of a file and the import throughput, to compare with `sha256sum`:
//!
//! ```text
//! cargo run --release -p stratus-unixfs --example cid -- FILE [PROFILE]
//! ```
//!
//! PROFILE is one of memo (default), kubo, kubo-v0, unixfs-v1-2025.

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use stratus_unixfs::{import_reader, Profile};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), profile) = (args.next(), args.next()) else {
        eprintln!("usage: cid FILE [memo|kubo|kubo-v0|unixfs-v1-2025]");
        return ExitCode::from(2);
    };
    let profile = match profile.as_deref() {
        None => Profile::default(),
        Some(name) => match Profile::by_name(name) {
            Some(p) => p,
            None => {
                eprintln!("unknown profile {name}");
                return ExitCode::from(2);
            }
        },
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let imported = match import_reader(profile, file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{}  {path}", imported.root);
    eprintln!(
        "{} bytes, profile {}, {} leaves, {} nodes, depth {}: {:.3} s, {:.0} MB/s",
        imported.size,
        profile.name,
        imported.stats.leaves,
        imported.stats.nodes,
        imported.stats.depth,
        secs,
        imported.size as f64 / secs / 1e6
    );
    ExitCode::SUCCESS
}
