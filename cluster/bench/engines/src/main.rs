//! fjall against redb for a storage node's disk: group-committed read-merge-writes, a bulk
//! load of 1 M keys, and a restart's full scan. Prints each figure and fjall ÷ redb ratios.

use std::time::Instant;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const PUTS: usize = 20_000;
const BATCH: usize = 32;
const BULK: usize = 1_000_000;

fn key(i: usize) -> Vec<u8> { format!("k{i:08}").into_bytes() }

fn redb_run(dir: &std::path::Path) -> [f64; 3] {
    let path = dir.join("r.redb");
    let db = redb::Database::create(&path).unwrap();
    let v = vec![7u8; 64];
    let t = Instant::now();
    for b in 0..PUTS / BATCH {
        let tx = db.begin_write().unwrap();
        { let mut tb = tx.open_table(T).unwrap();
          for i in 0..BATCH { let k = key(b * BATCH + i); let _old = tb.get(k.as_slice()).unwrap().map(|g| g.value().to_vec()); tb.insert(k.as_slice(), v.as_slice()).unwrap(); } }
        tx.commit().unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    let puts = PUTS as f64 / s;
    println!("redb: {PUTS} puts, one fsync per {BATCH}: {puts:.0} puts/s");
    let t = Instant::now();
    for c in 0..BULK / 10_000 {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(redb::Durability::None).unwrap();
        { let mut tb = tx.open_table(T).unwrap(); for i in 0..10_000 { let k = key(PUTS + c * 10_000 + i); tb.insert(k.as_slice(), v.as_slice()).unwrap(); } }
        tx.commit().unwrap();
    }
    let tx = db.begin_write().unwrap(); tx.commit().unwrap();
    let bulk = t.elapsed().as_secs_f64();
    println!("redb: bulk 1M in {bulk:.1}s");
    drop(db);
    let t = Instant::now();
    let db = redb::Database::open(&path).unwrap();
    let r = db.begin_read().unwrap(); let tb = r.open_table(T).unwrap();
    let n = tb.iter().unwrap().map(|x| { let (k, v) = x.unwrap(); k.value().len() + v.value().len() }).count();
    let scan = t.elapsed().as_secs_f64();
    println!("redb: reopen + scan {n} records: {scan:.2}s; file {} MB", std::fs::metadata(&path).unwrap().len() / 1_000_000);
    [puts, bulk, scan]
}

fn fjall_run(dir: &std::path::Path) -> [f64; 3] {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let path = dir.join("f");
    let db = Database::builder(&path).open().unwrap();
    let ks = db.keyspace("records", KeyspaceCreateOptions::default).unwrap();
    let v = vec![7u8; 64];
    let t = Instant::now();
    for b in 0..PUTS / BATCH {
        let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
        for i in 0..BATCH { let k = key(b * BATCH + i); let _old = ks.get(&k).unwrap(); batch.insert(&ks, k, v.clone()); }
        batch.commit().unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    let puts = PUTS as f64 / s;
    println!("fjall: {PUTS} puts, one fsync per {BATCH}: {puts:.0} puts/s");
    let t = Instant::now();
    for c in 0..BULK / 10_000 {
        let mut batch = db.batch();
        for i in 0..10_000 { batch.insert(&ks, key(PUTS + c * 10_000 + i), v.clone()); }
        batch.commit().unwrap();
    }
    db.persist(PersistMode::SyncAll).unwrap();
    let bulk = t.elapsed().as_secs_f64();
    println!("fjall: bulk 1M in {bulk:.1}s");
    drop(ks); drop(db);
    let t = Instant::now();
    let db = Database::builder(&path).open().unwrap();
    let ks = db.keyspace("records", KeyspaceCreateOptions::default).unwrap();
    let n = ks.iter().map(|g| { let (k, v) = g.into_inner().unwrap(); k.len() + v.len() }).count();
    let scan = t.elapsed().as_secs_f64();
    println!("fjall: reopen + scan {n} records: {scan:.2}s");
    [puts, bulk, scan]
}

fn main() {
    let dir = std::env::temp_dir().join("squall-engine-probe"); let _ = std::fs::remove_dir_all(&dir); std::fs::create_dir_all(&dir).unwrap();
    let redb = redb_run(&dir);
    let fjall = fjall_run(&dir);
    println!(
        "fjall / redb: group-committed puts/s {:.2}x, bulk-load time {:.2}x, restart-scan time {:.2}x",
        fjall[0] / redb[0],
        fjall[1] / redb[1],
        fjall[2] / redb[2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
