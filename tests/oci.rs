#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! `make oci` (istio/oci.py): the OCI image Istio's WasmPlugin pulls, in the Wasm
//! image spec's "compat" variant. Runs the script on the built filter (`CANARY_WASM`,
//! else target/canary-router.wasm) into a temporary directory and checks the image
//! layout byte by byte: every descriptor's digest, size and media type; the layer is
//! a gzip'd tar of exactly one regular file `plugin.wasm` equal to the `.wasm`; the
//! config's diff_id is the uncompressed tar's digest; the OCI archive holds the same
//! layout; digests.txt records the `.wasm`'s sha256 and the manifest digest; and a
//! second run gives identical bytes (reproducible digests).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAG: &str = "9.9.9-test";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn wasm_path() -> PathBuf {
    let p = std::env::var_os("CANARY_WASM").map_or_else(
        || repo_root().join("target/canary-router.wasm"),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "no filter at {} (CANARY_WASM): run `make wasm`, or `make integration`",
        p.display()
    );
    p
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn scratch_dir(label: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("canary-oci-{}-{label}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// What one run of istio/oci.py wrote.
struct Run {
    layout: PathBuf,
    archive: PathBuf,
    digests: PathBuf,
}

fn oci_py(args: &[&OsStr]) -> Output {
    Command::new("python3")
        .arg(repo_root().join("istio/oci.py"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run python3 istio/oci.py")
}

/// `make oci`'s invocation, into `dir`.
fn run_oci(wasm: &Path, dir: &Path) -> Run {
    let run = Run {
        layout: dir.join("canary-router"),
        archive: dir.join("canary-router.tar"),
        digests: dir.join("digests.txt"),
    };
    let out = oci_py(&[
        wasm.as_os_str(),
        run.layout.as_os_str(),
        OsStr::new("--archive"),
        run.archive.as_os_str(),
        OsStr::new("--digests"),
        run.digests.as_os_str(),
        OsStr::new("--tag"),
        OsStr::new(TAG),
    ]);
    assert!(
        out.status.success(),
        "istio/oci.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every file under `root`, by path relative to it.
fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, acc: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, acc);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                acc.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(root, root, &mut acc);
    acc
}

/// The blob a descriptor names, after checking that the descriptor's digest and size
/// are those of the blob file and that it has the expected media type.
fn blob<'a>(
    blobs: &'a BTreeMap<String, Vec<u8>>,
    desc: &Value,
    media_type: &str,
    what: &str,
) -> &'a [u8] {
    assert_eq!(
        desc["mediaType"], media_type,
        "{what}: media type in {desc}"
    );
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{what}: digest {digest} is not sha256"));
    let data = blobs
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("{what}: no blob for {digest}"));
    assert_eq!(
        sha256_hex(data),
        hex,
        "{what}: blob content does not hash to {digest}"
    );
    assert_eq!(desc["size"], json!(data.len()), "{what}: size in {desc}");
    data
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gzip -dc");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "the layer is not gzip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One tar member: name, type flag, content.
struct Member {
    name: String,
    kind: u8,
    data: Vec<u8>,
}

fn field_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn field_octal(b: &[u8]) -> usize {
    let s = field_str(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        0
    } else {
        usize::from_str_radix(s, 8).unwrap_or_else(|e| panic!("tar octal field {s:?}: {e}"))
    }
}

/// Every member of an uncompressed tar (ustar/GNU headers; pax/GNU extension
/// headers appear as members of their own, so "exactly one member" stays strict).
fn tar_members(tar: &[u8]) -> Vec<Member> {
    let mut members = Vec::new();
    let mut off = 0;
    loop {
        assert!(
            off + 512 <= tar.len(),
            "tar ends without its end-of-archive blocks"
        );
        let h = &tar[off..off + 512];
        if h.iter().all(|&c| c == 0) {
            break;
        }
        let checksum = field_octal(&h[148..156]);
        let sum: usize = h
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    usize::from(c)
                }
            })
            .sum();
        assert_eq!(checksum, sum, "tar header checksum at offset {off}");
        let mut name = field_str(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = field_str(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size = field_octal(&h[124..136]);
        let start = off + 512;
        assert!(
            start + size <= tar.len(),
            "tar member {name} runs past the end"
        );
        members.push(Member {
            name,
            kind: h[156],
            data: tar[start..start + size].to_vec(),
        });
        off = start + size.div_ceil(512) * 512;
    }
    members
}

/// `tar -t` listing of a tar file, one name a line.
fn tar_list(path: &Path, gz: bool) -> Vec<String> {
    let out = Command::new("tar")
        .arg(if gz { "-tzf" } else { "-tf" })
        .arg(path)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar -t {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn digests_txt(path: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("digests.txt line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn layout_is_a_compat_wasm_image_holding_the_exact_wasm() {
    if common::wasm_only("the Wasm module's OCI image") {
        return;
    }
    let wasm_file = wasm_path();
    let wasm = fs::read(&wasm_file).unwrap();
    let dir = scratch_dir("layout");
    let run = run_oci(&wasm_file, &dir);
    let files = files_under(&run.layout);

    // oci-layout and index.json, and nothing but blobs besides.
    assert_eq!(
        read_json(&run.layout.join("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let blobs: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter(|(k, _)| k.starts_with("blobs/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let others: Vec<&String> = files.keys().filter(|k| !k.starts_with("blobs/")).collect();
    assert_eq!(others, ["index.json", "oci-layout"], "layout files");
    for (path, data) in &blobs {
        assert_eq!(
            path.strip_prefix("blobs/sha256/"),
            Some(sha256_hex(data).as_str()),
            "blob {path} is not named by its sha256"
        );
    }
    assert_eq!(
        blobs.len(),
        3,
        "manifest, config, layer: {:?}",
        blobs.keys()
    );

    let index = read_json(&run.layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("index.json manifests");
    assert_eq!(manifests.len(), 1, "one image in index.json: {index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"], TAG,
        "the tag skopeo/oras use: {index}"
    );

    // The manifest and what it references.
    let manifest_bytes = blob(&blobs, &manifests[0], MT_MANIFEST, "manifest");
    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MT_MANIFEST);
    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(
        layers.len(),
        1,
        "compat variant: exactly one layer: {manifest}"
    );
    let layer = blob(&blobs, &layers[0], MT_LAYER, "layer");
    let config: Value =
        serde_json::from_slice(blob(&blobs, &manifest["config"], MT_CONFIG, "config")).unwrap();

    // The layer: a gzip'd tar of exactly one regular file plugin.wasm, the .wasm itself.
    let tar = gunzip(layer);
    let members = tar_members(&tar);
    assert_eq!(members.len(), 1, "one member in the layer's tar");
    assert_eq!(members[0].name, "plugin.wasm");
    assert!(
        members[0].kind == b'0' || members[0].kind == 0,
        "plugin.wasm is a regular file (type {:?})",
        char::from(members[0].kind)
    );
    assert!(
        members[0].data == wasm,
        "plugin.wasm differs from {} ({} vs {} bytes)",
        wasm_file.display(),
        members[0].data.len(),
        wasm.len()
    );
    let layer_file = run.layout.join(format!(
        "blobs/sha256/{}",
        &layers[0]["digest"].as_str().unwrap()["sha256:".len()..]
    ));
    assert_eq!(
        tar_list(&layer_file, true),
        ["plugin.wasm"],
        "tar -tzf of the layer"
    );

    // The config: a scratch image's platform fields; diff_ids = sha256 of the plain tar.
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", sha256_hex(&tar))])
    );

    // digests.txt: the .wasm's sha256 and the manifest digest.
    let d = digests_txt(&run.digests);
    assert_eq!(d["wasm_sha256"], sha256_hex(&wasm));
    assert_eq!(
        d["manifest_digest"],
        manifests[0]["digest"].as_str().unwrap()
    );
    assert_eq!(
        d["manifest_digest"],
        format!("sha256:{}", sha256_hex(manifest_bytes))
    );

    // The OCI archive is the same layout, at the root of the tar.
    let unpacked = dir.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&run.archive)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        files_under(&unpacked) == files,
        "the archive holds the layout"
    );
    let listed = tar_list(&run.archive, false);
    assert!(listed.contains(&"oci-layout".to_string()), "{listed:?}");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_runs_give_identical_bytes_and_digests() {
    if common::wasm_only("the Wasm module's OCI image") {
        return;
    }
    let wasm_file = wasm_path();
    let dir = scratch_dir("repro");
    let a = run_oci(&wasm_file, &dir.join("a"));
    let b = run_oci(&wasm_file, &dir.join("b"));
    assert_eq!(
        fs::read_to_string(&a.digests).unwrap(),
        fs::read_to_string(&b.digests).unwrap(),
        "digests differ between two runs"
    );
    assert!(
        files_under(&a.layout) == files_under(&b.layout),
        "layouts differ"
    );
    assert!(
        fs::read(&a.archive).unwrap() == fs::read(&b.archive).unwrap(),
        "archives differ"
    );
    // Re-running into an existing layout replaces it (no stale blobs).
    let again = run_oci(&wasm_file, &dir.join("a"));
    assert!(files_under(&again.layout) == files_under(&b.layout));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_what_is_not_a_wasm_module() {
    if common::wasm_only("the Wasm module's OCI image") {
        return;
    }
    let dir = scratch_dir("refuse");
    let bogus = dir.join("not.wasm");
    fs::write(&bogus, b"#!/bin/sh\necho hi\n").unwrap();
    let layout = dir.join("layout");
    let out = oci_py(&[bogus.as_os_str(), layout.as_os_str()]);
    assert!(!out.status.success(), "oci.py accepted a non-Wasm file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Wasm module"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!layout.exists(), "nothing written on refusal");
    fs::remove_dir_all(&dir).unwrap();
}
