//! What `deploy/` ships holds: every Kubernetes manifest validates against
//! the Kubernetes schemas (kubernetes-validate, installed by `.ci/setup`,
//! offline), strictly, so a misspelt field fails; the image runs tandem as
//! PID 1 and not as root, as the manifests expect.

mod common;

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

/// In a pod, tandem is PID 1 of its PID namespace (the Job `exec`s it), and
/// the kernel gives PID 1 no default action for SIGTERM: a process that
/// does not handle it ignores it, and the kubelet kills it after the grace
/// period, with no report. Here tandem runs as PID 1 of a namespace of its
/// own (`unshare`, as root), is sent SIGTERM as a preempted pod's would be,
/// and stops, drains and writes its report: exit 3, interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_tandem_writes_its_report_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let target = common::Echo::start().await;
    let exchanges = (1..=100).map(|i| common::exchange(i, i * 10_000, "s", "GET", "/", &[]));
    let capture = common::write_capture(&dir.path().join("capture.jsonl"), exchanges);
    let out = dir.path().join("run");
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .arg("replay")
        .arg(&capture)
        .args(["--legacy", &target.url(), "--new", &target.url()])
        // 100 exchanges/s for up to 60 s: stopped once 50 are in.
        .args(["--rate", "100", "--duration", "60s", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let ended = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let tandem = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.to_string();
        }
        if std::time::Instant::now() > ended {
            let _ = unshare.kill();
            panic!("unshare started no tandem: {:?}", unshare.try_wait());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // tandem is PID 1 inside its namespace.
    let status = std::fs::read_to_string(format!("/proc/{tandem}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");

    common::wait_for_results(&out, 50, std::time::Duration::from_secs(20)).await;
    let term = Command::new("kill")
        .args(["-TERM", &tandem])
        .status()
        .unwrap();
    assert!(term.success());
    let waited = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = unshare.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > waited {
            let _ = Command::new("kill").args(["-KILL", &tandem]).status();
            let _ = unshare.kill();
            panic!("tandem as PID 1 did not stop within 20 s of SIGTERM");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // The 50 flushed and what went out since (about 100 at the first
    // flush, a second in).
    common::assert_interrupted(exit, &out, 50..1_000);
}
