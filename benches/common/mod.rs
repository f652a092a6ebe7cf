//! Helpers shared by the benchmarks: measuring a child process, and nginx
//! serving a JSON file on loopback.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A finished command: how long it took, its peak memory, the CPU time it
/// used (user and system, its threads together), what it printed.
pub struct Run {
    pub elapsed: Duration,
    pub peak_kb: u64,
    pub cpu: Duration,
    /// Of `cpu`, the time spent in the kernel (system calls, and on
    /// loopback the receiving side's TCP work the sender's calls do).
    pub kernel: Duration,
    /// CPU time by thread name, as last seen while the command ran (to the
    /// kernel's tick, and up to one 5 ms sample short at each thread's end).
    pub threads: std::collections::HashMap<String, Duration>,
    pub stdout: String,
}

impl Run {
    /// The CPU time of the threads whose name starts with `prefix`.
    pub fn cpu_of(&self, prefix: &str) -> Duration {
        self.threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, cpu)| *cpu)
            .sum()
    }
}

/// Runs a command to the end, sampling its peak resident memory (VmHWM);
/// its CPU time is the kernel's, from `wait4`.
pub fn measure(command: &mut Command) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut peak_kb = 0;
    let mut by_thread = std::collections::HashMap::new();
    let (cpu, kernel) = loop {
        peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
        thread_times(child.id(), &mut by_thread);
        if let Some((user, kernel)) = reaped(child.id())? {
            break (user + kernel, kernel);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Run {
        elapsed: start.elapsed(),
        peak_kb,
        cpu,
        kernel,
        threads: by_thread.into_values().fold(
            std::collections::HashMap::new(),
            |mut sum, (name, cpu)| {
                *sum.entry(name).or_default() += cpu;
                sum
            },
        ),
        stdout: reader.join().unwrap_or_default(),
    })
}

/// Each live thread of `pid`: its name and CPU time so far, by thread id.
fn thread_times(pid: u32, seen: &mut std::collections::HashMap<u64, (String, Duration)>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = Stat::of(&stat) {
            seen.insert(tid, (stat.name.to_string(), stat.cpu()));
        }
    }
}

/// The fields of a `/proc/.../stat` line that the bench reads.
struct Stat<'a> {
    name: &'a str,
    ppid: u64,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

impl<'a> Stat<'a> {
    /// `pid (name) state ppid ...`: ppid, utime and stime are the 2nd,
    /// 12th and 13th fields after the name.
    fn of(stat: &'a str) -> Option<Stat<'a>> {
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            name: &stat[open + 1..close],
            ppid: field(1)?,
            ticks: field(11).unwrap_or(0) + field(12).unwrap_or(0),
        })
    }

    fn cpu(&self) -> Duration {
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(self.ticks * 1_000_000 / per_second)
    }
}

/// The CPU time of child `pid` once it has ended (and is reaped here, so
/// its `Child` must not be waited for again), in user space and in the
/// kernel; `None` while it runs.
fn reaped(pid: u32) -> std::io::Result<Option<(Duration, Duration)>> {
    let mut status = 0;
    // SAFETY: rusage is plain data, written by wait4 for the child reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with WNOHANG and valid out pointers.
    let ended = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
    match ended {
        0 => Ok(None),
        -1 => Err(std::io::Error::last_os_error()),
        _ => {
            let time = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            Ok(Some((time(usage.ru_utime), time(usage.ru_stime))))
        }
    }
}

/// Keeps the calling thread, and the threads it starts from now on, to
/// `cpu` (Linux); an error where the kernel refuses.
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it, and
    // sched_setaffinity reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU time so far of the processes whose parent is `pid` (nginx's
/// workers, under its master), to the kernel's tick.
pub fn children_cpu(pid: u32) -> Duration {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    processes
        .flatten()
        .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
        .filter_map(|stat| {
            let stat = Stat::of(&stat)?;
            (stat.ppid == pid as u64).then(|| stat.cpu())
        })
        .sum()
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
