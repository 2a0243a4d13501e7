//! Air-gapped transfer: delta bundles (`save --since`, `--inventory`), `--checksum` and
//! `--compress`, carried from one store to a fresh one as a user would carry them.
use crate::harness::*;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// Members of a tar (plain or compressed, as a user's `tar tf` reads it): name → content.
fn members(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(archive).unwrap();
    let plain = match bytes.get(..2) {
        Some([0x1f, 0x8b]) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
            out
        }
        _ if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) => zstd::decode_all(&bytes[..]).unwrap(),
        _ => bytes,
    };
    let mut tar = tar::Archive::new(&plain[..]);
    let mut out = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        out.insert(name, content);
    }
    out
}

/// Writes `members` as a plain tar, as a tool that rewrote the bundle would.
fn write_members(path: &Path, members: &BTreeMap<String, Vec<u8>>) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, content) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o444);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, &content[..]).unwrap();
    }
    builder.finish().unwrap();
}

fn layer_members(members: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    members
        .iter()
        .filter(|(name, content)| name.starts_with("blobs/") && content.len() > 4096)
        .map(|(n, _)| n.clone())
        .collect()
}

/// The three releases of the issue: `base:1` (busybox), `app:v1` (base + 1 MiB of random data),
/// `app:v2` (v1 + a small file), built with COPY so no container is needed. Returns their IDs.
fn three_releases(kiln: &Kiln) -> [String; 3] {
    let base = kiln.import_busybox("base:1");
    let ctx = kiln.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let random: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(ctx.join("data.bin"), random).unwrap();
    std::fs::write(ctx.join("v2.txt"), "release 2\n").unwrap();
    std::fs::write(ctx.join("v1.Dockerfile"), "FROM base:1\nCOPY data.bin /data.bin\n").unwrap();
    std::fs::write(ctx.join("v2.Dockerfile"), "FROM app:v1\nCOPY v2.txt /v2.txt\n").unwrap();
    let ctx = ctx.to_str().unwrap();
    for (file, tag) in [("v1.Dockerfile", "app:v1"), ("v2.Dockerfile", "app:v2")] {
        let dockerfile = format!("{ctx}/{file}");
        kiln.ok(&["build", "-q", "--source-date-epoch", "0", "-f", &dockerfile, "-t", tag, ctx]);
    }
    [base, kiln.image_id("app:v1"), kiln.image_id("app:v2")]
}

fn path_str(kiln: &Kiln, name: &str) -> String {
    kiln.path(name).to_str().unwrap().to_string()
}

#[test]
fn three_releases_cross_as_deltas_that_carry_only_new_layers() {
    let near = Kiln::new();
    let ids = three_releases(&near);
    let (base, v1, v2) = (path_str(&near, "base.tar"), path_str(&near, "v1.tar"), path_str(&near, "v2.tar"));
    near.ok(&["save", "-o", &base, "base:1"]);
    // v1 against an image both sides hold; v2 against the bundle carried before it.
    let out = near.run(&["save", "--since", "base:1", "-o", &v1, "app:v1"]);
    let report = String::from_utf8_lossy(&expect_success_output(out)).to_string();
    assert!(report.contains("carries 1 layer(s)") && report.contains("leaves out 1 layer(s)"), "{report}");
    near.ok(&["save", "--since", &v1, "-o", &v2, "app:v2"]);

    let (full, delta1, delta2) =
        (members(near.path("base.tar").as_path()), members(&near.path("v1.tar")), members(&near.path("v2.tar")));
    assert_eq!(layer_members(&full).len(), 1);
    // Each delta carries exactly the layer its release added.
    let v1_layers = layer_members(&delta1);
    assert_eq!(v1_layers.len(), 1, "{:?}", delta1.keys());
    assert!(!layer_members(&full).contains(&v1_layers[0]));
    assert!(layer_members(&delta2).is_empty(), "v2 adds only a tiny layer: {:?}", delta2.keys());
    assert_eq!(delta2.keys().filter(|n| n.starts_with("blobs/")).count(), 3, "config, manifest, new layer");
    for delta in [&delta1, &delta2] {
        assert!(delta.contains_key("kiln-delta.json") && delta.contains_key("manifest.json"));
        assert!(!delta.contains_key("index.json"), "a delta has no index.json for containerd to trip on");
    }
    let size = |p: &str| std::fs::metadata(p).unwrap().len();
    assert!(size(&v2) < 16 << 10, "v2 delta is {} bytes", size(&v2));
    assert!(size(&v1) < size(&base) + (1 << 20) + (64 << 10));

    // The far store holds only what was carried, in order.
    let far = Kiln::new();
    for bundle in [&base, &v1, &v2] {
        far.ok(&["load", "-i", bundle]);
    }
    assert_eq!([far.image_id("base:1"), far.image_id("app:v1"), far.image_id("app:v2")], ids);
    far.assert_fsck_clean();
    // What the far store holds is what the near one saves in full.
    far.ok(&["save", "-o", &path_str(&far, "v2-full.tar"), "app:v2"]);
    near.ok(&["save", "-o", &path_str(&near, "v2-full.tar"), "app:v2"]);
    let (far_bytes, near_bytes) =
        (std::fs::read(far.path("v2-full.tar")).unwrap(), std::fs::read(near.path("v2-full.tar")).unwrap());
    assert!(far_bytes == near_bytes, "the far store's full save differs from the near one's");
}

fn expect_success_output(out: std::process::Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stderr
}

#[test]
fn since_reads_an_inventory_and_a_digest_dump_from_the_far_side() {
    let near = Kiln::new();
    three_releases(&near);
    let far = Kiln::new();
    far.ok(&["load", "-i", &{
        let p = path_str(&near, "v1-full.tar");
        near.ok(&["save", "-o", &p, "app:v1"]);
        p
    }]);
    // An inventory written on the far side.
    let inventory = path_str(&far, "inventory.json");
    far.ok(&["save", "--inventory", "-o", &inventory]);
    let text = std::fs::read_to_string(&inventory).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed["kilnInventory"], 1);
    assert_eq!(parsed["layers"].as_array().unwrap().len(), 2, "{text}");
    let by_inventory = path_str(&near, "by-inventory.tar");
    near.ok(&["save", "--since", &inventory, "-o", &by_inventory, "app:v2"]);
    // A dump of `images --no-trunc` from the far side says the same.
    let dump = path_str(&far, "images.txt");
    std::fs::write(&dump, far.ok(&["images", "--digests", "--no-trunc"])).unwrap();
    let by_dump = path_str(&near, "by-dump.tar");
    near.ok(&["save", "--since", &dump, "-o", &by_dump, "app:v2"]);
    assert!(std::fs::read(&by_inventory).unwrap() == std::fs::read(&by_dump).unwrap(), "inventory and dump differ");
    // The plain table (12-digit IMAGE IDs) names the same images of this store.
    let table = path_str(&far, "images-table.txt");
    std::fs::write(&table, far.ok(&["images", "--digests"])).unwrap();
    let by_table = path_str(&near, "by-table.tar");
    near.ok(&["save", "--since", &table, "-o", &by_table, "app:v2"]);
    assert!(std::fs::read(&by_table).unwrap() == std::fs::read(&by_dump).unwrap(), "table and dump differ");
    assert!(layer_members(&members(Path::new(&by_dump))).is_empty());
    far.ok(&["load", "-i", &by_dump]);
    assert_eq!(far.image_id("app:v2"), near.image_id("app:v2"));
    far.assert_fsck_clean();

    // A --since that names nothing usable is refused in one line.
    let empty = path_str(&near, "nothing.txt");
    std::fs::write(&empty, "no digests here\n").unwrap();
    let err = near.fails(&["save", "--since", &empty, "-o", &path_str(&near, "x.tar"), "app:v2"]);
    assert!(err.contains("names no layer the far side holds"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = near.fails(&["save", "--since", "no-such:image", "-o", &path_str(&near, "x.tar"), "app:v2"]);
    assert!(err.contains("neither an image in this store nor a file"), "{err}");
    // A delta is a docker-archive: not an OCI layout tar, nor a layout directory.
    let err = near.fails(&["save", "--since", "app:v1", "--format", "oci", "-o", &path_str(&near, "x.tar"), "app:v2"]);
    assert!(err.contains("a delta bundle is a docker-archive"), "{err}");
    let layout = format!("oci:{}", path_str(&near, "layout"));
    let err = near.fails(&["save", "--since", "app:v1", "-o", &layout, "app:v2"]);
    assert!(err.contains("is a layout directory"), "{err}");
    assert!(!near.path("layout").exists());
    assert!(!near.path("x.tar").exists());
}

#[test]
fn a_delta_whose_base_is_missing_is_refused_naming_the_layer_and_image() {
    let near = Kiln::new();
    three_releases(&near);
    let v2 = path_str(&near, "v2.tar");
    near.ok(&["save", "--since", "app:v1", "-o", &v2, "app:v2"]);
    let far = Kiln::new();
    far.import_busybox("base:1");
    let before = far.store_state();
    let err = far.fails(&["load", "-i", &v2]);
    assert!(err.contains("needed by image app:v2, is not in this store"), "{err}");
    assert!(err.contains("kiln save --since"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(far.store_state(), before, "a refused delta stored something");
    far.assert_fsck_clean();
}

#[test]
fn a_damaged_base_layer_in_the_far_store_is_named_not_used() {
    let near = Kiln::new();
    three_releases(&near);
    let v1 = path_str(&near, "v1.tar");
    near.ok(&["save", "--since", "base:1", "-o", &v1, "app:v1"]);
    let far = Kiln::new();
    far.import_busybox("base:1");
    let layer = members(&near.path("v1.tar"))["kiln-delta.json"].clone();
    let delta: serde_json::Value = serde_json::from_slice(&layer).unwrap();
    let hex = delta["expects"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let blob = far.root().join("blobs/sha256").join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[700] ^= 1;
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let err = far.fails(&["load", "-i", &v1]);
    assert!(err.contains("is damaged in this store") && err.contains(&hex), "{err}");
    assert!(far.run(&["inspect", "app:v1"]).status.code() != Some(0));
}

#[test]
fn checksummed_bundles_refuse_any_flipped_byte_and_name_the_member() {
    let near = Kiln::new();
    three_releases(&near);
    let bundle = path_str(&near, "v1.tar");
    near.ok(&["save", "--checksum", "--since", "base:1", "-o", &bundle, "app:v1"]);
    let sidecar = format!("{bundle}.sha256");
    let sums = std::fs::read_to_string(&sidecar).unwrap();
    assert!(sums.ends_with("  v1.tar\n"), "{sums}");
    // sha256sum itself accepts the sidecar.
    let check = Command::new("sha256sum").arg("-c").arg("v1.tar.sha256").current_dir(near.dir.path()).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let good = std::fs::read(&bundle).unwrap();
    let inner = members(Path::new(&bundle));
    assert!(inner.contains_key("SHA256SUMS"));

    let far = Kiln::new();
    far.import_busybox("base:1");
    let before = far.store_state();
    // Bytes of the first header (no member before it to name), then of the first members' headers
    // and data, then every 8191st byte, then the end-of-archive blocks.
    let first_header: Vec<usize> = (0..512).step_by(7).chain([148, 153, 154, 155]).collect();
    let mut offsets: Vec<usize> = (512..4096).step_by(11).collect();
    offsets.extend((4096..good.len()).step_by(8191));
    offsets.extend([good.len() - 1, good.len() - 1025, good.len() - 513]);
    let flipped = path_str(&far, "flipped.tar");
    let mut named = 0;
    let mut unnamed = Vec::new();
    for (i, &offset) in first_header.iter().chain(&offsets).enumerate() {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x20;
        std::fs::write(&flipped, &bytes).unwrap();
        // Without the sidecar the archive's own SHA256SUMS must catch it…
        let out = far.run(&["load", "-i", &flipped]);
        assert!(!out.status.success(), "flipped byte at {offset} was loaded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "offset {offset}: {err}");
        // Bytes of the end-of-archive blocks belong to no member; the error says where they are.
        let in_tail = offset >= good.len() - 1024 && err.contains("end-of-archive marker");
        if offset >= 512 {
            match err.contains("archive member \"") || in_tail {
                true => named += 1,
                false => unnamed.push(format!("{offset}: {err}")),
            }
        }
        // …and with it, the whole file's sha256.
        if i % 5 == 0 {
            let out = far.run(&["load", "-i", &flipped, "--checksum", &sidecar]);
            assert!(!out.status.success(), "flipped byte at {offset} was loaded with --checksum");
        }
    }
    assert_eq!(named, offsets.len(), "errors that named no member: {unnamed:#?}");
    assert_eq!(far.store_state(), before);
    // Truncated anywhere: refused, the member named.
    for cut in [100, 600, 2048, good.len() / 2, good.len() - 1024, good.len() - 512] {
        std::fs::write(&flipped, &good[..cut]).unwrap();
        let err = far.fails(&["load", "-i", &flipped]);
        let named = err.contains("archive member \"")
            || (cut < 512 && err.contains("in a tar header at offset 0"))
            || (cut > good.len() - 1024 && err.contains("end-of-archive marker"));
        assert!(err.contains("truncated") || err.contains("unexpected end"), "cut {cut}: {err}");
        assert!(named, "cut {cut}: {err}");
    }
    assert_eq!(far.store_state(), before);
    far.ok(&["load", "-i", &bundle, "--checksum", &sidecar]);
    assert_eq!(far.image_id("app:v1"), near.image_id("app:v1"));
}

#[test]
fn a_sha256sums_that_lies_and_a_spliced_bundle_are_refused() {
    let near = Kiln::new();
    three_releases(&near);
    let (v1, v2) = (path_str(&near, "v1.tar"), path_str(&near, "v2.tar"));
    near.ok(&["save", "--checksum", "--since", "base:1", "-o", &v1, "app:v1"]);
    near.ok(&["save", "--checksum", "--since", "app:v1", "-o", &v2, "app:v2"]);
    let far = Kiln::new();
    far.import_busybox("base:1");
    let before = far.store_state();
    let bad = path_str(&far, "bad.tar");

    // SHA256SUMS that lies about manifest.json (rewritten with a valid tar around it).
    let mut lying = members(Path::new(&v1));
    let sums = String::from_utf8(lying["SHA256SUMS"].clone()).unwrap();
    let lied: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  manifest.json") {
                format!("{}  manifest.json\n", "0".repeat(64))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    lying.insert("SHA256SUMS".into(), lied.into_bytes());
    write_members(Path::new(&bad), &lying);
    let err = far.fails(&["load", "-i", &bad]);
    assert!(err.contains("\"manifest.json\"") && err.contains("does not match SHA256SUMS"), "{err}");

    // v2's documents with v1's layer blob spliced in: not listed in either list.
    let mut spliced = members(Path::new(&v2));
    for (name, content) in members(Path::new(&v1)) {
        if name.starts_with("blobs/") && content.len() > 4096 {
            spliced.insert(name, content);
        }
    }
    write_members(Path::new(&bad), &spliced);
    let err = far.fails(&["load", "-i", &bad]);
    assert!(err.contains("is not listed in SHA256SUMS"), "{err}");
    // The same without SHA256SUMS: kiln-delta.json's list of carried blobs catches it.
    spliced.remove("SHA256SUMS");
    write_members(Path::new(&bad), &spliced);
    let err = far.fails(&["load", "-i", &bad]);
    assert!(err.contains("is not listed in kiln-delta.json"), "{err}");

    // An expected layer that the bundle also carries, with other bytes under its name.
    let mut carried = members(Path::new(&v1));
    carried.remove("SHA256SUMS");
    let delta: serde_json::Value = serde_json::from_slice(&carried["kiln-delta.json"]).unwrap();
    let expected = delta["expects"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    carried.insert(format!("blobs/sha256/{expected}"), b"other bytes".to_vec());
    write_members(Path::new(&bad), &carried);
    let err = far.fails(&["load", "-i", &bad]);
    assert!(err.contains(&expected) && err.contains("mismatch"), "{err}");
    // …and with the right bytes: still refused, a bundle cannot both carry and expect a layer.
    let right = std::fs::read(near.root().join("blobs/sha256").join(&expected)).unwrap();
    carried.insert(format!("blobs/sha256/{expected}"), right);
    write_members(Path::new(&bad), &carried);
    let err = far.fails(&["load", "-i", &bad]);
    assert!(err.contains(&expected), "{err}");
    assert_eq!(far.store_state(), before);
}

#[test]
fn compressed_bundles_are_reproducible_and_load_back() {
    let near = Kiln::new();
    let ids = three_releases(&near);
    for kind in ["gzip", "zstd"] {
        let (a, b) = (path_str(&near, &format!("a.{kind}")), path_str(&near, &format!("b.{kind}")));
        near.ok(&["save", "--compress", kind, "--checksum", "-o", &a, "app:v2"]);
        near.ok(&["save", "--compress", kind, "--checksum", "-o", &b, "app:v2"]);
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{kind} output differs");
        assert_eq!(
            std::fs::read_to_string(format!("{a}.sha256")).unwrap().split_whitespace().next(),
            std::fs::read_to_string(format!("{b}.sha256")).unwrap().split_whitespace().next()
        );
        // Same members as the plain archive.
        let plain = path_str(&near, "plain.tar");
        near.ok(&["save", "--checksum", "-o", &plain, "app:v2"]);
        assert_eq!(members(Path::new(&a)), members(Path::new(&plain)));
        let far = Kiln::new();
        far.ok(&["load", "-i", &a, "--checksum", &format!("{a}.sha256")]);
        assert_eq!(far.image_id("app:v2"), ids[2]);
        far.assert_fsck_clean();
    }
    // The stdout form gives the same bytes as -o.
    let out = near.cmd(&["save", "--compress", "gzip", "app:v2"]).output().unwrap();
    assert!(out.status.success());
    near.ok(&["save", "--compress", "gzip", "-o", &path_str(&near, "c.gz"), "app:v2"]);
    assert!(out.stdout == std::fs::read(near.path("c.gz")).unwrap(), "stdout and -o differ");
}

#[test]
fn full_bundles_load_in_docker_and_skopeo_and_a_delta_says_what_it_is() {
    let near = Kiln::new();
    let ids = three_releases(&near);
    let full = path_str(&near, "full.tar");
    near.ok(&["save", "--checksum", "-o", &full, "app:v2"]);
    if have_tool("skopeo") {
        let out =
            Command::new("skopeo").args(["inspect", "--raw", &format!("docker-archive:{full}")]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let config =
            Command::new("skopeo").args(["inspect", "--config", &format!("docker-archive:{full}")]).output().unwrap();
        let config_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config.stdout)));
        // skopeo re-serialises the config; the diffIDs are what must agree.
        let parsed: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(parsed["rootfs"]["diff_ids"].as_array().unwrap().len(), 3, "{config_digest}");
    } else {
        eprintln!("skipping the skopeo half: skopeo is not installed");
    }
    let docker = Path::new("/usr/bin/docker");
    let docker_up = docker.exists() && Command::new(docker).arg("info").output().is_ok_and(|o| o.status.success());
    if !docker_up {
        eprintln!("skipping the docker half: no dockerd");
        return;
    }
    let gz = path_str(&near, "full.tar.gz");
    near.ok(&["save", "--compress", "gzip", "-o", &gz, "app:v2"]);
    for archive in [&full, &gz] {
        let out = Command::new(docker).args(["load", "-i", archive]).output().unwrap();
        assert!(out.status.success(), "docker load {archive}: {}", String::from_utf8_lossy(&out.stderr));
        let id = Command::new(docker).args(["inspect", "--format", "{{.Id}}", "app:v2"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), ids[2]);
        let _ = Command::new(docker).args(["rmi", "app:v2"]).output();
    }
    // A delta of a layer docker cannot hold (fresh random bytes): docker's error names the path
    // that says what the file is.
    let ctx = near.path("ctx");
    let random: Vec<u8> = (0..4096u32).map(|i| (i ^ std::process::id()).wrapping_mul(2_654_435_761) as u8).collect();
    std::fs::write(ctx.join("fresh.bin"), random).unwrap();
    std::fs::write(ctx.join("v3.Dockerfile"), "FROM app:v2\nCOPY fresh.bin /fresh.bin\n").unwrap();
    let ctx_s = ctx.to_str().unwrap();
    near.ok(&["build", "-q", "-f", &format!("{ctx_s}/v3.Dockerfile"), "-t", "kiln-bundles-test:v3", ctx_s]);
    let v3 = path_str(&near, "v3.tar");
    near.ok(&["save", "--since", "app:v2", "-o", &v3, "kiln-bundles-test:v3"]);
    let out = Command::new(docker).args(["load", "-i", &v3]).output().unwrap();
    let _ = Command::new(docker).args(["rmi", "kiln-bundles-test:v3"]).output();
    assert!(!out.status.success(), "docker loaded a delta whose layers it lacks");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln-delta-bundle.layer-not-carried.load-with-kiln-load"), "{err}");
}

#[test]
fn a_load_of_a_delta_killed_at_each_rename_leaves_a_store_that_loads_it_again() {
    if !have_tool("strace") {
        eprintln!("skipping: strace is not installed");
        return;
    }
    let near = Kiln::new();
    let ids = three_releases(&near);
    let v1 = path_str(&near, "v1.tar");
    near.ok(&["save", "--since", "base:1", "-o", &v1, "app:v1"]);
    let mut killed = 0;
    for when in 1..=12 {
        let far = Kiln::new();
        far.import_busybox("base:1");
        let out = crate::store_crash::kill_at(&far, "rename,renameat2", when, &["load", "-i", &v1]);
        if out.status.success() {
            // Fewer renames than `when`: the load finished.
            assert_eq!(far.image_id("app:v1"), ids[1]);
            break;
        }
        killed += 1;
        far.assert_fsck_clean();
        far.ok(&["load", "-i", &v1]);
        assert_eq!(far.image_id("app:v1"), ids[1], "kill at rename {when}");
        far.assert_fsck_clean();
    }
    assert!(killed >= 2, "only {killed} kill points were reached");
}

#[test]
fn four_loads_of_one_delta_at_once_all_succeed_and_leave_a_clean_store() {
    let near = Kiln::new();
    let ids = three_releases(&near);
    let v1 = path_str(&near, "v1.tar");
    near.ok(&["save", "--checksum", "--since", "base:1", "-o", &v1, "app:v1"]);
    for round in 0..3 {
        let far = Kiln::new();
        far.import_busybox("base:1");
        let children: Vec<_> = (0..4)
            .map(|_| {
                far.cmd(&["load", "-q", "-i", &v1])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(far.image_id("app:v1"), ids[1], "round {round}");
        far.assert_fsck_clean();
    }
}
