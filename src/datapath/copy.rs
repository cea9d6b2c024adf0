//! Copies between chains and local buffers, marking what is written.
//!
//! Between two chains, `ptr::copy` (memmove) rather than
//! `copy_nonoverlapping`: a guest may point a transmit and a receive buffer
//! at the same memory, and an overlapping copy must stay defined behaviour.
//! Between a chain and a buffer of ours no overlap is possible.

use super::chain::{SegList, Segment};
use crate::guest::DirtyLog;

/// A position inside a chain: segment index and offset in it.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    seg: usize,
    at: u32,
}

fn seek(list: &SegList, mut offset: u64) -> Cursor {
    for (i, s) in list.segs.iter().enumerate() {
        if offset < u64::from(s.len) {
            return Cursor {
                seg: i,
                at: offset as u32,
            };
        }
        offset -= u64::from(s.len);
    }
    Cursor {
        seg: list.segs.len(),
        at: 0,
    }
}

#[inline]
fn mark(log: Option<&DirtyLog>, seg: &Segment, at: u32, len: usize) {
    if let Some(log) = log {
        log.mark(seg.gpa + u64::from(at), len as u64);
    }
}

/// Copies from `src` at `offset` into `dst`; returns the bytes copied.
#[inline]
pub fn read_bytes(src: &SegList, offset: u64, dst: &mut [u8]) -> usize {
    // Headers nearly always sit whole in the first segment.
    if let Some(s) = src.segs.first() {
        if offset + dst.len() as u64 <= u64::from(s.len) {
            // SAFETY: the segment holds s.len bytes at s.host; `dst` is our
            // own buffer, so the two cannot overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    s.host.add(offset as usize),
                    dst.as_mut_ptr(),
                    dst.len(),
                )
            };
            return dst.len();
        }
    }
    read_pieces(src, offset, dst)
}

fn read_pieces(src: &SegList, offset: u64, dst: &mut [u8]) -> usize {
    let mut c = seek(src, offset);
    let mut done = 0;
    while done < dst.len() && c.seg < src.segs.len() {
        let s = &src.segs[c.seg];
        let n = (s.len - c.at).min((dst.len() - done) as u32) as usize;
        // SAFETY: the segment holds s.len bytes at s.host (checked by the
        // chain walk); n <= s.len - c.at and n <= dst.len() - done.
        unsafe { std::ptr::copy(s.host.add(c.at as usize), dst.as_mut_ptr().add(done), n) };
        done += n;
        c = Cursor {
            seg: c.seg + 1,
            at: 0,
        };
    }
    done
}

/// Copies `src` into `dst` at `offset`; returns the bytes copied.
#[inline]
pub fn write_bytes(dst: &SegList, offset: u64, src: &[u8], log: Option<&DirtyLog>) -> usize {
    if let Some(s) = dst.segs.first() {
        if offset + src.len() as u64 <= u64::from(s.len) {
            // SAFETY: as in read_bytes, with the roles swapped.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), s.host.add(offset as usize), src.len())
            };
            // offset < s.len, a u32
            mark(log, s, offset as u32, src.len());
            return src.len();
        }
    }
    write_pieces(dst, offset, src, log)
}

fn write_pieces(dst: &SegList, offset: u64, src: &[u8], log: Option<&DirtyLog>) -> usize {
    let mut c = seek(dst, offset);
    let mut done = 0;
    while done < src.len() && c.seg < dst.segs.len() {
        let s = &dst.segs[c.seg];
        let n = (s.len - c.at).min((src.len() - done) as u32) as usize;
        // SAFETY: as in read_bytes, with the roles swapped.
        unsafe { std::ptr::copy(src.as_ptr().add(done), s.host.add(c.at as usize), n) };
        mark(log, s, c.at, n);
        done += n;
        c = Cursor {
            seg: c.seg + 1,
            at: 0,
        };
    }
    done
}

/// Marks the first `len` bytes of a chain dirty: for bytes the kernel wrote
/// into guest memory on our behalf (a `readv` from the tap).
pub fn mark_prefix(list: &SegList, len: u64, log: Option<&DirtyLog>) {
    let Some(log) = log else {
        return;
    };
    let mut left = len;
    for s in &list.segs {
        if left == 0 {
            break;
        }
        let n = left.min(u64::from(s.len));
        log.mark(s.gpa, n);
        left -= n;
    }
}

/// Copies `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`;
/// returns the bytes copied (less than `len` if either chain ends first).
pub fn copy_chain(
    dst: &SegList,
    dst_offset: u64,
    src: &SegList,
    src_offset: u64,
    len: u64,
    log: Option<&DirtyLog>,
) -> u64 {
    let mut d = seek(dst, dst_offset);
    let mut s = seek(src, src_offset);
    let mut done = 0u64;
    while done < len && d.seg < dst.segs.len() && s.seg < src.segs.len() {
        let ds = &dst.segs[d.seg];
        let ss = &src.segs[s.seg];
        let n = (ds.len - d.at).min(ss.len - s.at).min((len - done) as u32) as usize;
        // SAFETY: n fits in both segments from their cursors; memmove allows
        // overlap.
        unsafe { std::ptr::copy(ss.host.add(s.at as usize), ds.host.add(d.at as usize), n) };
        mark(log, ds, d.at, n);
        done += n as u64;
        d.at += n as u32;
        s.at += n as u32;
        if d.at == ds.len {
            d = Cursor {
                seg: d.seg + 1,
                at: 0,
            };
        }
        if s.at == ss.len {
            s = Cursor {
                seg: s.seg + 1,
                at: 0,
            };
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(bufs: &mut [Vec<u8>]) -> SegList {
        let segs: Vec<Segment> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| Segment {
                host: b.as_mut_ptr(),
                len: b.len() as u32,
                gpa: 0x1000 * i as u64,
            })
            .collect();
        let total = segs.iter().map(|s| u64::from(s.len)).sum();
        SegList {
            segs,
            total,
            ..SegList::default()
        }
    }

    #[test]
    fn reads_and_writes_cross_segment_boundaries() {
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 2], vec![0u8; 4]];
        let l = list(&mut bufs);
        assert_eq!(write_bytes(&l, 2, &[1, 2, 3, 4, 5], None), 5);
        let mut out = [0u8; 9];
        assert_eq!(read_bytes(&l, 0, &mut out), 9);
        assert_eq!(out, [0, 0, 1, 2, 3, 4, 5, 0, 0]);
        assert_eq!(write_bytes(&l, 8, &[9, 9, 9], None), 1, "stops at the end");
        assert_eq!(read_bytes(&l, 20, &mut out), 0);
    }

    #[test]
    fn copies_within_the_first_segment_stay_there() {
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 2]];
        let l = list(&mut bufs);
        assert_eq!(write_bytes(&l, 0, &[7, 8, 9], None), 3);
        let mut two = [0u8; 2];
        assert_eq!(read_bytes(&l, 1, &mut two), 2);
        assert_eq!(two, [8, 9]);
        assert_eq!(bufs[1], vec![0, 0], "nothing spilled into the next segment");
    }

    #[test]
    fn chain_to_chain_copies_with_offsets() {
        let mut src_bufs = vec![vec![1u8, 2], vec![3, 4, 5], vec![6]];
        let mut dst_bufs = vec![vec![0u8; 4], vec![0u8; 4]];
        let src = list(&mut src_bufs);
        let dst = list(&mut dst_bufs);
        assert_eq!(copy_chain(&dst, 1, &src, 1, 5, None), 5);
        let mut out = [0u8; 8];
        read_bytes(&dst, 0, &mut out);
        assert_eq!(out, [0, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(
            copy_chain(&dst, 6, &src, 0, 6, None),
            2,
            "destination ends first"
        );
    }
}
