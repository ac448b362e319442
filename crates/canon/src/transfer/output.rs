//! Where `canon export --output PATH` writes, decided before the server is
//! asked for anything: a regular file (or none yet) is replaced atomically
//! by a hidden `.part` file renamed over it, beside the real file a symlink
//! names; a FIFO or a device (`/dev/stdout`, `/dev/null`) is written
//! straight into, never replaced; a directory is refused.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::TransferError;

/// Symlinks followed by hand (a dangling link's chain) before giving up,
/// as the kernel's own limit (`ELOOP`) does.
const MAX_LINKS: usize = 40;

/// Where the download goes.
#[derive(Debug)]
pub enum Output {
    /// A regular file, new or replaced: the download goes to `partial`,
    /// which is renamed to `path` once all of it is on disk.
    File {
        /// The real file (symlinks resolved): the rename's target.
        path: PathBuf,
        /// The hidden file beside it; removed if dropped unpersisted.
        partial: tempfile::NamedTempFile,
    },
    /// An existing FIFO, character or block device: written into as it is.
    Stream {
        /// The path as given.
        path: PathBuf,
        /// The open file (a FIFO's open waited for a reader).
        file: std::fs::File,
    },
}

impl Output {
    /// Resolves `--output` `given`: fails (exit 3) on a directory, a missing
    /// directory or an unwritable place, before any request is made.
    pub fn open(given: &Path) -> Result<Output, TransferError> {
        match std::fs::metadata(given) {
            // Follows every symlink, `/proc/self/fd/1` included.
            Ok(meta) if meta.is_dir() => Err(TransferError::Unexpected(format!(
                "--output {}: is a directory, not a file",
                given.display()
            ))),
            Ok(meta) if meta.is_file() => {
                let path = std::fs::canonicalize(given).map_err(TransferError::file(given))?;
                Output::replace(path)
            }
            Ok(_) => {
                // Not truncated, not created: a device or a FIFO is
                // written as it is.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(given)
                    .map_err(TransferError::file(given))?;
                Ok(Output::Stream {
                    path: given.to_owned(),
                    file,
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Output::replace(dangling_end(given)?),
            Err(e) => Err(TransferError::file(given)(e)),
        }
    }

    /// The new file at `path` (its directory made absolute and real).
    fn replace(path: PathBuf) -> Result<Output, TransferError> {
        let name = path
            .file_name()
            .ok_or_else(|| TransferError::Unexpected(format!("--output {}: names no file", path.display())))?
            .to_owned();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir).map_err(TransferError::file(dir))?;
        let path = dir.join(&name);
        // Beside the real file: the rename stays on one file system and
        // replaces the file, not the link that names it.
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(TransferError::file(&dir))?;
        Ok(Output::File { path, partial })
    }

    /// The path the export ends up at, for the person.
    pub fn path(&self) -> &Path {
        match self {
            Output::File { path, .. } | Output::Stream { path, .. } => path,
        }
    }
}

/// The name a missing `given` ends at: `given` itself, or the last name of
/// its symlink chain when it is a dangling link (the file to create).
fn dangling_end(given: &Path) -> Result<PathBuf, TransferError> {
    let mut path = given.to_owned();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).map_err(TransferError::file(&path))?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(path),
            Err(e) => return Err(TransferError::file(&path)(e)),
        }
    }
    Err(TransferError::Unexpected(format!(
        "--output {}: more than {MAX_LINKS} symlinks",
        given.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::super::Exit;
    use super::*;

    fn partial_of(output: &Output) -> (&Path, &Path) {
        match output {
            Output::File { path, partial } => (path, partial.path()),
            Output::Stream { .. } => panic!("a stream: {output:?}"),
        }
    }

    #[test]
    fn the_partial_file_is_hidden_beside_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let output = Output::open(&dir.path().join("out.ndjson")).unwrap();
        let (path, partial) = partial_of(&output);
        assert_eq!(path, real.join("out.ndjson"));
        assert_eq!(partial.parent(), Some(real.as_path()));
        let name = partial.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".out.ndjson.") && name.ends_with(".part"), "{name}");
        drop(output);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "removed when dropped"
        );
    }

    #[test]
    fn an_output_in_a_missing_directory_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let error = Output::open(&dir.path().join("nosuch/out.csv")).unwrap_err();
        assert_eq!(error.exit(), Exit::Broken);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = Output::open(dir.path()).unwrap_err();
        assert_eq!(error.exit(), Exit::Broken);
    }

    #[test]
    fn symlinks_lead_to_the_real_file_even_when_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let link = dir.path().join("link.ndjson");
        std::os::unix::fs::symlink("data/real.ndjson", &link).unwrap();
        let output = Output::open(&link).unwrap();
        let (path, partial) = partial_of(&output);
        assert_eq!(path, real.join("data/real.ndjson"));
        assert_eq!(partial.parent(), Some(real.join("data").as_path()));
        drop(output);
        std::fs::write(dir.path().join("data/real.ndjson"), "x").unwrap();
        let output = Output::open(&link).unwrap();
        assert_eq!(partial_of(&output).0, real.join("data/real.ndjson"));
    }

    #[test]
    fn a_device_is_written_into() {
        let output = Output::open(Path::new("/dev/null")).unwrap();
        assert!(matches!(output, Output::Stream { .. }), "{output:?}");
    }
}
