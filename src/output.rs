//! Output files written whole or not at all. A report, a rules file or a
//! page is written to a temporary file beside its target and renamed over
//! it when complete, so that a full disk or a crash leaves the previous file
//! (or none), never a truncated one; and an output is never opened before
//! the inputs it is made from were checked.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes `path` through `body`, whole or not at all.
pub fn write_with(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let failed = || format!("{}: write failed", path.display());
    let temporary = tempfile::Builder::new()
        .prefix(".tandem-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let mut out = std::io::BufWriter::new(temporary);
    body(&mut out).with_context(failed)?;
    let temporary = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(failed)?;
    temporary
        .persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot replace", path.display()))?;
    Ok(())
}

/// Writes `bytes` to `path`, whole or not at all.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    write_with(path, |out| Ok(out.write_all(bytes.as_ref())?))
}

/// The name a streamed output (a capture, a results file) has while it is
/// written: `NAME.partial` beside it, renamed to NAME when complete. A
/// killed run leaves what was flushed there.
pub fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Refuses to write any of `outputs` over one of `inputs` (the same file by
/// another name included): the input would be gone by the time the output
/// is complete.
pub fn refuse_overwriting(inputs: &[&Path], outputs: &[&Path]) -> anyhow::Result<()> {
    for output in outputs {
        let Ok(out) = std::fs::canonicalize(output) else {
            // Not there yet: it cannot be an input.
            continue;
        };
        for input in inputs {
            if std::fs::canonicalize(input).is_ok_and(|i| i == out) {
                anyhow::bail!(
                    "{}: the output would overwrite the input {}; name another output",
                    output.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}
