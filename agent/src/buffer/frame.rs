//! The buffer's bytes on disk: segment files of frames (length, CRC-32,
//! payload), the cursors a frame may carry, scanning a segment up to its
//! first torn frame, and the `head` file.

use super::*;

pub(super) fn put_cursors(out: &mut Vec<u8>, cursors: &[Cursor]) {
    for c in cursors {
        let key = c.key.as_bytes();
        let n = u16::try_from(key.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&key[..usize::from(n)]);
        out.extend_from_slice(&c.inode.to_le_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
    }
}

pub(super) fn take_cursors(mut b: &[u8]) -> Vec<Cursor> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if b.len() < 2 + n + 16 {
            break;
        }
        let key = String::from_utf8_lossy(&b[2..2 + n]).into_owned();
        let num = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        out.push(Cursor {
            key,
            inode: num(2 + n),
            offset: num(2 + n + 8),
        });
        b = &b[2 + n + 16..];
    }
    out
}

pub(super) fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// Read the frames of one segment image: the entries, and where the
/// valid part ends.
pub(super) fn scan(image: &[u8], cursors: &mut Vec<Cursor>) -> (Vec<Entry>, u64) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while image.len() - at >= FRAME_HEADER {
        let len =
            u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]) as usize;
        let crc = u32::from_le_bytes([image[at + 4], image[at + 5], image[at + 6], image[at + 7]]);
        let start = at + FRAME_HEADER;
        if !(PAYLOAD_HEADER..=MAX_FRAME).contains(&len) || image.len() - start < len {
            break;
        }
        let payload = &image[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let clen =
            u32::from_le_bytes([payload[29], payload[30], payload[31], payload[32]]) as usize;
        if len - PAYLOAD_HEADER < clen {
            break;
        }
        cursors.extend(take_cursors(
            &payload[PAYLOAD_HEADER..PAYLOAD_HEADER + clen],
        ));
        if payload[16] == CURSORS_ONLY {
            at = start + len;
            continue;
        }
        let Some(signal) = Signal::from_byte(payload[16]) else {
            break;
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&payload[..16]);
        let records = u32::from_le_bytes([payload[17], payload[18], payload[19], payload[20]]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&payload[21..29]);
        out.push(Entry {
            body_at: FRAME_HEADER + PAYLOAD_HEADER + clen,
            created_ms: i64::from_le_bytes(created),
            offset: at as u64,
            len: (FRAME_HEADER + len) as u64,
            id: u128::from_le_bytes(id),
            records,
            signal,
        });
        at = start + len;
    }
    (out, at as u64)
}

/// Most sources whose positions are kept (the least recently moved go).
pub(super) const MAX_CURSORS: usize = 1000;

/// Record `c` as its source's newest position: the list stays in the
/// order positions last moved, newest last.
pub(super) fn remember(cursors: &mut Vec<Cursor>, c: Cursor) {
    cursors.retain(|k| k.key != c.key);
    cursors.push(c);
    if cursors.len() > MAX_CURSORS {
        cursors.remove(0);
    }
}

/// A frame: length, CRC-32, then the payload; and where its body starts.
pub(super) fn encode_frame(
    id: u128,
    signal: u8,
    records: u32,
    created_ms: i64,
    cursors: &[Cursor],
    body: &[u8],
) -> (Vec<u8>, usize) {
    let mut c = Vec::new();
    put_cursors(&mut c, cursors);
    let mut payload = Vec::with_capacity(PAYLOAD_HEADER + c.len() + body.len());
    payload.extend_from_slice(&id.to_le_bytes());
    payload.push(signal);
    payload.extend_from_slice(&records.to_le_bytes());
    payload.extend_from_slice(&created_ms.to_le_bytes());
    payload.extend_from_slice(&(c.len() as u32).to_le_bytes());
    payload.extend_from_slice(&c);
    payload.extend_from_slice(body);
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    (frame, FRAME_HEADER + PAYLOAD_HEADER + c.len())
}

pub(super) fn read_head(dir: &Path) -> (u64, u64) {
    std::fs::read_to_string(dir.join("head"))
        .ok()
        .and_then(|s| {
            let (n, off) = s.trim().split_once(' ')?;
            Some((n.parse().ok()?, off.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

/// Overwrite the head file in place with one fixed-width write: a crash
/// of the agent cannot cut a single 42-byte `pwrite`, and one cut by a
/// power loss reads as no head, which only resends what is buffered (the
/// collector drops repeats by id). One syscall an acknowledgement, not
/// the four of write-and-rename.
pub(super) fn write_head(
    file: &File,
    path: &Path,
    (n, off): (u64, u64),
) -> Result<(), BufferError> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(format!("{n:020} {off:020}\n").as_bytes(), 0)
        .map_err(io(path))
}
