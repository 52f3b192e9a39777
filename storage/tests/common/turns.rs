//! The simulated disk with time: each operation may first yield to the executor a number of
//! times (turns), so concurrent appends, writes and zero writes really overlap (on the plain
//! simulator every operation completes at once).

use std::{io, rc::Rc};

use keel_storage::io::{
    sim::{SimBuf, SimDir, SimFile},
    Dir, File, IoBuf,
};

/// An operation whose cost in turns a [`TurnsDir`] asks for.
pub enum Op<'a> {
    Write(&'a [u8]),
    Sync,
    SetLen,
    Allocate,
}

/// Turns an operation takes before it happens.
pub type Cost = fn(Op<'_>) -> usize;

#[derive(Clone)]
pub struct TurnsDir {
    dir: SimDir,
    cost: Cost,
}

pub struct TurnsFile {
    file: SimFile,
    cost: Cost,
}

impl TurnsDir {
    pub fn new(dir: SimDir, cost: Cost) -> Self {
        TurnsDir { dir, cost }
    }
}

async fn turns(n: usize) {
    for _ in 0..n {
        futures_lite::future::yield_now().await;
    }
}

impl Dir for TurnsDir {
    type File = TurnsFile;
    async fn open(&self, name: &str, create: bool) -> io::Result<TurnsFile> {
        let file = self.dir.open(name, create).await?;
        Ok(TurnsFile { file, cost: self.cost })
    }
    async fn remove(&self, name: &str) -> io::Result<()> {
        self.dir.remove(name).await
    }
    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.dir.rename(from, to).await
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.dir.list()
    }
    async fn sync(&self) -> io::Result<()> {
        self.dir.sync().await
    }
    fn describe(&self, name: &str) -> String {
        self.dir.describe(name)
    }
}

impl File for TurnsFile {
    type Buf = SimBuf;
    fn alloc_buf(&self, len: usize) -> SimBuf {
        self.file.alloc_buf(len)
    }
    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<()> {
        turns((self.cost)(Op::Write(buf.as_ref().as_slice()))).await;
        self.file.write_at(buf, pos).await
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read_at(pos, len).await
    }
    async fn sync_data(&self) -> io::Result<()> {
        turns((self.cost)(Op::Sync)).await;
        self.file.sync_data().await
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        turns((self.cost)(Op::SetLen)).await;
        self.file.set_len(len).await
    }
    async fn len(&self) -> io::Result<u64> {
        self.file.len().await
    }
    async fn allocate(&self, len: u64) -> io::Result<()> {
        turns((self.cost)(Op::Allocate)).await;
        self.file.allocate(len).await
    }
}
