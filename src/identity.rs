//! Node identity: an Ed25519 key pair and the `PeerId` derived from it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::IdentityError;

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A node's id: the SHA-256 of its Ed25519 public key.
///
/// It is also the node's Kademlia key, so an id cannot be chosen without its key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// The id of the holder of `public_key`.
    pub fn from_public_key(public_key: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        PeerId(id)
    }

    /// Wraps 32 raw bytes, e.g. a Kademlia key read from the wire.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PeerId(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The short form used in logs: the first 8 hex characters.
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }

    /// Parses the 64-character lowercase or uppercase hex form.
    pub fn from_hex(s: &str) -> Result<Self, IdentityError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(IdentityError::BadPeerIdHex);
        }
        let mut id = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(IdentityError::BadPeerIdHex)?;
            let lo = hex_digit(pair[1]).ok_or(IdentityError::BadPeerIdHex)?;
            id[i] = (hi << 4) | lo;
        }
        Ok(PeerId(id))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl std::str::FromStr for PeerId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerId::from_hex(s)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A node's long-term Ed25519 key pair.
pub struct Keypair {
    inner: Ed25519KeyPair,
    id: PeerId,
}

impl Keypair {
    /// Generates a fresh key pair from the system's secure random source.
    pub fn generate() -> Result<Self, IdentityError> {
        Self::from_pkcs8(&generate_pkcs8()?)
    }

    /// A key pair derived from a 32-byte seed. For simulations and tests that need
    /// the same ids on every run; a real node's key comes from [`Keypair::generate`].
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let inner = Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!("any 32 bytes are an Ed25519 seed"));
        let id = PeerId::from_public_key(inner.public_key().as_ref());
        Keypair { inner, id }
    }

    /// Loads a key pair from a PKCS#8 document (as written by [`Keypair::load_or_create`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, IdentityError> {
        let inner = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| IdentityError::BadKey(e.to_string()))?;
        let id = PeerId::from_public_key(inner.public_key().as_ref());
        Ok(Keypair { inner, id })
    }

    /// Loads the key at `path`, or creates it (mode 0600) when the file does not exist.
    ///
    /// A file that is corrupt, or readable or writable by group or others, is refused.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        match fs::metadata(path) {
            Ok(meta) => {
                check_permissions(path, &meta)?;
                let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
                Self::from_pkcs8(&bytes).map_err(|e| match e {
                    IdentityError::BadKey(reason) => IdentityError::CorruptKeyFile {
                        path: path.to_path_buf(),
                        reason,
                    },
                    other => other,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pkcs8 = generate_pkcs8()?;
                write_new_key_file(path, &pkcs8)?;
                log::info!("created node key file {}", path.display());
                Self::from_pkcs8(&pkcs8)
            }
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.inner.public_key().as_ref()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.inner.sign(msg).as_ref());
        out
    }
}

impl fmt::Debug for Keypair {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.id.short())
    }
}

/// Checks an Ed25519 signature by `public_key` over `msg`.
pub fn verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

fn generate_pkcs8() -> Result<Vec<u8>, IdentityError> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| IdentityError::Rng)
}

fn io_error(path: &Path, source: io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _meta: &fs::Metadata) -> Result<(), IdentityError> {
    Ok(())
}

fn write_new_key_file(path: &Path, pkcs8: &[u8]) -> Result<(), IdentityError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_error(path, e))?;
    file.write_all(pkcs8)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshwire-id-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("key.pk8")
    }

    #[test]
    fn peer_id_is_sha256_of_public_key_and_round_trips_hex() {
        let kp = Keypair::generate().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, kp.public_key());
        assert_eq!(kp.peer_id().as_bytes(), digest.as_ref());
        let hex = kp.peer_id().to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(kp.peer_id().short(), hex[..8]);
        assert_eq!(PeerId::from_hex(&hex).unwrap(), kp.peer_id());
        assert!(PeerId::from_hex(&hex[..63]).is_err());
        assert!(PeerId::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::generate().unwrap();
        let sig = kp.sign(b"hello");
        assert!(verify(kp.public_key(), b"hello", &sig));
        assert!(!verify(kp.public_key(), b"hellO", &sig));
    }

    #[test]
    fn key_file_is_created_once_and_reloaded() {
        let path = temp_path("create");
        let a = Keypair::load_or_create(&path).unwrap();
        let b = Keypair::load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn corrupt_key_file_is_refused() {
        let path = temp_path("corrupt");
        Keypair::load_or_create(&path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&path, &bytes).unwrap();
        let err = Keypair::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::CorruptKeyFile { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        for mode in [0o640, 0o604, 0o660] {
            let path = temp_path(&format!("perm{mode:o}"));
            Keypair::load_or_create(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Keypair::load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, IdentityError::InsecurePermissions { mode: m, .. } if m == mode),
                "{err}"
            );
        }
    }
}
