//! Multi-file data sets from the generator: `files` gzipped ndjson files cycling over
//! resource types, each file of a type holding its own id range so that every resource
//! of the set is distinct (`Patient-001.ndjson.gz` = patients 0..n, `Patient-002` =
//! n..2n, ...).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// One file of a set.
#[derive(Clone, Debug)]
pub struct FileSpec {
    pub key: String,
    pub resource_type: &'static str,
    pub first: u64,
    pub count: u64,
}

/// `files` files of `per_file` resources under `prefix`, types taken in turn from `types`.
pub fn plan(prefix: &str, files: usize, per_file: u64, types: &[&'static str]) -> Vec<FileSpec> {
    (0..files)
        .map(|i| {
            let ty = types[i % types.len()];
            let nth = (i / types.len()) as u64;
            FileSpec {
                key: format!("{prefix}{ty}-{:03}.ndjson.gz", nth + 1),
                resource_type: ty,
                first: nth * per_file,
                count: per_file,
            }
        })
        .collect()
}

/// Resources expected per type for a set.
pub fn expected_by_type(files: &[FileSpec]) -> std::collections::BTreeMap<&'static str, u64> {
    let mut m = std::collections::BTreeMap::new();
    for f in files {
        *m.entry(f.resource_type).or_insert(0) += f.count;
    }
    m
}

/// Calls `line` with each ndjson line of the file (without the newline).
pub fn each_line(spec: &FileSpec, seed: u64, mut line: impl FnMut(&str, &[u8])) {
    let mut buf = Vec::with_capacity(4096);
    for n in spec.first..spec.first + spec.count {
        buf.clear();
        serde_json::to_writer(
            &mut buf,
            &siphon_tests::gen::resource(spec.resource_type, n, seed),
        )
        .unwrap();
        line(&siphon_tests::gen::id_of(spec.resource_type, n), &buf);
    }
}

/// The gzipped file and its uncompressed size.
pub fn gz(spec: &FileSpec, seed: u64) -> (Vec<u8>, u64) {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let mut raw = 0u64;
    each_line(spec, seed, |_, l| {
        enc.write_all(l).unwrap();
        enc.write_all(b"\n").unwrap();
        raw += l.len() as u64 + 1;
    });
    (enc.finish().unwrap(), raw)
}

/// Builds every file of a set on all cores: (spec, gz bytes, uncompressed size).
pub fn build(files: &[FileSpec], seed: u64) -> Vec<(FileSpec, Vec<u8>, u64)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(spec) = files.get(i) else { break };
                let (bytes, raw) = gz(spec, seed);
                out.lock().unwrap().push((i, spec.clone(), bytes, raw));
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|t| t.0);
    v.into_iter().map(|(_, s, b, r)| (s, b, r)).collect()
}
