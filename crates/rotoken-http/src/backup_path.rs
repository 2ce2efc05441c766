//! Where `POST /admin/backup` may write: a new file directly inside the
//! configured backup directory, and nowhere else, so the admin token is not
//! a way to write files wherever the server's user may.

use std::path::{Component, Path, PathBuf};

/// Why a requested backup path is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum BackupPathError {
    /// Not an absolute path.
    #[error("path must be absolute: a path on the server's machine")]
    NotAbsolute,
    /// The path names a directory, or climbs with `..`.
    #[error("path must name a file, without `..`")]
    NotAFile,
    /// The file would not be directly inside the backup directory.
    #[error("path must be a file directly inside the server's backup directory, {0}")]
    OutsideBackupDir(String),
    /// The backup directory cannot be resolved.
    #[error("the server's backup directory {0} cannot be read")]
    BackupDirMissing(String),
}

/// `requested`, if it is a file directly inside `dir` (both resolved
/// through symbolic links); the path to write.
pub(crate) fn backup_path(dir: &Path, requested: &Path) -> Result<PathBuf, BackupPathError> {
    if !requested.is_absolute() {
        return Err(BackupPathError::NotAbsolute);
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err(BackupPathError::NotAFile);
    }
    let (Some(parent), Some(name)) = (requested.parent(), requested.file_name()) else {
        return Err(BackupPathError::NotAFile);
    };
    let dir_shown = dir.display().to_string();
    let dir = dir
        .canonicalize()
        .map_err(|_| BackupPathError::BackupDirMissing(dir_shown.clone()))?;
    match parent.canonicalize() {
        Ok(parent) if parent == dir => Ok(dir.join(name)),
        _ => Err(BackupPathError::OutsideBackupDir(dir_shown)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_a_file_directly_inside_the_backup_dir_is_accepted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("backups");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let ok = backup_path(&dir, &dir.join("a.redb")).unwrap();
        assert_eq!(ok, dir.canonicalize().unwrap().join("a.redb"));
        assert_eq!(
            backup_path(&dir, Path::new("a.redb")),
            Err(BackupPathError::NotAbsolute)
        );
        assert_eq!(
            backup_path(&dir, &dir.join("..").join("backups").join("a.redb")),
            Err(BackupPathError::NotAFile)
        );
        assert!(matches!(
            backup_path(&dir, &root.path().join("a.redb")),
            Err(BackupPathError::OutsideBackupDir(_))
        ));
        assert!(matches!(
            backup_path(&dir, &dir.join("sub").join("a.redb")),
            Err(BackupPathError::OutsideBackupDir(_))
        ));
        assert!(matches!(
            backup_path(&root.path().join("none"), &root.path().join("none").join("a.redb")),
            Err(BackupPathError::BackupDirMissing(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_out_of_the_backup_dir_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("backups");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
        assert!(matches!(
            backup_path(&dir, &dir.join("link").join("a.redb")),
            Err(BackupPathError::OutsideBackupDir(_))
        ));
    }
}
