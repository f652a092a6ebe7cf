use std::process::ExitCode;

// Packet import allocates per header and per body; glibc's malloc was a
// quarter of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_huge_pages();
    match tandem::cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::from(tandem::cli::EXIT_BAD_INPUT)
        }
    }
}

/// Asks Linux not to back this process with transparent huge pages. With
/// them, the first touch of each 2 MiB the allocator hands out has the
/// kernel zero 2 MiB in the touching thread: in a replay's first 300 ms
/// the engine and the collector stalled up to 75 ms on it (the sends late
/// by as much; 1.3-8.3 ms without), and peak memory was higher (39-43
/// against 21-26 MB at 10,000 exchanges/s), for no CPU time saved at
/// 20,000/s. Harmless where unsupported.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and only sets a
    // flag of this process (kept by its children).
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0);
    }
}
