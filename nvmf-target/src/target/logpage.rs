//! Log page contents (Get Log Page): error information, SMART / health, firmware slot,
//! commands supported and effects, discovery. Changed Namespace List lives with the
//! controller (it is per controller state).

use crate::spec::bytes::{put_str, write};

/// Log identifiers served.
pub(crate) const LID_ERROR: u8 = 0x01;
pub(crate) const LID_SMART: u8 = 0x02;
pub(crate) const LID_FW_SLOT: u8 = 0x03;
pub(crate) const LID_CHANGED_NS: u8 = 0x04;
pub(crate) const LID_CMD_EFFECTS: u8 = 0x05;
pub(crate) const LID_DISCOVERY: u8 = 0x70;

/// Size of the SMART / health and firmware slot pages.
pub(crate) const SMART_LEN: usize = 512;
/// Size of one discovery log entry (and of the header).
pub(crate) const DISC_ENTRY_LEN: usize = 1024;

/// Decoded Get Log Page command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GetLogPage {
    pub lid: u8,
    /// Retain Asynchronous Event.
    pub rae: bool,
    /// Bytes requested.
    pub len: u64,
    /// Byte offset into the page.
    pub offset: u64,
}

impl GetLogPage {
    /// Decode CDW10..13: LID 7:0, RAE bit 15, NUMDL 31:16; NUMDU 15:0; LPOL/LPOU.
    pub fn parse(cdw10: u32, cdw11: u32, cdw12: u32, cdw13: u32) -> GetLogPage {
        let numd = u64::from(cdw10 >> 16) | (u64::from(cdw11 & 0xffff) << 16);
        GetLogPage {
            lid: (cdw10 & 0xff) as u8,
            rae: cdw10 & (1 << 15) != 0,
            len: (numd + 1) * 4,
            offset: u64::from(cdw12) | (u64::from(cdw13) << 32),
        }
    }
}

/// The part of `page` at [`offset`, `offset + len`), zero-filled past its end.
pub(crate) fn window(page: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if let Ok(off) = usize::try_from(offset) {
        if off < page.len() {
            let n = (page.len() - off).min(len);
            out[..n].copy_from_slice(&page[off..off + n]);
        }
    }
    out
}

/// I/O counters for the SMART page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SmartCounters {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Data units: thousands of 512-byte units, rounded up.
fn data_units(bytes: u64) -> u128 {
    u128::from(bytes.div_ceil(512)).div_ceil(1000)
}

/// The SMART / Health Information page.
pub(crate) fn smart(c: &SmartCounters) -> Vec<u8> {
    let mut b = vec![0u8; SMART_LEN];
    b[0] = 0; // critical warning
    write(&mut b, 1, 273u16 + 38); // composite temperature, kelvins
    b[3] = 100; // available spare
    b[4] = 10; // available spare threshold
    b[5] = 0; // percentage used
    write(&mut b, 32, data_units(c.bytes_read));
    write(&mut b, 48, data_units(c.bytes_written));
    write(&mut b, 64, u128::from(c.read_ops));
    write(&mut b, 80, u128::from(c.write_ops));
    b
}

/// The Firmware Slot Information page: slot 1 active, holding this build's version.
pub(crate) fn firmware_slot() -> Vec<u8> {
    let mut b = vec![0u8; SMART_LEN];
    b[0] = 1; // AFI: slot 1 active
    put_str(&mut b[8..16], env!("CARGO_PKG_VERSION"), b' ');
    b
}

/// The Commands Supported and Effects page for the commands this target runs.
pub(crate) fn command_effects() -> Vec<u8> {
    const CSUPP: u32 = 1;
    const LBCC: u32 = 1 << 1;
    let mut b = vec![0u8; 4096];
    for opc in [0x02u8, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18] {
        write(&mut b, usize::from(opc) * 4, CSUPP);
    }
    let io = 1024;
    for (opc, e) in [
        (0x00u8, CSUPP),
        (0x01, CSUPP | LBCC),
        (0x02, CSUPP),
        (0x05, CSUPP),
        (0x08, CSUPP | LBCC),
        (0x09, CSUPP | LBCC),
    ] {
        write(&mut b, io + usize::from(opc) * 4, e);
    }
    b
}

/// One discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub portid: u16,
    /// Admin max submission queue size.
    pub asqsz: u16,
    pub trsvcid: String,
    pub subnqn: String,
    pub traddr: String,
}

/// The discovery log page: header (generation counter, record count, format 0), then one
/// 1024-byte entry per (subsystem, listener).
pub(crate) fn discovery(genctr: u64, entries: &[DiscEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISC_ENTRY_LEN * (1 + entries.len())];
    write(&mut b, 0, genctr);
    write(&mut b, 8, entries.len() as u64);
    write(&mut b, 16, 0u16); // recfmt
    for (i, e) in entries.iter().enumerate() {
        let o = DISC_ENTRY_LEN * (i + 1);
        let ent = &mut b[o..o + DISC_ENTRY_LEN];
        ent[0] = e.trtype;
        ent[1] = e.adrfam;
        ent[2] = 2; // SUBTYPE: NVM subsystem
        ent[3] = 2; // TREQ: secure channel not required
        write(ent, 4, e.portid);
        write(ent, 6, 0xFFFFu16); // CNTLID: dynamic
        write(ent, 8, e.asqsz);
        put_str(&mut ent[32..64], &e.trsvcid, b' ');
        put_str(&mut ent[256..512], &e.subnqn, 0);
        put_str(&mut ent[512..768], &e.traddr, b' ');
        // TSAS: for TCP, SECTYPE 0 (no security) at byte 768 — left zero.
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::bytes::read;

    #[test]
    fn get_log_page_fields() {
        // LID 0x70, RAE, NUMDL 0x3ff → 4096 bytes at offset 1024.
        let g = GetLogPage::parse(0x03ff_8070, 0, 1024, 0);
        assert_eq!(
            g,
            GetLogPage {
                lid: 0x70,
                rae: true,
                len: 4096,
                offset: 1024
            }
        );
        let g = GetLogPage::parse(0xffff_0002, 0xffff, 0, 1);
        assert_eq!(g.len, (1u64 << 32) * 4);
        assert_eq!(g.offset, 1 << 32);
    }

    #[test]
    fn window_zero_fills() {
        let p = [1u8, 2, 3, 4];
        assert_eq!(window(&p, 2, 4), vec![3, 4, 0, 0]);
        assert_eq!(window(&p, 8, 2), vec![0, 0]);
        assert_eq!(window(&p, u64::MAX, 1), vec![0]);
    }

    #[test]
    fn smart_counts_data_units_rounded_up() {
        let b = smart(&SmartCounters {
            bytes_read: 512 * 1000,
            bytes_written: 1,
            read_ops: 3,
            write_ops: 4,
        });
        assert_eq!(read::<u128>(&b, 32), Some(1));
        assert_eq!(read::<u128>(&b, 48), Some(1));
        assert_eq!(read::<u128>(&b, 64), Some(3));
        assert_eq!(read::<u128>(&b, 80), Some(4));
        assert_eq!(smart(&SmartCounters::default())[32], 0);
    }

    #[test]
    fn discovery_layout() {
        let e = DiscEntry {
            trtype: 3,
            adrfam: 1,
            portid: 5,
            asqsz: 128,
            trsvcid: "4420".into(),
            subnqn: "nqn.2016-06.io.keel:a".into(),
            traddr: "127.0.0.1".into(),
        };
        let b = discovery(9, &[e.clone(), e]);
        assert_eq!(b.len(), 3072);
        assert_eq!(read::<u64>(&b, 0), Some(9));
        assert_eq!(read::<u64>(&b, 8), Some(2));
        let ent = &b[1024..2048];
        assert_eq!((ent[0], ent[1], ent[2]), (3, 1, 2));
        assert_eq!(read::<u16>(ent, 4), Some(5));
        assert_eq!(read::<u16>(ent, 6), Some(0xffff));
        assert_eq!(read::<u16>(ent, 8), Some(128));
        assert_eq!(&ent[32..37], b"4420 ");
        assert_eq!(&ent[256..277], b"nqn.2016-06.io.keel:a");
        assert_eq!(&ent[512..522], b"127.0.0.1 ");
    }

    #[test]
    fn effects_mark_supported_commands() {
        let b = command_effects();
        assert_eq!(read::<u32>(&b, 6 * 4), Some(1));
        assert_eq!(read::<u32>(&b, 1024 + 4), Some(3));
        assert_eq!(read::<u32>(&b, 1024 + 0x0D * 4), Some(0));
    }
}
