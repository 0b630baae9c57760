//! `keel-perf --config` with what keel-tgt saves: a config with bdev (malloc + raid) and nvmf
//! subsystems benchmarks the named bdev; the nvmf part is skipped with a warning (it exports
//! bdevs, it does not create them), as perf/README.md promises ("keel-tgt's JSON config").

use std::process::Command;

fn config() -> serde_json::Value {
    serde_json::json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "PM0", "num_blocks": 4096, "block_size": 4096}},
            {"method": "bdev_malloc_create", "params": {"name": "PM1", "num_blocks": 4096, "block_size": 4096}},
            {"method": "bdev_raid_create", "params": {"name": "PRaid0", "raid_level": "raid0",
                "strip_size_kb": 64, "base_bdevs": ["PM0", "PM1"]}}
        ]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": {"nqn": "nqn.2016-06.io.keel:perf", "allow_any_host": true}}
        ]}
    ]})
}

#[test]
fn a_keel_tgt_config_with_nvmf_and_raid_benchmarks_its_bdev() {
    let dir = std::env::temp_dir().join(format!("keel-perf-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tgt.json");
    std::fs::write(&file, config().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel-perf"))
        .args([
            "-q",
            "8",
            "-w",
            "randrw",
            "--verify",
            "-t",
            "0.3",
            "--no-progress",
        ])
        .args(["--pool-size-mb", "16", "--config"])
        .arg(&file)
        .args(["--bdev-name", "PRaid0"])
        .output()
        .expect("run keel-perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "keel-perf --config failed: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.contains("0 corrupt"), "{stdout}");
    assert!(
        stderr.contains("subsystem \"nvmf\" skipped"),
        "the skipped nvmf part is named: {stderr}"
    );
}
