//! `--output FILE`: an append-only record log that logrotate can rotate.
//!
//! Durability: every batch of records is written to the file as soon as it
//! is formatted (one `write` per ring-buffer drain, so a record reaches the
//! kernel within `--batch-ms` of being captured and survives bnetstat being
//! killed), and the file is `fdatasync`ed at most a second after a write,
//! before it is re-opened and when bnetstat stops, so at most the last
//! second is at risk if the machine itself goes down.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Longest time written records wait for `fdatasync`.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The log file and what is buffered for it.
pub struct LogFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// When records were first written since the last sync.
    unsynced: Option<Instant>,
}

impl LogFile {
    /// Opens `path` for appending, creating it (mode 0640) if needed.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: open(path)?,
            buf: Vec::new(),
            unsynced: None,
        })
    }

    /// Writes what is buffered, and syncs when the last sync is a second old.
    pub fn commit(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
            self.unsynced.get_or_insert_with(Instant::now);
        }
        if self.unsynced.is_some_and(|t| t.elapsed() >= SYNC_EVERY) {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes and syncs everything: nothing accepted is lost after this.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        if self.unsynced.take().is_some() {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Syncs the file and opens its path again: after a rotation renamed
    /// it, records go to a new file at the same path.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.sync()?;
        self.file = open(&self.path)?;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.commit()
    }
}

fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_rotation_in_the_old_file_and_go_on_in_the_new() {
        let dir = std::env::temp_dir().join(format!("bnetstat-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("audit.log");
        std::fs::write(&path, "old\n").expect("seed");
        let mut log = LogFile::open(&path).expect("open");
        log.write_all(b"one\n").expect("write");
        log.flush().expect("flush");
        std::fs::rename(&path, dir.join("audit.log.1")).expect("rotate");
        log.write_all(b"two\n").expect("write");
        log.reopen().expect("reopen");
        log.write_all(b"three\n").expect("write");
        log.sync().expect("sync");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(&dir.join("audit.log.1")), "old\none\ntwo\n");
        assert_eq!(read(&path), "three\n");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
