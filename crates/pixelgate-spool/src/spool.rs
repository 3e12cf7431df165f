//! The spool directory: segment files, appended in synced groups, rotated by size.
//!
//! Files are `NNNNNNNNNNNNNNNNNNNN.seg` (a 20-digit sequence number) beside a `lock` file that
//! one process holds with `flock`, so two edges never share a spool. New records go to the
//! current segment; sealed segments never change again and are replayed oldest first. Segments
//! found at start (a previous run's) are all sealed: the first append opens a new one.

use std::{
    collections::VecDeque,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    num::NonZeroU64,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use pixelgate_core::Invalid;
use serde::Deserialize;

use crate::frame::{self, FrameError, Lane, MAGIC};

/// `[spool]`: where the edge keeps events Redis did not acknowledge in time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of segment files, made (mode 0700) when missing. A relative path is taken
    /// from the configuration file's directory. Default `/var/lib/pixelgate/spool`.
    pub dir: PathBuf,
    /// A new segment file is started once the current one holds this many bytes; replay takes
    /// a segment at a time. Default `4194304` (4 MiB).
    pub segment_bytes: NonZeroU64,
    /// Most bytes the spool holds. When full, new events are refused and counted
    /// (`pixelgate_spool_dropped_events_total`); spooled events are never dropped for room, and
    /// `/readyz` answers `503` until replay makes room. Default `1073741824` (1 GiB).
    pub max_bytes: NonZeroU64,
    /// How often the replayer asks Redis whether it is back, and waits after a failed replay
    /// batch. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/pixelgate/spool"),
            segment_bytes: NonZeroU64::new(4 << 20).unwrap_or(NonZeroU64::MIN),
            max_bytes: NonZeroU64::new(1 << 30).unwrap_or(NonZeroU64::MIN),
            retry_interval: Duration::from_secs(1),
        }
    }
}

impl SpoolConfig {
    /// Checks what single values cannot check; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.segment_bytes.get() < 64 * 1024 {
            return Err(Invalid::new(
                "spool.segment_bytes",
                "must be at least 65536",
            ));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(Invalid::new(
                "spool.max_bytes",
                "must be at least spool.segment_bytes",
            ));
        }
        if self.retry_interval.is_zero() || self.retry_interval > Duration::from_secs(60) {
            return Err(Invalid::new(
                "spool.retry_interval",
                "must be more than 0s and at most 60s",
            ));
        }
        Ok(())
    }
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the spool directory {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the spool directory {} is in use by another process", path.display())]
    InUse { path: PathBuf },
    #[error("the spool is full: {max_bytes} bytes (spool.max_bytes)")]
    Full { max_bytes: u64 },
    #[error("cannot write the spool segment {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the spool segment {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the spool segment {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot spool an event")]
    Frame(#[from] FrameError),
}

impl SpoolError {
    /// The `reason` label a refused event is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full { .. } => "spool_full",
            Self::Frame(_) => "spool_frame",
            Self::Open { .. }
            | Self::InUse { .. }
            | Self::Write { .. }
            | Self::Read { .. }
            | Self::Remove { .. } => "spool_error",
        }
    }
}

/// A sealed segment: it will not change again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    /// Bytes on disk, header included.
    pub len: u64,
    pub path: PathBuf,
}

/// What the spool holds now, readable without its lock (for `/readyz` and `/metrics`).
#[derive(Debug, Default)]
pub struct SpoolStats {
    bytes: AtomicU64,
    segments: AtomicU64,
}

impl SpoolStats {
    /// Bytes in every segment file, the one being written included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Segment files on disk, the one being written included.
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Relaxed)
    }
}

/// The spool directory of one process. Share it in an `Arc`; methods block on file I/O.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    retry_interval: Duration,
    inner: Mutex<Inner>,
    stats: SpoolStats,
    /// Held for the life of the spool: its `flock` keeps other processes out.
    _lock: File,
}

#[derive(Debug)]
struct Inner {
    current: Option<Current>,
    sealed: VecDeque<Segment>,
    next_seq: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Current {
    seq: u64,
    file: File,
    len: u64,
}

impl Spool {
    /// Opens (or makes) the spool directory, takes its lock and finds the segments a previous
    /// run left, oldest first. Files holding nothing but a header are removed.
    pub fn open(config: &SpoolConfig) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        let open_err = |source| SpoolError::Open {
            path: dir.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(open_err)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(open_err)?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => SpoolError::InUse { path: dir.clone() },
            fs::TryLockError::Error(source) => open_err(source),
        })?;

        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(open_err)? {
            let entry = entry.map_err(open_err)?;
            let Some(seq) = segment_seq(&entry.file_name()) else {
                continue;
            };
            let len = entry.metadata().map_err(open_err)?.len();
            let path = entry.path();
            if len <= MAGIC.len() as u64 {
                fs::remove_file(&path).map_err(open_err)?;
                continue;
            }
            found.push(Segment { seq, len, path });
        }
        found.sort_by_key(|s| s.seq);
        let bytes = found.iter().map(|s| s.len).sum();
        let stats = SpoolStats::default();
        stats.bytes.store(bytes, Ordering::Relaxed);
        stats.segments.store(found.len() as u64, Ordering::Relaxed);
        Ok(Self {
            segment_bytes: config.segment_bytes.get(),
            max_bytes: config.max_bytes.get(),
            retry_interval: config.retry_interval,
            inner: Mutex::new(Inner {
                current: None,
                next_seq: found.last().map_or(1, |s| s.seq + 1),
                sealed: found.into(),
                bytes,
            }),
            stats,
            dir,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    /// `spool.retry_interval`, for the replayer.
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether the spool has reached `spool.max_bytes`. A group can be refused a little before
    /// (it must fit whole): what the spool refused is counted where it is dropped.
    pub fn is_full(&self) -> bool {
        self.stats.bytes() >= self.max_bytes
    }

    /// Appends the records as one group: one `write`, one `fdatasync`, and only then `Ok`.
    /// Refused whole when it would take the spool past `max_bytes`. A failed write is cut
    /// back off the file where possible, so the segment holds only whole, synced groups.
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = (Lane, &'a [u8])>,
    ) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for (lane, payload) in records {
            frame::encode(lane, payload, &mut buf)?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        if inner.bytes + buf.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                max_bytes: self.max_bytes,
            });
        }
        if inner
            .current
            .as_ref()
            .is_some_and(|c| c.len >= self.segment_bytes)
        {
            self.seal_locked(&mut inner);
        }
        let Inner {
            current,
            next_seq,
            bytes,
            ..
        } = &mut *inner;
        let current = match current {
            Some(current) => current,
            None => {
                let made = self.create(*next_seq)?;
                *next_seq += 1;
                *bytes += made.len;
                current.insert(made)
            }
        };
        let written = current
            .file
            .write_all(&buf)
            .and_then(|()| current.file.sync_data());
        match written {
            Ok(()) => {
                current.len += buf.len() as u64;
                *bytes += buf.len() as u64;
                self.publish(&inner);
                Ok(())
            }
            Err(source) => {
                let path = self.path(current.seq);
                // Cut the half-written group off. If even that fails, seal the segment: its
                // reader skips a damaged tail, and new groups start on a clean file.
                let cut = current.file.set_len(current.len).is_ok();
                if !cut {
                    let end = current.file.metadata().map_or(current.len, |m| m.len());
                    *bytes += end.saturating_sub(current.len);
                    current.len = end;
                    self.seal_locked(&mut inner);
                }
                self.publish(&inner);
                Err(SpoolError::Write { path, source })
            }
        }
    }

    /// Closes the current segment if it holds any record, so that it can be replayed.
    /// Returns whether there is now a sealed segment to replay.
    pub fn seal(&self) -> bool {
        let mut inner = self.lock();
        self.seal_locked(&mut inner);
        !inner.sealed.is_empty()
    }

    /// The oldest sealed segment, the next to replay.
    pub fn oldest(&self) -> Option<Segment> {
        self.lock().sealed.front().cloned()
    }

    /// A sealed segment's bytes. Read them with [`frame::Records::segment`].
    pub fn read(&self, segment: &Segment) -> Result<Vec<u8>, SpoolError> {
        fs::read(&segment.path).map_err(|source| SpoolError::Read {
            path: segment.path.clone(),
            source,
        })
    }

    /// Deletes a sealed segment: call only once Redis has acknowledged all of it.
    pub fn remove(&self, segment: &Segment) -> Result<(), SpoolError> {
        match fs::remove_file(&segment.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SpoolError::Remove {
                    path: segment.path.clone(),
                    source,
                });
            }
        }
        let mut inner = self.lock();
        if let Some(at) = inner.sealed.iter().position(|s| s.seq == segment.seq) {
            let gone = inner.sealed.remove(at).map_or(0, |s| s.len);
            inner.bytes = inner.bytes.saturating_sub(gone);
        }
        self.publish(&inner);
        Ok(())
    }

    /// Takes a sealed segment that cannot be read out of the replay, so the ones after it are
    /// replayed: the file is renamed `NAME.unreadable` beside the others (for a person to look
    /// at; the spool no longer counts it) or, when it is already gone, forgotten. Returns where
    /// it now is, if anywhere.
    pub fn set_aside(&self, segment: &Segment) -> Option<PathBuf> {
        let mut aside = segment.path.clone().into_os_string();
        aside.push(".unreadable");
        let aside = PathBuf::from(aside);
        let kept = fs::rename(&segment.path, &aside).is_ok().then_some(aside);
        let mut inner = self.lock();
        if let Some(at) = inner.sealed.iter().position(|s| s.seq == segment.seq) {
            let gone = inner.sealed.remove(at).map_or(0, |s| s.len);
            inner.bytes = inner.bytes.saturating_sub(gone);
        }
        self.publish(&inner);
        kept
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the bookkeeping as consistent as the files
        // are: every method updates it only after its file operation, so carry on.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seal_locked(&self, inner: &mut Inner) {
        if let Some(current) = inner.current.take() {
            if current.len > MAGIC.len() as u64 {
                inner.sealed.push_back(Segment {
                    seq: current.seq,
                    len: current.len,
                    path: self.path(current.seq),
                });
            } else {
                // Nothing but a header: nothing to replay, so no file to keep.
                let _ = fs::remove_file(self.path(current.seq));
                inner.bytes = inner.bytes.saturating_sub(current.len);
            }
        }
        self.publish(inner);
    }

    /// Makes a new segment file with its header, and syncs the directory so that the file
    /// itself survives a crash, not only its contents.
    fn create(&self, seq: u64) -> Result<Current, SpoolError> {
        let path = self.path(seq);
        let write_err = |source| SpoolError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(MAGIC)
            .and_then(|()| file.sync_data())
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .map_err(|source| {
                let _ = fs::remove_file(&path);
                write_err(source)
            })?;
        Ok(Current {
            seq,
            file,
            len: MAGIC.len() as u64,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    fn publish(&self, inner: &Inner) {
        let segments = inner.sealed.len() + usize::from(inner.current.is_some());
        self.stats.bytes.store(inner.bytes, Ordering::Relaxed);
        self.stats
            .segments
            .store(segments as u64, Ordering::Relaxed);
    }
}

/// The sequence number of a segment file name, `None` for any other file.
fn segment_seq(name: &std::ffi::OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
