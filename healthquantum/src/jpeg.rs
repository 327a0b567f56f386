//! Whether a JPEG's data holds every block its header claims. Each scan's entropy-coded data is
//! read through its Huffman tables block by block, without computing a pixel, so that an image
//! cut short (even with its end-of-image marker put back, within a scan or between two) or whose
//! header claims more rows than its data holds is found before a decoder fills what is missing
//! with grey: every scan must end with its last block, and every coefficient of every component
//! must have had its scan by the end of the image. Sequential and progressive Huffman JPEGs are
//! read; a progressive image's refinement scans, whose length depends on the coefficients before
//! them, are taken as they are, as are scans that rely on tables the file does not define (the
//! decoder says what it makes of those). Arithmetic-coded and lossless JPEGs, which the decoder
//! does not read, are named as such. Stray bytes between segments, which decoders skip, are
//! skipped too.

/// The most scans a JPEG may have, as its decoder allows: each is read whole, so that an image of
/// many scans that say little would otherwise keep the check busy.
const MAX_SCANS: usize = 100;

/// The most components a frame or a scan may have: four, as the standard allows a scan and
/// decoders a frame.
const MAX_COMPONENTS: usize = 4;

/// Whether a component is named more than once in `components` (a frame's or a scan's).
fn named_twice<T: PartialEq>(components: &[T]) -> bool {
    components.iter().enumerate().any(|(index, component)| components[..index].contains(component))
}

/// How a JPEG's data falls short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// The file ends before its end-of-image marker.
    NoEnd,
    /// A scan's data ends before its last block.
    CutShort,
    /// The file ends (its end-of-image marker put back) before every coefficient of every
    /// component has had its scan: what is missing would be filled with grey.
    ScansMissing,
    /// A kind of JPEG the platform does not read, with its article (`an arithmetic-coded`,
    /// `a lossless`).
    Unsupported(&'static str),
    /// A scan's data holds what its Huffman tables cannot code, or a segment is malformed.
    Damaged(&'static str),
}

/// Checks the scans of `bytes`, a JPEG that starts with its start-of-image marker; where its
/// end-of-image marker ends. Bytes between segments, which decoders pass over, are passed over.
pub(crate) fn check(bytes: &[u8]) -> Result<usize, Shortfall> {
    check_segments(bytes, true)
}

/// As [`check`], for a picture after another's end, which nothing reads but a tool that looks for
/// it: bytes between its segments are refused, as nothing but its segments may travel in it.
pub(crate) fn check_strict(bytes: &[u8]) -> Result<usize, Shortfall> {
    check_segments(bytes, false)
}

/// The next marker of `bytes` from `at` (past any bytes before it, which `stray_bytes` allows)
/// and its segment's data, empty for a marker that stands alone; `at` moves past both. The one
/// walk through a JPEG's segments, so that the frame whose size is checked before its data is read
/// is the frame whose data is read: a second start-of-image marker, which decoders read one way or
/// another, is refused.
fn next_segment<'a>(bytes: &'a [u8], at: &mut usize, stray_bytes: bool) -> Result<(u8, &'a [u8]), Shortfall> {
    match bytes.get(*at..).and_then(|rest| rest.iter().position(|byte| *byte == 0xFF)) {
        Some(offset) if offset > 0 && !stray_bytes => {
            return Err(Shortfall::Damaged("it has bytes between its segments"));
        }
        Some(offset) => *at += offset,
        None => return Err(Shortfall::NoEnd),
    }
    while bytes.get(*at + 1) == Some(&0xFF) {
        *at += 1;
    }
    let Some(&marker) = bytes.get(*at + 1) else { return Err(Shortfall::NoEnd) };
    *at += 2;
    match marker {
        0xD8 => return Err(Shortfall::Damaged("it has a second start-of-image marker")),
        0x01 | 0xD0..=0xD7 | 0xD9 => return Ok((marker, &[])),
        _ => {}
    }
    let length = bytes.get(*at..*at + 2).map(|length| usize::from(u16::from_be_bytes([length[0], length[1]])));
    let Some(length) = length.filter(|length| *length >= 2) else { return Err(Shortfall::NoEnd) };
    let Some(segment) = bytes.get(*at + 2..*at + length) else { return Err(Shortfall::NoEnd) };
    *at += length;
    Ok((marker, segment))
}

fn check_segments(bytes: &[u8], stray_bytes: bool) -> Result<usize, Shortfall> {
    let damaged = Shortfall::Damaged;
    let mut tables = [[None, None, None, None], [None, None, None, None]];
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0usize;
    let mut scans = 0;
    // For each component of the frame, which coefficients a scan has coded (refinements aside).
    let mut coded: Vec<[bool; 64]> = Vec::new();
    let mut at = 2;
    loop {
        let (marker, segment) = next_segment(bytes, &mut at, stray_bytes)?;
        match marker {
            0xD9 if frame.is_none() => return Err(damaged("it ends before its frame header")),
            0xD9 if coded.iter().any(|coefficients| coefficients.contains(&false)) => {
                return Err(Shortfall::ScansMissing);
            }
            0xD9 => return Ok(at),
            // The frame whose size was checked is the only one.
            0xC0..=0xC2 if frame.is_some() => return Err(damaged("it has a second frame header")),
            0xC0..=0xC2 if segment.first() == Some(&12) => return Err(Shortfall::Unsupported("a 12-bit")),
            0xC0..=0xC2 if segment.first() != Some(&8) => return Err(damaged("its sample precision is not 8 bits")),
            0xC0..=0xC2 => {
                let parsed = Frame::parse(segment, marker == 0xC2).ok_or(damaged("its frame header is malformed"))?;
                coded = vec![[false; 64]; parsed.components.len()];
                frame = Some(parsed);
            }
            0xC9..=0xCB | 0xCD..=0xCF => return Err(Shortfall::Unsupported("an arithmetic-coded")),
            // JPEG-LS (ITU-T T.87) is lossless too.
            0xC3 | 0xC7 | 0xF7 => return Err(Shortfall::Unsupported("a lossless")),
            // Hierarchical, which the decoder does not read either.
            0xC5 | 0xC6 => return Err(Shortfall::Unsupported("a hierarchical")),
            0xC4 => read_tables(segment, &mut tables).ok_or(damaged("a Huffman table is malformed"))?,
            0xDD => {
                let interval = segment.get(..2).ok_or(damaged("its restart interval is malformed"))?;
                restart_interval = usize::from(u16::from_be_bytes([interval[0], interval[1]]));
            }
            0xDA => {
                scans += 1;
                if scans > MAX_SCANS {
                    return Err(damaged("it has more than 100 scans"));
                }
                let frame = frame.as_ref().ok_or(damaged("a scan comes before its frame header"))?;
                let scan = Scan::parse(segment, frame, &tables).ok_or(damaged("a scan header is malformed"))?;
                if !scan.refines {
                    for (index, ..) in &scan.components {
                        let band = match frame.progressive {
                            true => usize::from(scan.start)..=usize::from(scan.end),
                            false => 0..=63,
                        };
                        coded[*index][band].fill(true);
                    }
                }
                let mut reader = BitReader::new(bytes, at);
                if scan.read(frame, &mut reader, restart_interval)? && !reader.only_padding_left() {
                    return Err(damaged("a scan has data left over after its last block"));
                }
                at = reader.after_data();
            }
            _ => {}
        }
    }
}

/// What a JPEG's frame header claims, read before any of its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// For a progressive JPEG, the bytes a decoder keeps for its coefficients while it reads its
    /// scans (two a coefficient, 64 a block, every block of every component), which a small file
    /// of empty bands can claim in the hundreds of megabytes; `None` for a sequential JPEG, whose
    /// blocks are decoded as they come.
    pub(crate) coefficient_bytes: Option<u64>,
}

/// What the frame header of `bytes`, a JPEG that starts with its start-of-image marker, claims;
/// `None` when no Huffman frame header comes before its first scan (what is wrong with it is then
/// for [`check`] to say).
pub(crate) fn claimed(bytes: &[u8]) -> Option<Claimed> {
    let mut at = 2;
    loop {
        let (marker, segment) = next_segment(bytes, &mut at, true).ok()?;
        match marker {
            0xC0..=0xC2 => {
                let progressive = marker == 0xC2;
                let frame = Frame::parse(segment, progressive)?;
                let mcus_across = frame.width.div_ceil(8 * frame.max_h) as u64;
                let mcus_down = frame.height.div_ceil(8 * frame.max_v) as u64;
                let blocks: u64 =
                    frame.components.iter().map(|(_, h, v)| mcus_across * *h as u64 * mcus_down * *v as u64).sum();
                return Some(Claimed {
                    width: u32::try_from(frame.width).ok()?,
                    height: u32::try_from(frame.height).ok()?,
                    coefficient_bytes: progressive.then_some(blocks * 64 * 2),
                });
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDA | 0xD9 => return None,
            _ => {}
        }
    }
}

/// The frame header: the image's size and its components' sampling factors.
struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    /// Identifier, horizontal and vertical sampling factors.
    components: Vec<(u8, usize, usize)>,
    max_h: usize,
    max_v: usize,
}

impl Frame {
    fn parse(segment: &[u8], progressive: bool) -> Option<Self> {
        let height = usize::from(u16::from_be_bytes([*segment.get(1)?, *segment.get(2)?]));
        let width = usize::from(u16::from_be_bytes([*segment.get(3)?, *segment.get(4)?]));
        // At most four components, each named once, as decoders read them.
        let count = usize::from(*segment.get(5)?);
        if !(1..=MAX_COMPONENTS).contains(&count) {
            return None;
        }
        let components: Vec<(u8, usize, usize)> = (0..count)
            .map(|index| {
                let component = segment.get(6 + 3 * index..9 + 3 * index)?;
                let (h, v) = (usize::from(component[1] >> 4), usize::from(component[1] & 15));
                (1..=4).contains(&h).then_some(())?;
                (1..=4).contains(&v).then_some(())?;
                Some((component[0], h, v))
            })
            .collect::<Option<_>>()?;
        if named_twice(&components.iter().map(|(id, ..)| *id).collect::<Vec<_>>()) {
            return None;
        }
        let max_h = components.iter().map(|(_, h, _)| *h).max()?;
        let max_v = components.iter().map(|(_, _, v)| *v).max()?;
        (width > 0 && height > 0).then_some(Self { width, height, progressive, components, max_h, max_v })
    }
}

/// A code that no symbol of its Huffman table has.
const UNKNOWN_CODE: Shortfall = Shortfall::Damaged("a scan holds a code its Huffman table does not have");

/// How many bits ahead a Huffman table looks its shorter codes up in one step.
const LOOKAHEAD: u32 = 9;

/// A canonical Huffman table, as JPEG codes it: for each code length, the largest code of that
/// length and where its symbols start; and the codes of up to [`LOOKAHEAD`] bits by the bits that
/// start them.
#[derive(Clone)]
struct Huffman {
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
    /// For each value of the next [`LOOKAHEAD`] bits: the length of the code they start with
    /// (0 for a longer one) and its symbol.
    short: Vec<(u8, u8)>,
}

impl Huffman {
    fn new(counts: &[u8], symbols: &[u8]) -> Option<Self> {
        let mut max_code = [-1; 17];
        let mut offset = [0; 17];
        let mut short = vec![(0, 0); 1 << LOOKAHEAD];
        let (mut code, mut next) = (0i32, 0i32);
        for length in 1..=16 {
            let count = i32::from(counts[length - 1]);
            if code + count > 1 << length {
                return None;
            }
            offset[length] = next - code;
            if length <= LOOKAHEAD as usize {
                let spread = LOOKAHEAD as usize - length;
                for index in 0..count {
                    let first = usize::try_from(code + index).ok()? << spread;
                    let symbol = *symbols.get(usize::try_from(next + index).ok()?)?;
                    short[first..first + (1 << spread)].fill((length as u8, symbol));
                }
            }
            code += count;
            next += count;
            max_code[length] = if count > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        Some(Self { max_code, offset, symbols: symbols.to_vec(), short })
    }

    fn decode(&self, reader: &mut BitReader<'_>) -> Result<u8, Shortfall> {
        reader.fill();
        let (length, symbol) = self.short[reader.peek(LOOKAHEAD) as usize];
        if length > 0 {
            reader.consume(u32::from(length))?;
            return Ok(symbol);
        }
        let ahead = reader.peek(16) as i32;
        for length in LOOKAHEAD as usize + 1..=16 {
            let code = ahead >> (16 - length);
            if code <= self.max_code[length] {
                reader.consume(length as u32)?;
                let index = usize::try_from(code + self.offset[length]).map_err(|_| UNKNOWN_CODE)?;
                return self.symbols.get(index).copied().ok_or(UNKNOWN_CODE);
            }
        }
        // Bits past the data's end read as zeros: a code they do not finish is a scan cut short.
        match reader.count < 16 {
            true => Err(Shortfall::CutShort),
            false => Err(UNKNOWN_CODE),
        }
    }
}

/// Reads a DHT segment's tables into `tables[class][id]`.
fn read_tables(mut segment: &[u8], tables: &mut [[Option<Huffman>; 4]; 2]) -> Option<()> {
    while let Some((&class_and_id, rest)) = segment.split_first() {
        let (class, id) = (usize::from(class_and_id >> 4), usize::from(class_and_id & 15));
        let counts = rest.get(..16)?;
        let total = counts.iter().map(|count| usize::from(*count)).sum::<usize>();
        let symbols = rest.get(16..16 + total)?;
        *tables.get_mut(class)?.get_mut(id)? = Some(Huffman::new(counts, symbols)?);
        segment = &rest[16 + total..];
    }
    Some(())
}

/// A scan header: the frame's components it holds with their tables, and the spectral selection
/// and successive approximation of a progressive scan.
struct Scan {
    /// Index in the frame, DC table, AC table.
    components: Vec<(usize, Option<Huffman>, Option<Huffman>)>,
    start: u8,
    end: u8,
    refines: bool,
}

impl Scan {
    fn parse(segment: &[u8], frame: &Frame, tables: &[[Option<Huffman>; 4]; 2]) -> Option<Self> {
        let count = usize::from(*segment.first()?);
        let components = (0..count)
            .map(|index| {
                let entry = segment.get(1 + 2 * index..3 + 2 * index)?;
                let position = frame.components.iter().position(|(id, ..)| *id == entry[0])?;
                let dc = tables[0].get(usize::from(entry[1] >> 4))?.clone();
                let ac = tables[1].get(usize::from(entry[1] & 15))?.clone();
                Some((position, dc, ac))
            })
            .collect::<Option<Vec<_>>>()?;
        let rest = segment.get(1 + 2 * count..4 + 2 * count)?;
        let scan = Self { components, start: rest[0], end: rest[1], refines: rest[2] >> 4 != 0 };
        // As the standard has it (B.2.3, G.1.1.1.1): up to four components, each once; at most
        // ten blocks to an MCU of several; and a progressive scan of AC coefficients holds one
        // component. A scan that named one component many times would have its every block read
        // as many times over.
        let positions: Vec<usize> = scan.components.iter().map(|(position, ..)| *position).collect();
        let blocks: usize = positions.iter().map(|position| frame.components[*position]).map(|(_, h, v)| h * v).sum();
        let well_formed = (1..=MAX_COMPONENTS).contains(&count)
            && !named_twice(&positions)
            && (count == 1 || blocks <= 10)
            && !(frame.progressive && scan.start > 0 && count > 1);
        (well_formed && scan.start <= scan.end && scan.end <= 63).then_some(scan)
    }

    /// Reads every block of the scan, or says why it cannot: whether it was read (a scan whose
    /// length this check cannot tell is passed over).
    fn read(&self, frame: &Frame, reader: &mut BitReader<'_>, restart_interval: usize) -> Result<bool, Shortfall> {
        // Refinements read as many bits as the coefficients before them ask for.
        if frame.progressive && self.refines {
            return Ok(false);
        }
        // Tables the file does not define: the decoder says what it makes of them.
        let needs_dc = self.start == 0;
        let needs_ac = self.end > 0;
        if self.components.iter().any(|(_, dc, ac)| (needs_dc && dc.is_none()) || (needs_ac && ac.is_none())) {
            return Ok(false);
        }
        let mcu_columns = frame.width.div_ceil(8 * frame.max_h);
        let mcu_rows = frame.height.div_ceil(8 * frame.max_v);
        // One component alone is read block by block, over its own size; several, MCU by MCU.
        let (units, blocks_per_unit): (usize, Vec<(usize, usize)>) = if let [(index, ..)] = self.components[..] {
            let (_, h, v) = frame.components[index];
            let columns = (frame.width * h).div_ceil(frame.max_h).div_ceil(8);
            let rows = (frame.height * v).div_ceil(frame.max_v).div_ceil(8);
            (columns * rows, vec![(0, 1)])
        } else {
            let per_component = self
                .components
                .iter()
                .enumerate()
                .map(|(position, (index, ..))| {
                    let (_, h, v) = frame.components[*index];
                    (position, h * v)
                })
                .collect();
            (mcu_columns * mcu_rows, per_component)
        };
        let mut end_of_bands = 0u32;
        let mut unit = 0;
        while unit < units {
            if restart_interval > 0 && unit > 0 && unit % restart_interval == 0 {
                reader.restart()?;
                end_of_bands = 0;
            }
            // A run of blocks whose band has ended (a progressive AC scan): passed over at once.
            if end_of_bands > 0 && blocks_per_unit == [(0, 1)] {
                let to_restart = if restart_interval > 0 { restart_interval - unit % restart_interval } else { units };
                let skipped = (end_of_bands as usize).min(to_restart).min(units - unit);
                end_of_bands -= skipped as u32;
                unit += skipped;
                continue;
            }
            for &(position, blocks) in &blocks_per_unit {
                let (_, dc, ac) = &self.components[position];
                for _ in 0..blocks {
                    self.read_block(frame.progressive, dc.as_ref(), ac.as_ref(), reader, &mut end_of_bands)?;
                }
            }
            unit += 1;
        }
        Ok(true)
    }

    fn read_block(
        &self,
        progressive: bool,
        dc: Option<&Huffman>,
        ac: Option<&Huffman>,
        reader: &mut BitReader<'_>,
        end_of_bands: &mut u32,
    ) -> Result<(), Shortfall> {
        let missing = Shortfall::Damaged("a scan names a Huffman table that is not defined");
        if self.start == 0 {
            let size = dc.ok_or(missing.clone())?.decode(reader)?;
            reader.skip(u32::from(size))?;
        }
        let first = u32::from(self.start.max(1));
        let last = u32::from(self.end);
        if first > last {
            return Ok(());
        }
        if *end_of_bands > 0 {
            *end_of_bands -= 1;
            return Ok(());
        }
        let ac = ac.ok_or(missing)?;
        let mut k = first;
        while k <= last {
            let symbol = ac.decode(reader)?;
            let (run, size) = (u32::from(symbol >> 4), u32::from(symbol & 15));
            if size == 0 {
                if run < 15 {
                    // End of block, or (progressive) of this band in the next 2^run blocks and some.
                    if progressive {
                        *end_of_bands = (1 << run) - 1 + if run > 0 { reader.take(run)? } else { 0 };
                    }
                    return Ok(());
                }
                k += 16;
            } else {
                k += run;
                reader.skip(size)?;
                k += 1;
            }
        }
        // A run past the end of the block ends it, as decoders take it.
        Ok(())
    }
}

/// Reads a scan's entropy-coded data, up to 64 bits ahead: a `FF` in it is followed by `00` (a
/// data byte) or a restart marker; any other marker ends it.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The first byte not yet taken into `ahead`.
    at: usize,
    /// The bits taken and not yet read, from the most significant.
    ahead: u64,
    count: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8], at: usize) -> Self {
        Self { bytes, at, ahead: 0, count: 0 }
    }

    /// Takes whole data bytes into `ahead`, up to the data's end.
    fn fill(&mut self) {
        while self.count <= 56 {
            let Some(&byte) = self.bytes.get(self.at) else { return };
            if byte == 0xFF {
                // A marker: the data ends here.
                if self.bytes.get(self.at + 1) != Some(&0x00) {
                    return;
                }
                self.at += 1;
            }
            self.at += 1;
            self.ahead |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// The next `count` bits (1 to 32), zeros past the data's end.
    fn peek(&self, count: u32) -> u32 {
        (self.ahead >> (64 - count)) as u32
    }

    fn consume(&mut self, count: u32) -> Result<(), Shortfall> {
        if count > self.count {
            return Err(Shortfall::CutShort);
        }
        self.ahead <<= count;
        self.count -= count;
        Ok(())
    }

    /// The next `count` bits (up to 16).
    fn take(&mut self, count: u32) -> Result<u32, Shortfall> {
        if count == 0 {
            return Ok(0);
        }
        self.fill();
        let value = self.peek(count);
        self.consume(count)?;
        Ok(value)
    }

    fn skip(&mut self, mut count: u32) -> Result<(), Shortfall> {
        while count > 0 {
            let step = count.min(32);
            self.fill();
            self.consume(step)?;
            count -= step;
        }
        Ok(())
    }

    /// Goes past the restart marker that must follow: the rest of the byte is padding.
    fn restart(&mut self) -> Result<(), Shortfall> {
        // What is left of the byte being read is padding; a whole byte left is data before the marker.
        if self.count >= 8 {
            return Err(Shortfall::CutShort);
        }
        (self.ahead, self.count) = (0, 0);
        // Fill bytes may come before a marker.
        while self.bytes.get(self.at..self.at + 2) == Some(&[0xFF, 0xFF]) {
            self.at += 1;
        }
        match self.bytes.get(self.at..self.at + 2) {
            Some([0xFF, 0xD0..=0xD7]) => {
                self.at += 2;
                Ok(())
            }
            _ => Err(Shortfall::CutShort),
        }
    }

    /// How many bytes of data are left between what was read and the scan's end (fill bytes and
    /// restart markers aside): none in a scan that ends with its last block.
    fn leftover(&self) -> usize {
        let end = self.after_data();
        let (mut at, mut left) = (self.at, self.count as usize / 8);
        while at < end {
            match (self.bytes[at], self.bytes.get(at + 1)) {
                (0xFF, Some(0xD0..=0xD7)) => at += 2,
                (0xFF, Some(0x00)) => {
                    left += 1;
                    at += 2;
                }
                (0xFF, _) => at += 1,
                _ => {
                    left += 1;
                    at += 1;
                }
            }
        }
        left
    }

    /// Whether what is left of the scan's data after its last block is padding: the rest of the
    /// byte being read, and at most one whole byte of 1-bits, which some encoders (jpeg-js, the
    /// one in Jimp) write when the data ends on a byte's edge and decoders pass over.
    fn only_padding_left(&self) -> bool {
        match self.leftover() {
            0 => true,
            // The byte already taken in, after the rest of the one being read (under 16 bits).
            1 if self.count >= 8 => self.peek(self.count) == (1 << self.count) - 1,
            1 => self.bytes.get(self.at..self.at + 2) == Some(&[0xFF, 0x00]),
            _ => false,
        }
    }

    /// Where the bytes after the scan's data start: its next marker, past any restart markers
    /// and padding left.
    fn after_data(&self) -> usize {
        let mut at = self.at;
        while at + 1 < self.bytes.len() {
            if self.bytes[at] == 0xFF && !matches!(self.bytes[at + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
                return at;
            }
            at += 1;
        }
        self.bytes.len()
    }
}
