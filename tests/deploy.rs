//! What `deploy/` ships holds: every Kubernetes manifest validates against
//! the Kubernetes schemas (kubernetes-validate, installed by `.ci/setup`,
//! offline), strictly, so a misspelt field fails; the image runs tandem as
//! PID 1 and not as root, as the manifests expect.

use std::process::Command;

fn manifests() -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("deploy/k8s").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            "1.30",
        ])
        .arg(path)
        .output()
        .expect("python3 with kubernetes-validate (.ci/setup installs it)")
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let manifests = manifests();
    assert!(!manifests.is_empty());
    for path in &manifests {
        let out = validate(path);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {text}", path.display());
        assert!(text.contains("passed"), "{text}");
    }
    // The check can fail: a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&manifests[0]).unwrap();
    assert!(text.contains("backoffLimit"));
    std::fs::write(&bad, text.replacen("backoffLimit", "backofLimit", 1)).unwrap();
    let out = validate(&bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("'backofLimit' was unexpected")
            || String::from_utf8_lossy(&out.stderr).contains("'backofLimit' was unexpected")
    );
}

#[test]
fn the_image_runs_tandem_as_pid_1_and_not_as_root() {
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage.contains("ENTRYPOINT [\"/usr/local/bin/tandem\"]"),
        "exec form"
    );
    assert!(last_stage.contains("USER 10001"), "not root");
    assert!(
        last_stage.contains("libpcap0.8"),
        "the pcap crate links libpcap"
    );
    // The manifests run the image as that user, and exec tandem from the shell.
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("runAsUser: 10001"), "{}", path.display());
        assert!(text.contains("exec tandem "), "{}", path.display());
    }
}
