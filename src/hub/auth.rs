//! Member authentication: one bearer token per member cluster, read from a directory (a mounted
//! Secret: file name = cluster id, content = token). Tokens are compared in constant time and never
//! logged.

use std::path::{Path, PathBuf};

use super::report::check_cluster_id;

/// Problems reading the tokens directory.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The directory or a file in it could not be read.
    #[error("reading tokens from {path}: {source}")]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No usable token: every member would be refused.
    #[error(
        "no member tokens in {0} (one file per member cluster: name = cluster id, content = token)"
    )]
    Empty(PathBuf),
}

/// The member tokens.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    members: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ids only: a token must never reach a log line.
        let ids: Vec<&str> = self.members.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Tokens").field("members", &ids).finish()
    }
}

impl Tokens {
    /// Tokens from `(cluster id, token)` pairs.
    pub fn from_pairs<I, S, T>(pairs: I) -> Tokens
    where
        I: IntoIterator<Item = (S, T)>,
        S: Into<String>,
        T: AsRef<[u8]>,
    {
        Tokens {
            members: pairs
                .into_iter()
                .map(|(id, token)| (id.into(), token.as_ref().to_vec()))
                .collect(),
        }
    }

    /// Read every token file of `dir`. Hidden entries (a Secret mount's `..data` links) and files
    /// whose name is not a cluster id are skipped with a warning; surrounding whitespace is trimmed.
    pub fn read_dir(dir: &Path) -> Result<Tokens, TokensError> {
        let read_err = |path: &Path, source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut members = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let path = entry.map_err(|e| read_err(dir, e))?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if id.starts_with('.') || !path.is_file() {
                continue;
            }
            if let Err(message) = check_cluster_id(id) {
                tracing::warn!(file = %path.display(), "skipping token file: {message}");
                continue;
            }
            let content = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
            let token = content.trim_ascii();
            if token.is_empty() {
                tracing::warn!(cluster = id, "skipping empty token file");
                continue;
            }
            members.push((id.to_string(), token.to_vec()));
        }
        if members.is_empty() {
            return Err(TokensError::Empty(dir.to_path_buf()));
        }
        members.sort();
        Ok(Tokens { members })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member whose token is `presented`. Every token is compared, in constant time, so the
    /// answer's timing tells nothing about which or how much of a token matched.
    pub fn member(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (id, token) in &self.members {
            if constant_time_eq(token, presented) {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Equality whose running time depends only on the lengths, not on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Compare against `a` cyclically so the loop length depends on `b` only.
    for (i, byte) in b.iter().enumerate() {
        let expected = a.get(i % a.len().max(1)).copied().unwrap_or(0);
        diff |= expected ^ byte;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
        assert!(!constant_time_eq(b"abab", b"ab"));
    }

    #[test]
    fn a_token_identifies_its_member_and_nothing_else_does() {
        let tokens = Tokens::from_pairs([("prod-eu", "t-eu"), ("prod-us", "t-us")]);
        assert_eq!(tokens.member(b"t-us"), Some("prod-us"));
        assert_eq!(tokens.member(b"t-u"), None);
        assert_eq!(tokens.member(b""), None);
    }

    #[test]
    fn bearer_header_is_parsed_case_insensitively() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn tokens_dir_skips_secret_mount_internals_and_trims() {
        let dir = std::env::temp_dir().join(format!("cloudoptim-tokens-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..data")).expect("dir");
        std::fs::write(dir.join("prod-eu"), "  tok-eu\n").expect("write");
        std::fs::write(dir.join("Bad_Name"), "x").expect("write");
        std::fs::write(dir.join("empty"), "\n").expect("write");
        let tokens = Tokens::read_dir(&dir).expect("reads");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens.member(b"tok-eu"), Some("prod-eu"));
        assert!(!format!("{tokens:?}").contains("tok-eu"));
    }
}
