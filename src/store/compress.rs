//! Case records are LZ4-compressed by both backends, behind the uncompressed size (`lz4_flex`'s
//! "size prepended" layout): about 40% of the bytes for sled to log, cache and keep, and a row
//! that stays inline in PostgreSQL without its own compression. Events are not: a commit's few
//! events are a couple of hundred bytes, which LZ4 shrinks by under a tenth. A case is written
//! at every step, so the compressor's work per
//! record matters: each thread keeps its hash table and output buffer, which `lz4_flex`'s
//! one-call form allocates and zeroes afresh every time (a third of the compression's
//! instructions for a case record of a few kilobytes). The bytes are the same as that form's.

use std::cell::RefCell;

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

/// The scratch of one thread: the compressor's hash table, and room for its output.
struct Scratch {
    table: CompressTable,
    out: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        table: CompressTable::small(),
        out: Vec::new(),
    });
}

/// `bytes` compressed, behind their length as a little-endian `u32`: what
/// `lz4_flex::block::decompress_size_prepended` reads.
pub(crate) fn compress(bytes: &[u8]) -> Vec<u8> {
    // The small table serves inputs under 64 KiB, as in the one-call form; a larger record
    // (rare) goes that way, so that the thread's table stays small.
    if bytes.len() >= usize::from(u16::MAX) {
        return lz4_flex::block::compress_prepend_size(bytes);
    }
    SCRATCH.with_borrow_mut(|Scratch { table, out }| {
        let room = get_maximum_output_size(bytes.len());
        if out.len() < room {
            out.resize(room, 0);
        }
        let n = compress_into_with_table(bytes, &mut out[..room], table)
            .expect("the output has room for the largest compression of its input");
        let mut record = Vec::with_capacity(4 + n);
        record.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        record.extend_from_slice(&out[..n]);
        record
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text with repeats, as JSON records have.
    fn record(len: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(len);
        let mut i = 0u32;
        while text.len() < len {
            text.extend_from_slice(format!("{{\"step\":\"s{}\",\"n\":{i}}},", i % 7).as_bytes());
            i += 1;
        }
        text.truncate(len);
        text
    }

    #[test]
    fn the_bytes_are_the_one_call_forms_and_read_back() {
        for len in [0, 1, 15, 200, 3_400, 40_000, 65_534, 65_535, 200_000] {
            let input = record(len);
            let ours = compress(&input);
            assert_eq!(
                ours,
                lz4_flex::block::compress_prepend_size(&input),
                "{len}"
            );
            assert_eq!(
                lz4_flex::block::decompress_size_prepended(&ours).unwrap(),
                input
            );
        }
        // Again after a large record, with the scratch reused.
        let input = record(3_400);
        assert_eq!(
            compress(&input),
            lz4_flex::block::compress_prepend_size(&input)
        );
    }
}
