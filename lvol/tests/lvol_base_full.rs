//! An lvol I/O whose base has no free descriptor is parked and resumed by the channel's
//! wait-for-descriptor entry when a base descriptor frees (no retry loop in the poller).

use keel_bdev::modules::malloc;
use keel_bdev::{IoStatus, SubmitError};
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::prelude::*;

const MIB: u64 = 1 << 20;

#[test]
fn io_parked_on_a_full_base_resumes_when_a_base_descriptor_frees() {
    run(|| async {
        malloc::create("lv_bf_base", 16384, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_bf_base", "lvs_bf", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v", 4 * MIB, false).await.unwrap();
        let (vd, vch) = open_rw(&v.uuid.to_string());
        // Take every descriptor of this core's base channel (shared with the volume's): the
        // malloc reads complete at once, but their descriptors come back only when the
        // completion poller runs, after this task yields.
        let base = keel_bdev::open("lv_bf_base", false, |_| {}).unwrap();
        let bch = base.get_io_channel().unwrap();
        let mut scratch = dma(512, 0);
        let fill = Batch::new();
        loop {
            match fill.submit(|cb, ctx| bch.read(&[iov(&mut scratch)], 0, 1, cb, ctx)) {
                Ok(()) => {}
                Err(SubmitError::NoDescriptor) => break,
                Err(e) => panic!("base read: {e}"),
            }
        }
        assert!(fill.outstanding() > 0);
        let data = pattern(4096, 5);
        let mut w = dma(4096, 0);
        w.as_mut_slice().copy_from_slice(&data);
        let mut r = dma(4096, 0xee);
        let io = Batch::new();
        // Both are accepted by the volume; the write's child finds the base full and parks,
        // the read queues behind it.
        io.submit(|cb, ctx| vch.write(&[iov(&mut w)], 8, 8, cb, ctx))
            .unwrap();
        io.submit(|cb, ctx| vch.read(&[iov(&mut r)], 8, 8, cb, ctx))
            .unwrap();
        assert_eq!(io.outstanding(), 2);
        assert!(fill.wait().await.iter().all(|&s| s == IoStatus::Success));
        assert_eq!(
            io.wait().await,
            vec![IoStatus::Success, IoStatus::Success],
            "in order"
        );
        assert_eq!(r.as_slice(), &data[..]);
        drop((bch, base, vch, vd));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lv_bf_base").await.unwrap();
    });
}
