//! Huffman-coded block data: the bit reader over the entropy-coded segment (byte stuffing,
//! markers, zero fill past the end as libjpeg does) and the decoding of one 8x8 block.

use super::JpegError;

/// Natural (row-major) index of the k-th coefficient in zig-zag order.
pub(super) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Bits looked up in one step; longer codes take the slow path.
const LOOKUP_BITS: u32 = 9;

/// A Huffman table from a DHT segment.
pub(super) struct HuffmanTable {
    /// `(length << 8) | symbol` for every code of up to `LOOKUP_BITS` bits, indexed by the
    /// next `LOOKUP_BITS` bits; 0 where a longer code starts.
    lookup: Vec<u16>,
    /// Largest code of each length (-1: none), for the slow path.
    max_code: [i32; 17],
    /// `symbols` index minus the first code of each length.
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl HuffmanTable {
    /// Builds the canonical code from the 16 code-length counts and the symbols.
    pub fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Self, JpegError> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return Err(JpegError::corrupt("bad Huffman table (symbol count)"));
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let mut max_code = [-1i32; 17];
        let mut offset = [0i32; 17];
        let (mut code, mut index) = (0i32, 0usize);
        for length in 1..=16u32 {
            let count = usize::from(counts[length as usize - 1]);
            offset[length as usize] = index as i32 - code;
            for _ in 0..count {
                if code >= (1 << length) {
                    return Err(JpegError::corrupt("bad Huffman table (code overflow)"));
                }
                if length <= LOOKUP_BITS {
                    let spread = LOOKUP_BITS - length;
                    let first = (code as usize) << spread;
                    let entry = ((length as u16) << 8) | u16::from(symbols[index]);
                    lookup[first..first + (1 << spread)].fill(entry);
                }
                code += 1;
                index += 1;
            }
            if count > 0 {
                max_code[length as usize] = code - 1;
            }
            code <<= 1;
        }
        Ok(Self {
            lookup,
            max_code,
            offset,
            symbols: symbols.to_vec(),
        })
    }
}

/// Reads bits from an entropy-coded segment starting at `pos`.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Buffered bits, most significant first.
    bits: u64,
    count: u32,
    /// Zero bits appended after a marker or the end of the data (libjpeg's fill).
    filler: u32,
    /// True once decoding used a filler bit: the data ended early.
    overrun: bool,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            bits: 0,
            count: 0,
            filler: 0,
            overrun: false,
        }
    }

    /// Position of the first byte not consumed (at a marker once the segment ends).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when decoding needed bits past the end of the segment.
    pub fn overran(&self) -> bool {
        self.overrun
    }

    /// Tops the buffer up to at least 57 bits.
    fn fill(&mut self) {
        while self.count <= 56 {
            let byte = if self.filler > 0 || self.pos >= self.data.len() {
                self.filler += 8;
                0
            } else if self.data[self.pos] != 0xFF {
                self.pos += 1;
                self.data[self.pos - 1]
            } else {
                // 0xFF 0x00 is a stuffed 0xFF; runs of 0xFF are fill bytes before a marker.
                let mut next = self.pos + 1;
                while next < self.data.len() && self.data[next] == 0xFF {
                    next += 1;
                }
                if next < self.data.len() && self.data[next] == 0x00 {
                    self.pos = next + 1;
                    0xFF
                } else {
                    self.filler += 8;
                    0
                }
            };
            self.bits |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.fill();
        }
        (self.bits >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.bits <<= n;
        self.count -= n;
        if self.count < self.filler {
            self.overrun = true;
        }
    }

    /// `n` raw bits as an unsigned value.
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// `n` bits as a signed coefficient (`HUFF_EXTEND`).
    fn receive_extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.bits(n) as i32;
        if v < (1 << (n - 1)) {
            v - (1 << n) + 1
        } else {
            v
        }
    }

    /// One Huffman-coded symbol.
    fn symbol(&mut self, table: &HuffmanTable) -> Result<u8, JpegError> {
        let peek = self.peek(16);
        let entry = table.lookup[(peek >> (16 - LOOKUP_BITS)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        for length in LOOKUP_BITS + 1..=16 {
            let code = (peek >> (16 - length)) as i32;
            if code <= table.max_code[length as usize] {
                self.consume(length);
                let index = (code + table.offset[length as usize]) as usize;
                return table
                    .symbols
                    .get(index)
                    .copied()
                    .ok_or_else(|| JpegError::corrupt("bad Huffman code"));
            }
        }
        Err(JpegError::corrupt("bad Huffman code"))
    }

    /// Skips to the restart marker that must follow `interval` MCUs and resets the buffer.
    pub fn restart(&mut self) -> Result<(), JpegError> {
        let (bits_left, filler) = (self.count, self.filler);
        self.bits = 0;
        self.count = 0;
        self.filler = 0;
        // Only padding to a byte boundary may be left of the interval's data.
        if bits_left - filler.min(bits_left) >= 8 {
            return Err(JpegError::corrupt("restart interval longer than declared"));
        }
        while self.pos < self.data.len() && self.data[self.pos] == 0xFF {
            self.pos += 1;
        }
        match self.data.get(self.pos) {
            Some(0xD0..=0xD7) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(JpegError::corrupt("restart marker missing")),
        }
    }

    /// Decodes one block's coefficients (natural order) with DC prediction `prediction`.
    pub fn block(
        &mut self,
        dc: &HuffmanTable,
        ac: &HuffmanTable,
        prediction: &mut i32,
        coefficients: &mut [i16; 64],
    ) -> Result<(), JpegError> {
        coefficients.fill(0);
        let size = u32::from(self.symbol(dc)?);
        if size > 16 {
            return Err(JpegError::corrupt("bad DC coefficient size"));
        }
        *prediction += self.receive_extend(size);
        // libjpeg stores coefficients as 16-bit values.
        coefficients[0] = *prediction as i16;
        let mut k = 1;
        while k < 64 {
            let rs = self.symbol(ac)?;
            let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
            if size == 0 {
                if run != 15 {
                    break;
                }
                k += 16;
                continue;
            }
            k += run;
            if k > 63 {
                return Err(JpegError::corrupt("AC coefficients run past the block"));
            }
            coefficients[ZIGZAG[k]] = self.receive_extend(size) as i16;
            k += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with codes 0 (1 bit, symbol 5), 10 (2 bits, symbol 3) and 110 (3 bits, 0).
    fn small_table() -> HuffmanTable {
        let mut counts = [0u8; 16];
        counts[..3].copy_from_slice(&[1, 1, 1]);
        HuffmanTable::new(&counts, &[5, 3, 0]).unwrap()
    }

    #[test]
    fn symbols_and_extended_values_are_read_msb_first() {
        let table = small_table();
        // 10 | 101 (3-bit value 5 -> +5) | 0 | 11000 (5-bit 24 -> +24) | 110 | pad 11.
        let data = [0b1010_1011, 0b0001_1011];
        let mut reader = BitReader::new(&data, 0);
        assert_eq!(reader.symbol(&table).unwrap(), 3);
        assert_eq!(reader.receive_extend(3), 5);
        assert_eq!(reader.symbol(&table).unwrap(), 5);
        assert_eq!(reader.receive_extend(5), 24);
        assert_eq!(reader.symbol(&table).unwrap(), 0);
        assert!(!reader.overran());
    }

    #[test]
    fn small_values_extend_to_negatives() {
        // 0b001 in 3 bits -> 1 - 8 + 1 = -6.
        let mut reader = BitReader::new(&[0b0010_0000], 0);
        assert_eq!(reader.receive_extend(3), -6);
    }

    #[test]
    fn stuffed_bytes_are_data_and_markers_end_the_segment() {
        let data = [0xFF, 0x00, 0xF0, 0xFF, 0xD9];
        let mut reader = BitReader::new(&data, 0);
        assert_eq!(reader.bits(8), 0xFF);
        assert_eq!(reader.bits(8), 0xF0);
        assert!(!reader.overran());
        assert_eq!(reader.position(), 3, "stops at the marker");
        assert_eq!(reader.bits(4), 0);
        assert!(reader.overran(), "bits past the marker are filler");
    }

    #[test]
    fn oversubscribed_tables_are_refused() {
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert!(HuffmanTable::new(&counts, &[1, 2, 3]).is_err());
    }
}
