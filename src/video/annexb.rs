//! H.264 byte-stream helpers: Annex-B start codes, AVCC length prefixes, access units.

/// The 4-byte Annex-B start code.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit type (low 5 bits of the header byte).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// True for slice NAL units (coded picture data).
pub fn is_vcl(nal: &[u8]) -> bool {
    matches!(nal_type(nal), 1..=5)
}

/// Splits an Annex-B byte stream into NAL units (without start codes).
pub fn split_annexb(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
        // Trailing zero bytes belong to the next start code (4-byte form) or are padding.
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(&stream[start..end]);
        }
    }
    nals
}

/// Converts one AVCC sample (NAL units with big-endian length prefixes of `length_size`
/// bytes) to Annex-B, appending to `out`. Fails if a length runs past the sample.
pub fn avcc_to_annexb(sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let mut i = 0;
    while i < sample.len() {
        if i + length_size > sample.len() {
            return Err(format!("NAL length prefix cut off at byte {i}"));
        }
        let len = sample[i..i + length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        i += length_size;
        if len == 0 || i + len > sample.len() {
            return Err(format!(
                "NAL unit of {len} bytes at byte {i} runs past the sample"
            ));
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&sample[i..i + len]);
        i += len;
    }
    Ok(())
}

/// Converts NAL units to one AVCC sample with 4-byte length prefixes.
pub fn nals_to_avcc<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Groups a sequence of NAL units into access units (one coded picture each), following
/// H.264 7.4.1.2.3: a picture starts at an AUD/SPS/PPS/SEI after a slice, or at a slice whose
/// `first_mb_in_slice` is 0.
#[derive(Default)]
pub struct AccessUnitBuilder {
    current: Vec<u8>,
    has_slice: bool,
}

impl AccessUnitBuilder {
    /// Adds a NAL unit; returns the previous access unit (Annex-B) when this one starts a new one.
    pub fn push(&mut self, nal: &[u8]) -> Option<Vec<u8>> {
        let starts_new = if is_vcl(nal) {
            // first_mb_in_slice is ue(v); it is 0 exactly when the first bit is 1.
            self.has_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            self.has_slice && matches!(nal_type(nal), 6..=9)
        };
        let finished = if starts_new { self.take() } else { None };
        self.current.extend_from_slice(&START_CODE);
        self.current.extend_from_slice(nal);
        self.has_slice |= is_vcl(nal);
        finished
    }

    /// The access unit in progress, if it holds a slice.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        let had_slice = std::mem::take(&mut self.has_slice);
        let unit = std::mem::take(&mut self.current);
        (had_slice && !unit.is_empty()).then_some(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_round_trip_through_avcc() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0x88, 4,
        ];
        let nals = split_annexb(&stream);
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 0x88, 4]]);
        let avcc = nals_to_avcc(nals.iter().copied());
        let mut back = Vec::new();
        avcc_to_annexb(&avcc, 4, &mut back).unwrap();
        assert_eq!(split_annexb(&back), nals);
    }

    #[test]
    fn bad_avcc_lengths_are_errors() {
        let mut out = Vec::new();
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1, 2], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[0, 0], 4, &mut out).is_err());
    }

    #[test]
    fn access_units_split_on_first_slice() {
        let mut builder = AccessUnitBuilder::default();
        assert!(builder.push(&[0x67, 1]).is_none()); // SPS
        assert!(builder.push(&[0x68, 1]).is_none()); // PPS
        assert!(builder.push(&[0x65, 0x88]).is_none()); // IDR slice, first_mb = 0
        assert!(builder.push(&[0x65, 0x40]).is_none()); // second slice of the same picture
        let first = builder.push(&[0x41, 0x9a]).expect("new picture"); // P slice, first_mb = 0
        assert_eq!(split_annexb(&first).len(), 4);
        assert_eq!(
            split_annexb(&builder.take().unwrap()),
            vec![&[0x41, 0x9a][..]]
        );
    }
}
