//! The `file` gateway's "call": the SMS written to `SMS_DIR/<delivery id>.txt` as
//!
//! ```text
//! To: +447700900123
//!
//! Signup: your code is 482913. It expires in 10 minutes.
//! ```
//!
//! written to a temporary name and renamed, so a reader never sees half a file, and named after
//! the delivery, so an attempt made again overwrites instead of duplicating. A write is recorded
//! as status 200 (an answer of the gateway, for the retry policy and the attempt log); a failure
//! as error kind `other` with the I/O error, retried like a connection error.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::{
    egress::{AttemptResult, ErrorKind, OutboundRequest},
    entity::delivery,
};

/// The file `request` writes, when it is a `file` gateway attempt of an `sms` delivery (only
/// those: no other delivery may write files, whatever its stored URL).
pub(crate) fn target(delivery: &delivery::Model, request: &OutboundRequest) -> Option<PathBuf> {
    if delivery.kind != delivery::kind::SMS {
        return None;
    }
    let url = url::Url::parse(&request.url).ok()?;
    (url.scheme() == "file").then(|| url.to_file_path().ok())?
}

/// Writes `contents` to `path` atomically, creating its folder.
pub(crate) async fn write(path: &Path, contents: &[u8]) -> AttemptResult {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let outcome = write_atomically(path, contents).await;
    let duration = clock.elapsed();
    let (status, error) = match outcome {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "SMS written");
            (Some(200), None)
        }
        Err(error) => {
            let message = format!("writing {}: {error}", path.display());
            tracing::warn!(error = %message, "the SMS file could not be written");
            (None, Some((ErrorKind::Other, message)))
        }
    };
    AttemptResult {
        started_at,
        duration,
        status,
        error,
        retry_after: None,
        response_headers: Vec::new(),
        response_body: String::new(),
    }
}

async fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // Readable by this user only: the file holds a code and a number.
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, contents).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_is_atomic_and_a_second_one_overwrites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("abc.txt");
        let result = write(&path, b"To: +1\n\nfirst\n").await;
        assert_eq!(result.status, Some(200));
        let result = write(&path, b"To: +1\n\nsecond\n").await;
        assert_eq!(result.status, Some(200));
        assert_eq!(
            std::fs::read_to_string(&path).expect("written"),
            "To: +1\n\nsecond\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "a code and a number: owner only");
        }
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("abc.txt")],
            "no temporary left"
        );

        let blocked = dir.path().join("abc.txt").join("x.txt");
        std::fs::write(dir.path().join("abc.txt"), "a file, not a folder").expect("file");
        let result = write(&blocked, b"x").await;
        assert_eq!(result.status, None);
        assert_eq!(result.error.map(|(kind, _)| kind), Some(ErrorKind::Other));
    }
}
