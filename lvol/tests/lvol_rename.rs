//! Renaming logical volumes and lvstores in place: the volume bdev stays registered, only its
//! alias (`lvs_name/lvol_name`) changes, and descriptors opened before the rename (an NVMe-oF
//! namespace, say) keep working without any event.

use keel_bdev::modules::malloc;
use keel_bdev::{BdevError, BdevEvent, IoChannel, IoStatus};
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::prelude::*;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;

async fn write(ch: &IoChannel, lba: u64, data: &[u8]) -> IoStatus {
    let mut b = dma(data.len(), 0);
    b.as_mut_slice().copy_from_slice(data);
    one(|cb, ctx| ch.write(&[iov(&mut b)], lba, data.len() as u64 / 512, cb, ctx))
        .await
        .expect("submit write")
}

async fn read(ch: &IoChannel, lba: u64) -> Vec<u8> {
    let mut b = dma(512, 0xee);
    let s = one(|cb, ctx| ch.read(&[iov(&mut b)], lba, 1, cb, ctx))
        .await
        .expect("submit read");
    assert_eq!(s, IoStatus::Success);
    b.as_slice().to_vec()
}

/// The bdev `alias` finds, by name (the volume's UUID), if any.
fn found(alias: &str) -> Option<String> {
    keel_bdev::get_bdev(alias).map(|b| b.name().to_string())
}

#[test]
fn renames_change_the_alias_in_place_and_keep_open_descriptors() {
    run(|| async {
        malloc::create("lv_rn_base", 16384, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_rn_base", "lvs_rn", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "a", 2 * MIB, true).await.unwrap();
        let other = lvol::create_volume(&s, "other", MIB, true).await.unwrap();
        let uuid = v.uuid.to_string();
        // opened by its alias, as a target configured with `lvs_rn/a` would
        let events: Arc<Mutex<Vec<BdevEvent>>> = Arc::default();
        let ev = Arc::clone(&events);
        let desc = keel_bdev::open("lvs_rn/a", true, move |e| ev.lock().unwrap().push(e)).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let bdev = keel_bdev::get_bdev(&uuid).unwrap();
        let (d1, d2, d3) = (pattern(512, 1), pattern(512, 2), pattern(512, 3));
        assert_eq!(write(&ch, 7, &d1).await, IoStatus::Success);

        // volume rename
        lvol::rename_volume(&v, "b").await.unwrap();
        assert_eq!(found("lvs_rn/b").as_deref(), Some(uuid.as_str()));
        assert_eq!(found("lvs_rn/a"), None, "the old alias no longer resolves");
        assert_eq!(bdev.aliases(), vec!["lvs_rn/b".to_string()]);
        assert!(!bdev.is_removing(), "same bdev, still registered");
        assert_eq!(
            read(&ch, 7).await,
            d1,
            "the descriptor opened before keeps reading"
        );
        assert_eq!(write(&ch, 2048, &d2).await, IoStatus::Success);
        assert_eq!(read(&ch, 2048).await, d2, "and writing (a new cluster)");
        assert_eq!(lvol::find_volume("lvs_rn/b").unwrap().uuid, v.uuid);
        assert!(lvol::find_volume("lvs_rn/a").is_err());

        // names taken by another volume, or by an unrelated bdev, are refused; nothing changes
        let e = lvol::rename_volume(&v, "other").await.unwrap_err();
        assert!(matches!(e, BdevError::Exists(_)), "{e}");
        malloc::create("lvs_rn/taken", 8, 512, None).unwrap();
        let e = lvol::rename_volume(&v, "taken").await.unwrap_err();
        assert!(matches!(e, BdevError::Exists(_)), "{e}");
        assert_eq!(v.info().name, "b");
        assert_eq!(found("lvs_rn/b").as_deref(), Some(uuid.as_str()));

        // store rename: every volume's alias follows, in place
        malloc::create("lvs_clash/b", 8, 512, None).unwrap();
        let e = lvol::rename_lvstore(&s, "lvs_clash").await.unwrap_err();
        assert!(matches!(e, BdevError::Exists(_)), "{e}");
        assert_eq!(s.name(), "lvs_rn", "a refused store rename changes nothing");
        lvol::rename_lvstore(&s, "lvs_rn2").await.unwrap();
        assert_eq!(found("lvs_rn2/b").as_deref(), Some(uuid.as_str()));
        let other_uuid = other.uuid.to_string();
        assert_eq!(found("lvs_rn2/other").as_deref(), Some(other_uuid.as_str()));
        assert_eq!(found("lvs_rn/b"), None);
        assert_eq!(found("lvs_rn/other"), None);
        assert!(!bdev.is_removing());
        assert_eq!(write(&ch, 9, &d3).await, IoStatus::Success);
        assert_eq!(read(&ch, 9).await, d3);
        assert_eq!(read(&ch, 7).await, d1);
        yield_iterations(4).await;
        assert!(
            events.lock().unwrap().is_empty(),
            "no event reached the open descriptor: {:?}",
            events.lock().unwrap()
        );

        // the names are on disk: a reload registers the volumes under the new aliases
        drop((ch, desc));
        lvol::unload_lvstore(&s).await;
        assert_eq!(found("lvs_rn2/b"), None);
        let s = lvol::load_lvstore("lv_rn_base").await.unwrap().unwrap();
        assert_eq!(s.name(), "lvs_rn2");
        assert_eq!(found("lvs_rn2/b").as_deref(), Some(uuid.as_str()));
        let (_d, ch) = open_rw("lvs_rn2/b");
        assert_eq!(read(&ch, 2048).await, d2);
        drop((_d, ch));
        lvol::destroy_lvstore(&s).await.unwrap();
        for m in ["lv_rn_base", "lvs_rn/taken", "lvs_clash/b"] {
            malloc::delete(m).await.unwrap();
        }
    });
}
