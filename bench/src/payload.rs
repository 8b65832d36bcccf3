//! The bench payload and how it is read back: pure functions, no I/O.
//!
//! Every message a bench publisher sends is the JSON list `[pub, seq, ts_ns, "xx...x"]`:
//! the publisher's index, its own sequence number, the send time in nanoseconds on the bench's
//! monotonic clock, and padding up to the requested payload size. An IDF registered with four
//! values carries it unchanged through the controller; a join function that returns its
//! arguments (`fn run(a0, a1, a2, a3) { [a0, a1, a2, a3] }`, `def run(*a): return list(a)`)
//! keeps it too.
//!
//! What arrives at an ODF holds one such *slot* per IDF of the graph, in the graph's IDF
//! order: flattened by a join (`[p, s, t, "x", p, s, t, "x"]`), nested without one
//! (`[[p, s, t, "x"], null]`), `null` for an IDF not heard yet. The slot that differs from the
//! previous output of the same stream is the message that triggered this output: its
//! timestamp gives the latency. Nothing here parses JSON into a tree: [`scan`] walks the bytes.

/// Publisher index of the priming messages sent before a run to check the path end to end.
pub const PRIME_PUB: u64 = 4_294_967_295;

/// Values per message, the width an IDF must be registered with.
pub const WIDTH: usize = 4;

/// Units of the bench features (`[name, units]` in the registration); their count is the width.
pub const UNITS: [&str; WIDTH] = ["pub", "seq", "ts_ns", "pad"];

/// One IDF's value inside an output: who sent it, its sequence number and its send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u64,
    pub seq: u64,
    pub ts_ns: u64,
}

/// One slot of an output: an IDF's latest value, or `None` for an IDF not heard yet.
pub type Slot = Option<Stamp>;

/// Builds payloads of one publisher: the padding is made once, each message writes only its
/// numbers into a reused buffer.
#[derive(Debug)]
pub struct Encoder {
    publisher: u64,
    target_bytes: usize,
    pad: Vec<u8>,
    buf: Vec<u8>,
}

impl Encoder {
    /// Payloads of about `target_bytes` (exactly, unless the numbers alone are longer).
    pub fn new(publisher: u64, target_bytes: usize) -> Self {
        Self {
            publisher,
            target_bytes,
            pad: vec![b'x'; target_bytes],
            buf: Vec::with_capacity(target_bytes.max(64)),
        }
    }

    /// The payload of message `seq` sent at `ts_ns`.
    pub fn encode(&mut self, seq: u64, ts_ns: u64) -> &[u8] {
        self.encode_as(self.publisher, seq, ts_ns)
    }

    /// A priming message (publisher [`PRIME_PUB`]).
    pub fn encode_prime(&mut self, seq: u64, ts_ns: u64) -> &[u8] {
        self.encode_as(PRIME_PUB, seq, ts_ns)
    }

    fn encode_as(&mut self, publisher: u64, seq: u64, ts_ns: u64) -> &[u8] {
        let b = &mut self.buf;
        b.clear();
        b.push(b'[');
        push_u64(b, publisher);
        b.push(b',');
        push_u64(b, seq);
        b.push(b',');
        push_u64(b, ts_ns);
        b.extend_from_slice(b",\"");
        // `"]` closes the padding string and the list.
        let pad = self.target_bytes.saturating_sub(b.len() + 2);
        b.extend_from_slice(&self.pad[..pad.min(self.pad.len())]);
        b.extend_from_slice(b"\"]");
        &self.buf
    }
}

fn push_u64(b: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// Why an output could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Something other than lists, non-negative integers, strings and `null`.
    Unexpected(u8),
    /// A `null` or the end in the middle of a slot, or a truncated string or literal.
    Truncated,
}

/// Reads the slots of one output into `out` (cleared first).
pub fn scan(payload: &[u8], out: &mut Vec<Slot>) -> Result<(), ScanError> {
    out.clear();
    let mut nums = [0u64; 3];
    let mut n = 0;
    let mut i = 0;
    while i < payload.len() {
        match payload[i] {
            b'[' | b']' | b',' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match payload.get(i) {
                        None => return Err(ScanError::Truncated),
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'n' => {
                if n != 0 || !payload[i..].starts_with(b"null") {
                    return Err(ScanError::Truncated);
                }
                out.push(None);
                i += 4;
            }
            b'0'..=b'9' => {
                let mut v: u64 = 0;
                while let Some(d @ b'0'..=b'9') = payload.get(i) {
                    v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
                if let Some(c @ (b'.' | b'e' | b'E')) = payload.get(i) {
                    return Err(ScanError::Unexpected(*c));
                }
                nums[n] = v;
                n += 1;
                if n == 3 {
                    out.push(Some(Stamp {
                        publisher: nums[0],
                        seq: nums[1],
                        ts_ns: nums[2],
                    }));
                    n = 0;
                }
            }
            c => return Err(ScanError::Unexpected(c)),
        }
    }
    if n != 0 {
        return Err(ScanError::Truncated);
    }
    Ok(())
}

/// The value that triggered output `cur`, given the previous output `prev` of the same
/// stream: the slot that changed (the latest one if several did, after a lost output).
/// `None` when nothing changed (a duplicate).
pub fn triggering(prev: &[Slot], cur: &[Slot]) -> Option<Stamp> {
    cur.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let s = (*s)?;
            (prev.get(i).copied().flatten() != Some(s)).then_some(s)
        })
        .max_by_key(|s| s.ts_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u64, seq: u64, ts_ns: u64) -> Slot {
        Some(Stamp {
            publisher,
            seq,
            ts_ns,
        })
    }

    #[test]
    fn payloads_have_the_requested_size_and_read_back() {
        let mut e = Encoder::new(3, 64);
        let p = e.encode(17, 123_456_789).to_vec();
        assert_eq!(p.len(), 64);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v[0], 3);
        assert_eq!(v[1], 17);
        assert_eq!(v[2], 123_456_789);
        let mut slots = Vec::new();
        scan(&p, &mut slots).unwrap();
        assert_eq!(slots, vec![stamp(3, 17, 123_456_789)]);
        // Smaller than the numbers: no padding, still valid JSON.
        let mut e = Encoder::new(0, 4);
        let p = e.encode(0, 0).to_vec();
        assert_eq!(p, b"[0,0,0,\"\"]");
        let p = e.encode_prime(1, 2).to_vec();
        scan(&p, &mut slots).unwrap();
        assert_eq!(slots, vec![stamp(PRIME_PUB, 1, 2)]);
        assert_eq!(u64::MAX.to_string().len(), 20);
        let mut b = Vec::new();
        push_u64(&mut b, u64::MAX);
        assert_eq!(b, u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn flattened_nested_and_null_slots() {
        let mut slots = Vec::new();
        scan(br#"[1,2,3,"xx",null,4,5,6,"y\"z"]"#, &mut slots).unwrap();
        assert_eq!(slots, vec![stamp(1, 2, 3), None, stamp(4, 5, 6)]);
        scan(br#"[[1, 2, 3, "xx"], null, [4, 5, 6, ""]]"#, &mut slots).unwrap();
        assert_eq!(slots, vec![stamp(1, 2, 3), None, stamp(4, 5, 6)]);
        assert_eq!(scan(b"[1,2]", &mut slots), Err(ScanError::Truncated));
        assert_eq!(
            scan(b"[1.5,2,3]", &mut slots),
            Err(ScanError::Unexpected(b'.'))
        );
        assert_eq!(
            scan(b"{\"a\":1}", &mut slots),
            Err(ScanError::Unexpected(b'{'))
        );
        assert_eq!(scan(b"[\"abc", &mut slots), Err(ScanError::Truncated));
    }

    #[test]
    fn the_changed_slot_is_the_trigger() {
        let a1 = stamp(0, 1, 10);
        let b1 = stamp(1, 1, 11);
        let a2 = stamp(0, 2, 12);
        // First output: the only heard IDF.
        assert_eq!(triggering(&[], &[a1, None]), a1);
        // B arrives: A unchanged.
        assert_eq!(triggering(&[a1, None], &[a1, b1]), b1);
        // A again.
        assert_eq!(triggering(&[a1, b1], &[a2, b1]), a2);
        // Duplicate.
        assert_eq!(triggering(&[a2, b1], &[a2, b1]), None);
        // Two changed (an output was lost): the latest.
        let b2 = stamp(1, 2, 13);
        assert_eq!(triggering(&[a1, None], &[a2, b2]), b2);
    }
}
