//! Writes realistic test files: `siphon-gen <dir> <count> [Type ...] [--seed N]`
//! creates `<dir>/<Type>.ndjson.gz` with `count` resources of each type.

use std::path::PathBuf;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut seed = 1u64;
    if let Some(i) = args.iter().position(|a| a == "--seed") {
        seed = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .expect("--seed takes a number");
        args.drain(i..i + 2);
    }
    if args.len() < 2 {
        eprintln!("usage: siphon-gen <dir> <count> [Type ...] [--seed N]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let count: u64 = args[1].parse().expect("count must be a number");
    let types: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        siphon_tests::gen::TYPES
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    std::fs::create_dir_all(&dir).expect("create the output directory");
    for ty in types {
        let path = dir.join(format!("{ty}.ndjson.gz"));
        let file = std::fs::File::create(&path).expect("create the output file");
        let bytes = siphon_tests::gen::write_gz(file, &ty, count, seed).expect("write");
        let gz = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} {count} resources, {bytes} bytes, {gz} gzipped",
            path.display()
        );
    }
}
