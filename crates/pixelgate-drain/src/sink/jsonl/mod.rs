//! JSON lines: each event as one line, appended and synced per batch, the file rotated by size.
//!
//! A rotated file is renamed `NAME.UNIXMILLIS` beside the live one, so readers can take closed
//! files whole. A batch written twice (a replay) appears twice here: JSON-lines readers must
//! deduplicate on `id`, which the SQL sinks do for you.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use pixelgate_core::Event;
use tokio::sync::Mutex;

use super::{Sink, SinkError, SinkFuture};
use crate::sink::{SinkOptions, SinkUrl};

/// The open file and its size, behind one lock: batches are appended whole, one at a time.
#[derive(Debug)]
pub(crate) struct JsonLines {
    path: PathBuf,
    rotate_bytes: u64,
    file: Mutex<(File, u64)>,
}

/// Opens (or creates) the file `jsonl:///path` names.
pub(crate) fn open(url: &SinkUrl, options: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    let path = url
        .file_path()
        .ok_or_else(|| SinkError::Unknown(url.scheme().to_owned()))?;
    Ok(Box::new(JsonLines::open(
        &path,
        options.jsonl_rotate_bytes,
    )?))
}

impl JsonLines {
    fn open(path: &Path, rotate_bytes: u64) -> Result<Self, SinkError> {
        let file = open_append(path)?;
        let size = file.metadata().map_err(|e| file_error(path, e))?.len();
        Ok(Self {
            path: path.to_owned(),
            rotate_bytes,
            file: Mutex::new((file, size)),
        })
    }

    async fn append(&self, events: &[Event]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(events.len() * 320);
        for e in events {
            buf.extend_from_slice(&e.to_json());
            buf.push(b'\n');
        }
        let mut guard = self.file.lock().await;
        let (file, size) = &mut *guard;
        if *size > 0 && *size + buf.len() as u64 > self.rotate_bytes {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(format!(".{ms}"));
            std::fs::rename(&self.path, &rotated).map_err(|e| file_error(&self.path, e))?;
            *file = open_append(&self.path)?;
            *size = 0;
        }
        // The write and fsync block, so they run on the blocking pool; the lock keeps batches
        // whole and in order.
        let mut handle = file.try_clone().map_err(|e| file_error(&self.path, e))?;
        let len = buf.len() as u64;
        tokio::task::spawn_blocking(move || {
            handle.write_all(&buf)?;
            handle.sync_data()
        })
        .await
        .map_err(|e| file_error(&self.path, std::io::Error::other(e)))?
        .map_err(|e| file_error(&self.path, e))?;
        *size += len;
        Ok(())
    }
}

impl Sink for JsonLines {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write<'a>(&'a self, events: &'a [Event]) -> SinkFuture<'a> {
        Box::pin(self.append(events))
    }

    /// The file's directory is there.
    fn ping(&self) -> SinkFuture<'_> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let found = std::fs::metadata(dir)
            .map(drop)
            .map_err(|e| file_error(dir, e));
        Box::pin(std::future::ready(found))
    }
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::File {
        path: path.to_owned(),
        source,
    }
}
