//! A stream sealed under a key derived from the KEK, for backups: the STREAM construction
//! (`aead-stream`, big-endian 32-bit counter) over XChaCha20-Poly1305, in chunks of 64 KiB, so
//! a backup of any size is written and read in constant memory.
//!
//! Layout: `"GHBACKUP"`, version `1`, a random 19-byte nonce prefix; then chunks, each
//! `len u32 | ciphertext`. Every chunk is bound to the header as associated data; the last is
//! sealed as last, so a truncated, reordered or altered stream fails to open.

use std::io::{self, Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::XChaCha20Poly1305;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"GHBACKUP";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 19;
const HEADER_LEN: usize = MAGIC.len() + 1 + PREFIX_LEN;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

fn nonce_prefix(header: &[u8; HEADER_LEN]) -> [u8; PREFIX_LEN] {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&header[MAGIC.len() + 1..]);
    prefix
}

/// Why a sealed stream does not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("this is not a Gatehouse backup (or of a version this binary does not read)")]
    NotABackup,
    #[error("the backup does not open with this KEK, or it was altered or cut short")]
    Unsealed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Seals what is written to it; [`SealingWriter::finish`] seals the last chunk.
pub struct SealingWriter<W: Write> {
    out: W,
    header: [u8; HEADER_LEN],
    encryptor: EncryptorBE32<XChaCha20Poly1305>,
    pending: Vec<u8>,
    bytes: u64,
}

impl<W: Write> SealingWriter<W> {
    pub fn new(mut out: W, key: &Zeroizing<[u8; 32]>) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        crate::clock::random_bytes(&mut header[MAGIC.len() + 1..]);
        out.write_all(&header)?;
        let aead = XChaCha20Poly1305::new(&(**key).into());
        let encryptor = EncryptorBE32::from_aead(aead, &nonce_prefix(&header).into());
        Ok(SealingWriter { out, header, encryptor, pending: Vec::with_capacity(CHUNK), bytes: HEADER_LEN as u64 })
    }

    fn put_chunk(&mut self, sealed: &[u8]) -> io::Result<()> {
        let len = u32::try_from(sealed.len()).map_err(io::Error::other)?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(sealed)?;
        self.bytes += 4 + sealed.len() as u64;
        Ok(())
    }

    /// Seals the last chunk and flushes; answers the bytes written and the writer.
    pub fn finish(self) -> io::Result<(u64, W)> {
        let SealingWriter { mut out, header, encryptor, pending, mut bytes } = self;
        let payload = aead_stream::aead::Payload { msg: &pending, aad: &header };
        let sealed = encryptor.encrypt_last(payload).map_err(|_| io::Error::other("sealing failed"))?;
        let len = u32::try_from(sealed.len()).map_err(io::Error::other)?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&sealed)?;
        bytes += 4 + sealed.len() as u64;
        out.flush()?;
        Ok((bytes, out))
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.pending.len();
        let take = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == CHUNK {
            let payload = aead_stream::aead::Payload { msg: &self.pending, aad: &self.header };
            let sealed = self.encryptor.encrypt_next(payload).map_err(|_| io::Error::other("sealing failed"))?;
            self.put_chunk(&sealed)?;
            self.pending.clear();
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens a sealed stream chunk by chunk; reading past the last chunk is the end.
pub struct OpeningReader<R: Read> {
    input: R,
    header: [u8; HEADER_LEN],
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    chunk: Vec<u8>,
    at: usize,
    /// The chunk read ahead, to know whether the current one is the last.
    next: Option<Vec<u8>>,
}

impl<R: Read> OpeningReader<R> {
    pub fn new(mut input: R, key: &Zeroizing<[u8; 32]>) -> Result<Self, StreamError> {
        let mut header = [0u8; HEADER_LEN];
        input.read_exact(&mut header).map_err(|_| StreamError::NotABackup)?;
        if &header[..MAGIC.len()] != MAGIC || header[MAGIC.len()] != VERSION {
            return Err(StreamError::NotABackup);
        }
        let aead = XChaCha20Poly1305::new(&(**key).into());
        let decryptor = DecryptorBE32::from_aead(aead, &nonce_prefix(&header).into());
        let mut reader =
            OpeningReader { input, header, decryptor: Some(decryptor), chunk: Vec::new(), at: 0, next: None };
        reader.next = reader.read_sealed()?;
        // The first chunk is opened at once, so a wrong key is told before anything is read.
        if !reader.open_next()? {
            return Err(StreamError::Unsealed);
        }
        Ok(reader)
    }

    /// The next sealed chunk as stored, or `None` at the end of the input.
    fn read_sealed(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            match self.input.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                // A length cut short: damage, not the end.
                Ok(0) => return Err(StreamError::Unsealed),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > CHUNK + TAG {
            return Err(StreamError::Unsealed);
        }
        let mut sealed = vec![0u8; len];
        self.input.read_exact(&mut sealed).map_err(|_| StreamError::Unsealed)?;
        Ok(Some(sealed))
    }

    /// Opens the next chunk into `self.chunk`; false at the end.
    fn open_next(&mut self) -> Result<bool, StreamError> {
        let Some(sealed) = self.next.take() else { return Ok(false) };
        let following = self.read_sealed()?;
        let payload = aead_stream::aead::Payload { msg: &sealed, aad: &self.header };
        let decryptor = self.decryptor.as_mut().ok_or(StreamError::Unsealed)?;
        self.chunk = if following.is_some() {
            decryptor.decrypt_next(payload).map_err(|_| StreamError::Unsealed)?
        } else {
            let last = self.decryptor.take().ok_or(StreamError::Unsealed)?;
            last.decrypt_last(payload).map_err(|_| StreamError::Unsealed)?
        };
        self.at = 0;
        self.next = following;
        Ok(true)
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.open_next() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8], key: &Zeroizing<[u8; 32]>) -> Vec<u8> {
        let mut w = SealingWriter::new(Vec::new(), key).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap().1
    }

    fn opened(bytes: &[u8], key: &Zeroizing<[u8; 32]>) -> Result<Vec<u8>, String> {
        let mut r = OpeningReader::new(bytes, key).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn a_sealed_stream_opens_only_whole_and_with_its_key() {
        let key = Zeroizing::new([7u8; 32]);
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let bytes = sealed(&data, &key);
            assert_eq!(opened(&bytes, &key).unwrap(), data, "{size} bytes round trip");
        }
        let data = vec![5u8; 2 * CHUNK + 100];
        let bytes = sealed(&data, &key);
        assert!(opened(&bytes, &Zeroizing::new([8u8; 32])).is_err(), "another key");
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 100] ^= 1;
        assert!(opened(&flipped, &key).is_err(), "an altered byte");
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(opened(&longer, &key).is_err(), "bytes after the last chunk");
        let cut = &bytes[..HEADER_LEN + 4 + CHUNK + TAG];
        assert!(opened(cut, &key).is_err(), "cut after a whole chunk: the last one is missing");
        let mut header = bytes.clone();
        header[HEADER_LEN - 1] ^= 1;
        assert!(opened(&header, &key).is_err(), "another nonce prefix");
        assert!(matches!(
            OpeningReader::new(&b"GHSNAP2\0xxxxxxxxxxxxxxxxxxxx"[..], &key),
            Err(StreamError::NotABackup)
        ));
    }
}
