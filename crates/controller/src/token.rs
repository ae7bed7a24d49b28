//! The shared bearer token: reading it from a file or the environment, and checking it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable that holds the token when no file is given.
pub const TOKEN_ENV: &str = "TETHER_TOKEN";

/// The token cannot be read or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("Cannot read the token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Anyone on the machine could read the token file.
    #[error("The token file {path} is readable by every user; chmod o-r it (0600 is usual)")]
    WorldReadable {
        /// The file.
        path: PathBuf,
    },
    /// The token is empty or has characters a header cannot carry.
    #[error(
        "The token from {from} must be one line of visible ASCII characters, without spaces, \
         and not empty"
    )]
    Malformed {
        /// Where it came from (a file or the environment variable).
        from: String,
    },
    /// Neither a file nor the environment gave a token.
    #[error("No token: give a token file or set {TOKEN_ENV}")]
    Missing,
}

/// The token from `file` if given (surrounding whitespace trimmed), else from `env`, the value
/// of [`TOKEN_ENV`] (pass `std::env::var(TOKEN_ENV).ok().as_deref()`).
///
/// A file that every user may read, an empty token or one with spaces or control characters
/// is refused.
pub fn read_token(file: Option<&Path>, env: Option<&str>) -> Result<String, TokenError> {
    let (token, from) = match (file, env) {
        (Some(path), _) => (read_file(path)?, path.display().to_string()),
        (None, Some(value)) => (value.trim().to_owned(), TOKEN_ENV.to_owned()),
        (None, None) => return Err(TokenError::Missing),
    };
    if !is_well_formed(&token) {
        return Err(TokenError::Malformed { from });
    }
    Ok(token)
}

fn read_file(path: &Path) -> Result<String, TokenError> {
    let error = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(error)?.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(TokenError::WorldReadable {
            path: path.to_owned(),
        });
    }
    Ok(std::fs::read_to_string(path)
        .map_err(error)?
        .trim()
        .to_owned())
}

/// Whether `token` can be sent as `Authorization: Bearer <token>`.
pub fn is_well_formed(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Compares a presented token with the expected one in time that depends only on the
/// expected token's length, so a client cannot learn it byte by byte from response times.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let (expected, presented) = (expected.as_bytes(), presented.as_bytes());
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(e ^ p);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_file_wins_over_the_environment_and_is_trimmed() {
        let dir = tether_testkit::temp_dir();
        let path = write(dir.path(), "  s3cret\n", 0o600);
        assert_eq!(read_token(Some(&path), Some("other")).unwrap(), "s3cret");
        assert_eq!(read_token(None, Some("env-token\n")).unwrap(), "env-token");
    }

    #[test]
    fn unsafe_or_empty_tokens_are_refused_with_a_reason() {
        let dir = tether_testkit::temp_dir();
        let open = write(dir.path(), "s3cret", 0o644);
        let err = read_token(Some(&open), None).unwrap_err();
        assert!(err.to_string().contains("readable by every user"), "{err}");
        let empty = write(dir.path(), " \n", 0o600);
        let err = read_token(Some(&empty), None).unwrap_err();
        assert!(matches!(err, TokenError::Malformed { .. }), "{err}");
        assert!(matches!(
            read_token(None, Some("a b")),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(read_token(None, None), Err(TokenError::Missing)));
        let missing = dir.path().join("nope");
        assert!(matches!(
            read_token(Some(&missing), None),
            Err(TokenError::Read { .. })
        ));
    }

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("abc", ""));
    }
}
