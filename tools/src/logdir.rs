//! Inspecting a log directory without changing it.

use std::{fmt::Write as _, path::Path};

use keel_storage::{
    batch::BatchView,
    io::{dma::DmaDir, Dir, File},
    recovery::{scan_segment, ScanEnd},
};

/// What [`verify`] found in one segment.
#[derive(Debug)]
pub struct SegmentCheck {
    pub name: String,
    pub base: u64,
    pub file_bytes: u64,
    pub valid_bytes: u64,
    pub batches: u64,
    pub next_offset: u64,
    pub end: ScanEnd,
    pub damaged: Vec<String>,
}

impl SegmentCheck {
    /// A segment is healthy if nothing in it is damaged and it ends cleanly (the last segment may
    /// also end in zero padding).
    pub fn healthy(&self, is_last: bool) -> bool {
        self.damaged.is_empty() && (self.end == ScanEnd::Eof || (is_last && self.end == ScanEnd::ZeroTail))
    }
}

fn segment_names(path: &Path) -> std::io::Result<Vec<(u64, String)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(base) =
            name.strip_suffix(".log").and_then(|d| (d.len() == 20).then(|| d.parse::<u64>().ok()).flatten())
        {
            names.push((base, name));
        }
    }
    names.sort();
    Ok(names)
}

/// Scans every segment in `path` (read-only).
pub fn verify(path: &Path) -> std::io::Result<Vec<SegmentCheck>> {
    let path = path.to_path_buf();
    let names = segment_names(&path)?;
    run(async move {
        let dir = DmaDir::create(&path).await?;
        let mut out = Vec::new();
        let count = names.len();
        for (i, (base, name)) in names.into_iter().enumerate() {
            let file = dir.open(&name, false).await?;
            let len = file.len().await?;
            let sealed = i + 1 < count;
            let scan = scan_segment(&file, base, len, sealed, 4096).await?;
            file.close().await?;
            out.push(SegmentCheck {
                name,
                base,
                file_bytes: len,
                valid_bytes: scan.valid_end,
                batches: scan.batches,
                next_offset: scan.next_offset,
                end: scan.end,
                damaged: scan
                    .damage
                    .iter()
                    .map(|d| format!("offsets {:?} at bytes {:?}: {}", d.offsets, d.positions, d.reason))
                    .collect(),
            });
        }
        Ok(out)
    })
}

/// One line per batch (and per record with `records`), segment by segment.
pub fn dump(path: &Path, records: bool, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let path = path.to_path_buf();
    let names = segment_names(&path)?;
    let text = run(async move {
        let dir = DmaDir::create(&path).await?;
        let mut text = String::new();
        for (_, name) in names {
            let file = dir.open(&name, false).await?;
            let len = file.len().await?;
            let bytes = file.read_at(0, len as usize).await?;
            file.close().await?;
            let _ = writeln!(text, "segment {name} ({len} bytes)");
            let mut pos = 0usize;
            while pos < bytes.len() {
                match BatchView::parse(&bytes[pos..]) {
                    Ok(b) => {
                        let _ = writeln!(
                            text,
                            "  batch offsets {}..={} records={} bytes={} position={pos} epoch={} max_ts={} compression={} crc={:#010x}",
                            b.base_offset(),
                            b.last_offset(),
                            b.records_count(),
                            b.total_len(),
                            b.partition_leader_epoch(),
                            b.max_timestamp(),
                            b.compression().name(),
                            b.crc()
                        );
                        if records {
                            dump_records(&b, &mut text);
                        }
                        pos += b.total_len();
                    }
                    Err(e) => {
                        let _ = writeln!(text, "  stop at position {pos}: {e}");
                        break;
                    }
                }
            }
        }
        Ok(text)
    })?;
    out.write_all(text.as_bytes())
}

fn dump_records(b: &BatchView<'_>, text: &mut String) {
    match b.records() {
        Ok(records) => {
            for r in records {
                match r {
                    Ok(r) => {
                        let show = |v: Option<&[u8]>| {
                            v.map_or("null".to_string(), |v| String::from_utf8_lossy(v).into_owned())
                        };
                        let _ = writeln!(
                            text,
                            "    offset={} ts={} key={} value={} headers={}",
                            r.offset(b.base_offset()),
                            r.timestamp(b.base_timestamp()),
                            show(r.key),
                            show(r.value),
                            r.headers.len()
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(text, "    bad record: {e}");
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(text, "    records not shown: {e}");
        }
    }
}

fn run<T: Send + 'static>(f: impl std::future::Future<Output = std::io::Result<T>> + 'static) -> std::io::Result<T> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("keel-tools")
        .make()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .run(f)
}
