//! Unix sockets the port listens on (vhost-user and control): created with
//! restrictive permissions before anyone can connect, never replacing
//! anything but a stale socket, and removed on exit.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{0} is in use by a running process")]
    InUse(PathBuf),
    #[error("cannot create socket {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A socket file this process created, removed when dropped if it is still
/// the same file.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    inode: (u64, u64),
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.inode {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Clears the way for a new socket at `path`: nothing there, or a socket no
/// process listens on any more.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let create = |source| SocketError::Create {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(create(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(SocketError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(SocketError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                fs::remove_file(path).map_err(create)
            }
            Err(e) => Err(create(e)),
        },
    }
}

/// Listens on `path` with permissions `mode`. The mode is set between bind
/// and listen, so no connection is possible before it applies.
pub fn listen(path: &Path, mode: u32) -> Result<(UnixListener, BoundSocket), SocketError> {
    clear_stale(path)?;
    let create = |source| SocketError::Create {
        path: path.to_path_buf(),
        source,
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(create)?;
    socket
        .bind(&SockAddr::unix(path).map_err(create)?)
        .map_err(create)?;
    let bound = fs::symlink_metadata(path).map_err(create)?;
    let guard = BoundSocket {
        path: path.to_path_buf(),
        inode: (bound.dev(), bound.ino()),
    };
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(create)?;
    socket.listen(16).map_err(create)?;
    Ok((
        UnixListener::from(std::os::fd::OwnedFd::from(socket)),
        guard,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_private_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (listener, guard) = listen(&path, 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(listen(&path, 0o600), Err(SocketError::InUse(_))));
        drop(listener);
        drop(guard);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let (_listener, _guard) = listen(&path, 0o660).unwrap();
        let file = dir.path().join("data");
        fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            listen(&file, 0o600),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }
}
