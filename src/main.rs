use std::process::ExitCode;

// Packet import allocates per header and per body; glibc's malloc was a
// quarter of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match tandem::cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::from(tandem::cli::EXIT_BAD_INPUT)
        }
    }
}
