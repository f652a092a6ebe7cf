//! Helpers shared by the benchmarks: measuring a child process, and nginx
//! serving a JSON file on loopback.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A finished command: how long it took, its peak memory, what it printed.
pub struct Run {
    pub elapsed: Duration,
    pub peak_kb: u64,
    pub stdout: String,
}

/// Runs a command to the end, sampling its peak resident memory (VmHWM).
pub fn measure(command: &mut Command) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut peak_kb = 0;
    loop {
        peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Run {
        elapsed: start.elapsed(),
        peak_kb,
        stdout: reader.join().unwrap_or_default(),
    })
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Stops a child with SIGINT (tcpdump then finishes its file) and waits.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// nginx serving `orders.json` on each of `ports` (127.0.0.1), one worker.
pub fn nginx(dir: &Path, ports: &[u16]) -> anyhow::Result<Guard> {
    let root = dir.join("nginx");
    // The first server's orders as compact JSON; the others' the same
    // orders with keys in another order and spaces, so that a differ must
    // parse both answers to find them equal.
    let item = r#"{"id":1042,"customer":"c7","status":"paid","total":398.24,"items":[{"product_id":7,"qty":2,"unit_price":19.99}]}"#;
    let variant = r#"{ "items": [ { "unit_price": 19.99, "qty": 2, "product_id": 7 } ], "total": 398.24, "status": "paid", "customer": "c7", "id": 1042 }"#;
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| -> anyhow::Result<String> {
            let html = root.join(format!("html{i}"));
            std::fs::create_dir_all(&html)?;
            let one = if i == 0 { item } else { variant };
            std::fs::write(html.join("orders.json"), format!("[{}]", [one; 12].join(",")))?;
            Ok(format!(
                "server {{ listen 127.0.0.1:{p}; root {}; location / {{ default_type application/json; }} }}\n",
                html.display()
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; {servers} }}\n",
            root = root.display()
        ),
    )?;
    let child = Command::new("nginx")
        .args(["-c", conf.to_str().unwrap(), "-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("nginx: {e} (run .ci/setup --bench)"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Guard(child))
}
