//! The developer transport: each mail becomes `<MAIL_DIR>/<message-id>.eml`, ready to open in
//! any mail client. No SMTP server needed.

use std::path::PathBuf;

use anyhow::Context;
use lettre::Message;

use super::{MailTransport, SendError};

/// Writes mails as `.eml` files.
#[derive(Debug, Clone)]
pub(crate) struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// Creates `dir` if needed.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub(crate) async fn new(dir: PathBuf) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating MAIL_DIR {}", dir.display()))?;
        Ok(Self { dir })
    }
}

#[async_trait::async_trait]
impl MailTransport for FileMailer {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        // Named after the Message-ID (one per event), so a resend overwrites instead of
        // duplicating; written to a temporary name and renamed, so a reader never sees half.
        let id = message
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .replace(['/', '\\'], "_");
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            id
        };
        let path = self.dir.join(format!("{id}.eml"));
        let tmp = self.dir.join(format!(".{id}.eml.tmp"));
        let write = async {
            tokio::fs::write(&tmp, message.formatted()).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        write
            .await
            .map_err(|e| SendError::Transient(format!("writing {}: {e}", path.display())))
    }

    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}
