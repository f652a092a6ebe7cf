use std::process::ExitCode;

fn main() -> ExitCode {
    match tandem::cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::from(tandem::cli::EXIT_BAD_INPUT)
        }
    }
}
