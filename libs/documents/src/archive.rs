//! Zip archives written as a stream of chunks into a bounded channel, entry by entry, so that
//! an archive of thousands of attachments never sits whole in memory and a slow reader slows
//! the writer down instead of filling memory.
//!
//! The writer blocks on the channel: run it on a blocking thread (`spawn_blocking`).

use std::io::Write;

use bytes::Bytes;
use tokio::sync::mpsc;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use crate::DocumentError;

const CHUNK: usize = 64 * 1024;

/// Hands full chunks to the channel.
struct Chunks {
    sender: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        self.sender.blocking_send(chunk).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Never more than a chunk at a time: the caller's write_all comes back for the rest.
        let taken = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A broken pipe is the channel's reader gone (see `Chunks::send`), not a fault.
fn failed_io(e: std::io::Error) -> DocumentError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        DocumentError::Closed
    } else {
        DocumentError::Archive(e.to_string())
    }
}

fn failed(e: zip::result::ZipError) -> DocumentError {
    match e {
        zip::result::ZipError::Io(e) => failed_io(e),
        other => DocumentError::Archive(other.to_string()),
    }
}

/// A zip archive being written into a channel.
pub struct ArchiveWriter {
    zip: ZipWriter<StreamWriter<Chunks>>,
    names: std::collections::HashSet<String>,
}

impl ArchiveWriter {
    pub fn new(sender: mpsc::Sender<Bytes>) -> Self {
        let chunks = Chunks { sender, buffer: Vec::with_capacity(CHUNK) };
        Self { zip: ZipWriter::new_stream(chunks), names: Default::default() }
    }

    /// Starts the next entry. Files that are compressed already (PDF, Office, PNG, JPEG) are
    /// stored as they are; `compress` deflates the rest. A name used before gets a number.
    pub fn start(&mut self, name: &str, compress: bool) -> Result<String, DocumentError> {
        let name = self.unique(name);
        let method = if compress { CompressionMethod::Deflated } else { CompressionMethod::Stored };
        let options = SimpleFileOptions::default().compression_method(method).large_file(true);
        self.zip.start_file(name.clone(), options).map_err(failed)?;
        Ok(name)
    }

    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let (stem, extension) = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !stem.ends_with('/') => (stem, format!(".{ext}")),
            _ => (name, String::new()),
        };
        let mut n = 2;
        while self.names.contains(&candidate) {
            candidate = format!("{stem} ({n}){extension}");
            n += 1;
        }
        self.names.insert(candidate.clone());
        candidate
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), DocumentError> {
        self.zip.write_all(data).map_err(failed_io)
    }

    /// Writes the central directory and sends what is left.
    pub fn finish(self) -> Result<(), DocumentError> {
        let mut stream = self.zip.finish().map_err(failed)?;
        stream.get_mut().send().map_err(failed_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_arrive_as_chunks_that_make_a_readable_archive() {
        let (sender, mut receiver) = mpsc::channel(4);
        let writer = std::thread::spawn(move || {
            let mut archive = ArchiveWriter::new(sender);
            for (name, size) in [("0001/svar.pdf", 200_000), ("0001/svar.pdf", 10), ("0002/bilag æøå.png", 5)] {
                archive.start(name, false)?;
                archive.write(&vec![b'x'; size])?;
            }
            archive.start("indhold.txt", true)?;
            archive.write("Høringssvar".as_bytes())?;
            archive.finish()
        });
        let mut bytes = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = receiver.blocking_recv() {
            assert!(chunk.len() <= CHUNK, "bounded chunks");
            bytes.extend_from_slice(&chunk);
            chunks += 1;
        }
        writer.join().expect("thread").expect("archive");
        assert!(chunks > 2, "written as a stream, {chunks} chunks");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("readable zip");
        let names: Vec<String> = zip.file_names().map(|n| n.expect("name").to_string()).collect();
        assert_eq!(names.len(), 4);
        for expected in ["0001/svar.pdf", "0001/svar (2).pdf", "0002/bilag æøå.png", "indhold.txt"] {
            assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("indhold.txt").expect("entry"), &mut text).expect("read");
        assert_eq!(text, "Høringssvar");
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_writer() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let mut archive = ArchiveWriter::new(sender);
        archive.start("a.pdf", false).expect("start");
        let outcome = archive.write(&vec![0u8; CHUNK * 2]);
        assert!(matches!(outcome, Err(DocumentError::Closed)), "{outcome:?}");
    }
}
