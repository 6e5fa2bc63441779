//! The JPEG marker structure: frame header, tables, restart interval, colour-model markers
//! and the sequential scans, decoded into one sample plane per component.

use rayon::prelude::*;

use super::JpegError;
use super::entropy::{BitReader, HuffmanTable, ZIGZAG};
use super::idct::inverse_dct;
use super::standard_tables::{AC_CHROMINANCE, AC_LUMINANCE, DC_CHROMINANCE, DC_LUMINANCE};

/// How the components encode colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColourModel {
    Grey,
    YCbCr,
    Rgb,
}

/// One component's samples at its own resolution, padded to whole MCUs.
pub(super) struct ComponentPlane {
    pub id: u8,
    pub h: usize,
    pub v: usize,
    quant_table: usize,
    pub samples: Vec<u8>,
    pub stride: usize,
    /// True once a scan has covered this component.
    decoded: bool,
}

/// A decoded frame: geometry, colour model and the component planes.
pub(super) struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    pub h_max: usize,
    pub v_max: usize,
    pub colour: ColourModel,
    pub components: Vec<ComponentPlane>,
    /// The TIFF payload of an `Exif` APP1 segment, if any.
    pub exif: Option<Vec<u8>>,
}

impl DecodedFrame {
    /// Real samples per row and rows of component `c`.
    pub fn component_size(&self, c: &ComponentPlane) -> (usize, usize) {
        (
            (self.width * c.h).div_ceil(self.h_max),
            (self.height * c.v).div_ceil(self.v_max),
        )
    }
}

/// Tables and settings that segments before a scan define.
struct Tables {
    quant: [Option<[i16; 64]>; 4],
    dc: [Option<HuffmanTable>; 4],
    ac: [Option<HuffmanTable>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe_transform: Option<u8>,
    exif: Option<Vec<u8>>,
}

impl Tables {
    /// No quantisation tables yet; Huffman slots 0 and 1 hold the standard's tables until a
    /// DHT segment replaces them.
    fn new() -> Result<Self, JpegError> {
        Ok(Self {
            quant: [None; 4],
            dc: [
                Some(HuffmanTable::new(&DC_LUMINANCE.0, &DC_LUMINANCE.1)?),
                Some(HuffmanTable::new(&DC_CHROMINANCE.0, &DC_CHROMINANCE.1)?),
                None,
                None,
            ],
            ac: [
                Some(HuffmanTable::new(&AC_LUMINANCE.0, &AC_LUMINANCE.1)?),
                Some(HuffmanTable::new(&AC_CHROMINANCE.0, &AC_CHROMINANCE.1)?),
                None,
                None,
            ],
            restart_interval: 0,
            jfif: false,
            adobe_transform: None,
            exif: None,
        })
    }
}

/// Walks the segments of `data`.
struct Segments<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Segments<'a> {
    /// The next marker code, skipping anything before it; `None` at the end of the data.
    fn next_marker(&mut self) -> Option<u8> {
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && !matches!(self.data[self.pos + 1], 0x00 | 0xFF) {
                self.pos += 2;
                return Some(self.data[self.pos - 1]);
            }
            self.pos += 1;
        }
        None
    }

    /// The payload of the segment whose length field starts at the current position.
    fn payload(&mut self) -> Result<&'a [u8], JpegError> {
        let length = self
            .data
            .get(self.pos..self.pos + 2)
            .map(|b| be16(b, 0))
            .ok_or_else(|| JpegError::corrupt("file ends inside a segment header"))?;
        if length < 2 || self.pos + length > self.data.len() {
            return Err(JpegError::corrupt("segment runs past the end of the file"));
        }
        let payload = &self.data[self.pos + 2..self.pos + length];
        self.pos += length;
        Ok(payload)
    }
}

/// Parses and decodes `data`.
pub(super) fn decode_frame(data: &[u8], max_pixels: u64) -> Result<DecodedFrame, JpegError> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegError::corrupt("no JPEG start-of-image marker"));
    }
    let mut segments = Segments { data, pos: 2 };
    let mut tables = Tables::new()?;
    let mut frame: Option<DecodedFrame> = None;
    while let Some(marker) = segments.next_marker() {
        match marker {
            0xD9 => break,
            0xD0..=0xD8 | 0x01 => {}
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err(JpegError::corrupt("two frame headers"));
                }
                frame = Some(frame_header(segments.payload()?, max_pixels)?);
            }
            0xC2 => return Err(JpegError::Unsupported("progressive JPEG".into())),
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(JpegError::Unsupported(format!(
                    "JPEG process SOF{}",
                    marker - 0xC0
                )));
            }
            0xC4 => huffman_tables(segments.payload()?, &mut tables)?,
            0xDB => quant_tables(segments.payload()?, &mut tables)?,
            0xDD => {
                let p = segments.payload()?;
                if p.len() < 2 {
                    return Err(JpegError::corrupt("short restart-interval segment"));
                }
                tables.restart_interval = be16(p, 0);
            }
            0xDC => {
                return Err(JpegError::Unsupported(
                    "height given by a DNL marker".into(),
                ));
            }
            0xDA => {
                let header = segments.payload()?;
                let frame = frame
                    .as_mut()
                    .ok_or_else(|| JpegError::corrupt("scan before the frame header"))?;
                segments.pos = scan(data, segments.pos, header, frame, &tables)?;
            }
            0xE0 => tables.jfif |= segments.payload()?.starts_with(b"JFIF\0"),
            0xE1 => {
                let p = segments.payload()?;
                if let Some(tiff) = p.strip_prefix(b"Exif\0\0") {
                    tables.exif = Some(tiff.to_vec());
                }
            }
            0xEE => {
                let p = segments.payload()?;
                if p.starts_with(b"Adobe") && p.len() >= 12 {
                    tables.adobe_transform = Some(p[11]);
                }
            }
            _ => {
                segments.payload()?;
            }
        }
    }
    let mut frame = frame.ok_or_else(|| JpegError::corrupt("no frame header"))?;
    if let Some(missing) = frame.components.iter().find(|c| !c.decoded) {
        return Err(JpegError::corrupt(format!(
            "no scan holds component {} (file truncated?)",
            missing.id
        )));
    }
    frame.colour = colour_model(&frame, &tables);
    frame.exif = tables.exif;
    Ok(frame)
}

/// The big-endian 16-bit value at `bytes[at..at + 2]`.
fn be16(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]))
}

/// libjpeg's choice of colour model for the component count and markers.
fn colour_model(frame: &DecodedFrame, tables: &Tables) -> ColourModel {
    if frame.components.len() == 1 {
        return ColourModel::Grey;
    }
    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
    match (tables.jfif, tables.adobe_transform) {
        (true, _) => ColourModel::YCbCr,
        (false, Some(0)) => ColourModel::Rgb,
        (false, Some(_)) => ColourModel::YCbCr,
        (false, None) if ids == b"RGB" => ColourModel::Rgb,
        _ => ColourModel::YCbCr,
    }
}

/// SOF0/SOF1: geometry and components.
fn frame_header(p: &[u8], max_pixels: u64) -> Result<DecodedFrame, JpegError> {
    if p.len() < 6 {
        return Err(JpegError::corrupt("short frame header"));
    }
    if p[0] != 8 {
        return Err(JpegError::Unsupported(format!("{}-bit samples", p[0])));
    }
    let (height, width) = (be16(p, 1), be16(p, 3));
    let count = usize::from(p[5]);
    if height == 0 {
        return Err(JpegError::Unsupported(
            "height given by a DNL marker".into(),
        ));
    }
    if width == 0 {
        return Err(JpegError::corrupt("image width 0"));
    }
    if (width * height) as u64 > max_pixels {
        return Err(JpegError::TooLarge {
            width: width as u64,
            height: height as u64,
            limit: max_pixels,
        });
    }
    match count {
        1 | 3 => {}
        4 => return Err(JpegError::Unsupported("CMYK JPEG".into())),
        _ => return Err(JpegError::corrupt(format!("{count} colour components"))),
    }
    if p.len() < 6 + 3 * count {
        return Err(JpegError::corrupt("short frame header"));
    }
    let specs: Vec<(u8, usize, usize, usize)> = p[6..6 + 3 * count]
        .chunks_exact(3)
        .map(|c| {
            (
                c[0],
                usize::from(c[1] >> 4),
                usize::from(c[1] & 15),
                usize::from(c[2]),
            )
        })
        .collect();
    if specs
        .iter()
        .any(|&(_, h, v, q)| !(1..=4).contains(&h) || !(1..=4).contains(&v) || q > 3)
    {
        return Err(JpegError::corrupt("bad sampling factors or table number"));
    }
    let h_max = specs.iter().map(|s| s.1).max().unwrap_or(1);
    let v_max = specs.iter().map(|s| s.2).max().unwrap_or(1);
    if specs.iter().any(|s| h_max % s.1 != 0 || v_max % s.2 != 0) {
        return Err(JpegError::Unsupported(
            "fractional chroma sampling ratios".into(),
        ));
    }
    let (mcus_x, mcus_y) = (width.div_ceil(8 * h_max), height.div_ceil(8 * v_max));
    let components = specs
        .into_iter()
        .map(|(id, h, v, quant_table)| {
            let stride = mcus_x * h * 8;
            ComponentPlane {
                id,
                h,
                v,
                quant_table,
                samples: vec![0; stride * mcus_y * v * 8],
                stride,
                decoded: false,
            }
        })
        .collect();
    Ok(DecodedFrame {
        width,
        height,
        h_max,
        v_max,
        colour: ColourModel::YCbCr,
        components,
        exif: None,
    })
}

/// DHT: one or more Huffman tables.
fn huffman_tables(mut p: &[u8], tables: &mut Tables) -> Result<(), JpegError> {
    while !p.is_empty() {
        if p.len() < 17 {
            return Err(JpegError::corrupt("short Huffman table"));
        }
        let (class, id) = (p[0] >> 4, usize::from(p[0] & 15));
        let counts: [u8; 16] = p[1..17].try_into().expect("16 counts");
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = p
            .get(17..17 + total)
            .ok_or_else(|| JpegError::corrupt("short Huffman table"))?;
        let table = HuffmanTable::new(&counts, symbols)?;
        match (class, id) {
            (0, 0..=3) => tables.dc[id] = Some(table),
            (1, 0..=3) => tables.ac[id] = Some(table),
            _ => return Err(JpegError::corrupt("bad Huffman table class or number")),
        }
        p = &p[17 + total..];
    }
    Ok(())
}

/// DQT: one or more quantisation tables, stored in natural order.
fn quant_tables(mut p: &[u8], tables: &mut Tables) -> Result<(), JpegError> {
    while !p.is_empty() {
        let (precision, id) = (p[0] >> 4, usize::from(p[0] & 15));
        let size = if precision == 0 { 64 } else { 128 };
        let values = p
            .get(1..1 + size)
            .ok_or_else(|| JpegError::corrupt("short quantisation table"))?;
        if id > 3 || precision > 1 {
            return Err(JpegError::corrupt("bad quantisation table number"));
        }
        let mut table = [0i16; 64];
        for (k, &natural) in ZIGZAG.iter().enumerate() {
            // libjpeg keeps the multipliers as 16-bit signed values.
            table[natural] = if precision == 0 {
                i16::from(values[k])
            } else {
                be16(values, 2 * k) as u16 as i16
            };
        }
        tables.quant[id] = Some(table);
        p = &p[1 + size..];
    }
    Ok(())
}

/// One component of a scan with its tables.
struct ScanComponent<'t> {
    index: usize,
    dc: &'t HuffmanTable,
    ac: &'t HuffmanTable,
    quant: &'t [i16; 64],
}

/// SOS: decodes the scan whose entropy-coded data starts at `start`; returns where it ends.
fn scan(
    data: &[u8],
    start: usize,
    header: &[u8],
    frame: &mut DecodedFrame,
    tables: &Tables,
) -> Result<usize, JpegError> {
    let count = usize::from(*header.first().unwrap_or(&0));
    if count == 0 || count > 4 || header.len() < 1 + 2 * count + 3 {
        return Err(JpegError::corrupt("bad scan header"));
    }
    let (ss, se, approx) = (
        header[1 + 2 * count],
        header[2 + 2 * count],
        header[3 + 2 * count],
    );
    if ss != 0 || se != 63 || approx != 0 {
        return Err(JpegError::corrupt(
            "spectral selection in a sequential JPEG",
        ));
    }
    let mut components = Vec::with_capacity(count);
    for spec in header[1..1 + 2 * count].chunks_exact(2) {
        let index = frame
            .components
            .iter()
            .position(|c| c.id == spec[0])
            .ok_or_else(|| {
                JpegError::corrupt(format!("scan names unknown component {}", spec[0]))
            })?;
        let missing =
            |what: &str| JpegError::corrupt(format!("scan uses an undefined {what} table"));
        let (dc, ac) = (usize::from(spec[1] >> 4), usize::from(spec[1] & 15));
        components.push(ScanComponent {
            index,
            dc: tables
                .dc
                .get(dc)
                .and_then(Option::as_ref)
                .ok_or_else(|| missing("Huffman"))?,
            ac: tables
                .ac
                .get(ac)
                .and_then(Option::as_ref)
                .ok_or_else(|| missing("Huffman"))?,
            quant: tables.quant[frame.components[index].quant_table]
                .as_ref()
                .ok_or_else(|| missing("quantisation"))?,
        });
    }
    // Blocks per MCU of each scan component, `(across, down)`: its sampling factors in an
    // interleaved scan, one block otherwise.
    let mcu_blocks: Vec<(usize, usize)> = components
        .iter()
        .map(|c| {
            let plane = &frame.components[c.index];
            if count > 1 {
                (plane.h, plane.v)
            } else {
                (1, 1)
            }
        })
        .collect();
    let (mcus_x, mcus_y) = if count > 1 {
        (
            frame.width.div_ceil(8 * frame.h_max),
            frame.height.div_ceil(8 * frame.v_max),
        )
    } else {
        let (w, h) = frame.component_size(&frame.components[components[0].index]);
        (w.div_ceil(8), h.div_ceil(8))
    };
    // Block positions within an MCU, `(scan component, column, row)`, in coding order.
    let blocks: Vec<(usize, usize, usize)> = mcu_blocks
        .iter()
        .enumerate()
        .flat_map(|(s, &(across, down))| {
            (0..down).flat_map(move |by| (0..across).map(move |bx| (s, bx, by)))
        })
        .collect();
    // Each scan component's coefficients, in a grid of its plane's 8x8 blocks (`mcus_x *
    // across` columns), kept while the entropy-coded data is read (which is sequential); then
    // every block row goes through the inverse DCT in parallel.
    let mut grids: Vec<Vec<[i16; 64]>> = mcu_blocks
        .iter()
        .map(|&(across, down)| vec![[0; 64]; mcus_x * across * mcus_y * down])
        .collect();
    let mut reader = BitReader::new(data, start);
    let mut predictions = vec![0i32; count];
    for mcu in 0..mcus_x * mcus_y {
        if tables.restart_interval > 0 && mcu > 0 && mcu % tables.restart_interval == 0 {
            reader.restart()?;
            predictions.fill(0);
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        for &(s, bx, by) in &blocks {
            let c = &components[s];
            let (across, down) = mcu_blocks[s];
            let (column, row) = (mx * across + bx, my * down + by);
            let block = &mut grids[s][row * mcus_x * across + column];
            reader.block(c.dc, c.ac, &mut predictions[s], block)?;
        }
    }
    if reader.overran() {
        return Err(JpegError::corrupt(
            "the image data ends early (truncated or damaged file)",
        ));
    }
    for ((c, grid), &(across, _)) in components.iter().zip(&grids).zip(&mcu_blocks) {
        let plane = &mut frame.components[c.index];
        let stride = plane.stride;
        plane
            .samples
            .par_chunks_mut(8 * stride)
            .zip(grid.par_chunks(mcus_x * across))
            .for_each(|(lines, blocks)| {
                for (column, block) in blocks.iter().enumerate() {
                    inverse_dct(block, c.quant, &mut lines[8 * column..], stride);
                }
            });
    }
    for c in &components {
        frame.components[c.index].decoded = true;
    }
    Ok(reader.position())
}
