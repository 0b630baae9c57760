//! Live resize of logical volumes: the volume bdev stays registered (same bdev, open
//! descriptors and channels keep working), consumers get `BdevEvent::Resize`, the I/O path
//! follows the new size, and shrinking gives the clusters beyond the new end back.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::malloc;
use keel_bdev::{BdevEvent, IoChannel, IoStatus, SubmitError};
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;
const BPC: u64 = MIB / 512;

async fn write(ch: &IoChannel, lba: u64, data: &[u8]) -> Result<IoStatus, SubmitError> {
    let mut b = dma(data.len(), 0);
    b.as_mut_slice().copy_from_slice(data);
    one(|cb, ctx| ch.write(&[iov(&mut b)], lba, data.len() as u64 / 512, cb, ctx)).await
}

async fn read(ch: &IoChannel, lba: u64) -> Result<(IoStatus, Vec<u8>), SubmitError> {
    let mut b = dma(512, 0xee);
    let s = one(|cb, ctx| ch.read(&[iov(&mut b)], lba, 1, cb, ctx)).await?;
    Ok((s, b.as_slice().to_vec()))
}

fn test_resize(thin: bool, base: &'static str, store: &'static str) {
    run(move || async move {
        malloc::create(base, 16384, 512, None).unwrap();
        let s = lvol::create_lvstore(base, store, Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v", 2 * MIB, thin).await.unwrap();
        let name = v.uuid.to_string();
        let events: Arc<Mutex<Vec<BdevEvent>>> = Arc::default();
        let ev = Arc::clone(&events);
        let desc = keel_bdev::open(&name, true, move |e| ev.lock().unwrap().push(e)).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let bdev = keel_bdev::get_bdev(&name).unwrap();
        let blk = pattern(512, 3);
        assert_eq!(write(&ch, 2 * BPC - 1, &blk).await, Ok(IoStatus::Success));
        assert_eq!(
            write(&ch, 2 * BPC, &blk).await,
            Err(SubmitError::OutOfRange)
        );

        // grow: same bdev and channel, new blocks usable at once, old data kept
        lvol::resize_volume(&v, 4 * MIB).await.unwrap();
        yield_iterations(2).await;
        assert_eq!(*events.lock().unwrap(), vec![BdevEvent::Resize]);
        assert_eq!(bdev.num_blocks(), 4 * BPC);
        assert_eq!(desc.bdev().num_blocks(), 4 * BPC);
        let again = keel_bdev::get_bdev(&name).unwrap();
        assert!(
            !again.is_removing() && again.num_blocks() == 4 * BPC,
            "still registered, with the new size"
        );
        assert_eq!(write(&ch, 4 * BPC - 1, &blk).await, Ok(IoStatus::Success));
        assert_eq!(
            read(&ch, 4 * BPC - 1).await,
            Ok((IoStatus::Success, blk.clone()))
        );
        assert_eq!(
            read(&ch, 2 * BPC - 1).await,
            Ok((IoStatus::Success, blk.clone()))
        );
        assert_eq!(read(&ch, 4 * BPC).await, Err(SubmitError::OutOfRange));
        let free_grown = s.free_clusters.load(Ordering::Relaxed);

        // shrink: beyond the new end refused, inside kept, clusters beyond returned
        lvol::resize_volume(&v, MIB).await.unwrap();
        yield_iterations(2).await;
        assert_eq!(events.lock().unwrap().len(), 2);
        assert_eq!(desc.bdev().num_blocks(), BPC);
        assert_eq!(read(&ch, BPC).await, Err(SubmitError::OutOfRange));
        assert_eq!(
            write(&ch, 2 * BPC - 1, &blk).await,
            Err(SubmitError::OutOfRange)
        );
        let returned = if thin { 2 } else { 3 };
        assert_eq!(
            s.free_clusters.load(Ordering::Relaxed),
            free_grown + returned,
            "the clusters beyond the new end are free again"
        );
        assert_eq!(write(&ch, BPC - 1, &blk).await, Ok(IoStatus::Success));
        assert_eq!(
            read(&ch, BPC - 1).await,
            Ok((IoStatus::Success, blk.clone()))
        );

        // grow back: the blocks beyond the old end read zeroes (nothing kept from before)
        lvol::resize_volume(&v, 2 * MIB).await.unwrap();
        yield_iterations(2).await;
        assert_eq!(events.lock().unwrap().len(), 3);
        let (st, r) = read(&ch, 2 * BPC - 1).await.unwrap();
        assert_eq!(st, IoStatus::Success);
        assert!(r.iter().all(|&b| b == 0), "a shrink drops the data beyond");
        assert!(
            events
                .lock()
                .unwrap()
                .iter()
                .all(|e| *e == BdevEvent::Resize),
            "no hot-remove on resize"
        );

        drop((ch, desc));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete(base).await.unwrap();
    });
}

#[test]
fn thin_volume_resizes_in_place() {
    test_resize(true, "lvr_m_thin", "lvsr_thin");
}

#[test]
fn thick_volume_resizes_in_place() {
    test_resize(false, "lvr_m_thick", "lvsr_thick");
}
