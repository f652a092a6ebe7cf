//! Several captures replayed as one (a scenario's `capture = [...]`): each
//! keeps its own timing from the start of the replay, as if recorded side
//! by side, so that a checkout flow and a browsing flow load the stacks
//! together. Streamed: one exchange of each input in memory at a time.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{CaptureHeader, CaptureReader, CaptureWriter, Exchange};

/// Writes `inputs` mixed into `output`: exchanges in order of their offsets,
/// numbered anew, each session prefixed with its capture's place in the
/// list (`1/u7`), so that sessions of different captures stay apart. A line
/// that cannot be read is an error naming its file and line: nothing is
/// dropped on the way.
pub fn mix(inputs: &[PathBuf], output: &Path) -> anyhow::Result<u64> {
    let mut readers = inputs
        .iter()
        .map(|path| CaptureReader::open(path).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let header = CaptureHeader {
        started_at_unix_us: readers
            .iter()
            .map(|r| r.header().started_at_unix_us)
            .min()
            .unwrap_or_default(),
        source: format!(
            "mixed: {}",
            readers
                .iter()
                .map(|r| r.header().source.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        ..CaptureHeader::new("")
    };
    let mut heads: Vec<Option<Exchange>> = readers
        .iter_mut()
        .map(|r| r.next().transpose())
        .collect::<Result<_, _>>()?;
    let mut writer = CaptureWriter::create(output, &header)
        .with_context(|| format!("{}: cannot write the mixed capture", output.display()))?;
    let mut id = 0;
    // The input whose next exchange comes first; ties go to the earlier input.
    while let Some(i) = (0..heads.len())
        .filter(|&i| heads[i].is_some())
        .min_by_key(|&i| heads[i].as_ref().map(|e| e.offset_us))
    {
        let mut exchange = heads[i].take().expect("filtered");
        id += 1;
        exchange.id = id;
        exchange.session = format!("{}/{}", i + 1, exchange.session);
        writer.write(&exchange)?;
        heads[i] = readers[i].next().transpose()?;
    }
    writer.finish()?;
    Ok(id)
}
