//! The workspace lent to a root runner's worker uid with POSIX ACL entries,
//! where no idmapped mount can show it to that uid (no mount namespace: a
//! root runner under Docker's default profile, Podman as root, Kubernetes
//! `hostUsers: false`; or a file system without idmapped mounts).
//!
//! **Lending**, before the worker starts: every folder and regular file of
//! the workspace gets an entry `user:<uid>:<its owner's rights>`, and its
//! mask is recalculated so the entry takes effect. Every other entry keeps
//! its effective rights (the recalculated mask covers them as before). The
//! walk never follows a symbolic link (each step opens one name under the
//! folder's descriptor, `O_NOFOLLOW`), stays on the workspace's mount (its
//! device, and its mount id where the kernel tells it, Linux 5.8+: a bind of
//! the same file system inside the workspace has the same device) and goes
//! at most [`DEPTH`] folders deep. Skipped, and counted in the
//! [`Report`]: a file with more than one hard link (another name of it may
//! be outside the workspace), an ACL whose mask is narrower than its entries
//! (a recalculated mask could not be put back as it was), other mounts,
//! deeper folders. The worker cannot write what was skipped (it can still
//! remove or replace its name where the folder holding it is lent, as the
//! owner it appears as through an idmapped mount could).
//!
//! **Giving back**, at unload, once the worker's processes are gone: every
//! entry of that uid removed (the ACL back to its minimal form, the mode
//! alone, where nothing else remains), and every file, folder or link the
//! worker made (its uid or gid) given to the workspace folder's owner: the
//! operator sees what an idmapped mount would have shown. Through the
//! folder's descriptor opened to lend it (its path may lead elsewhere by
//! then), and however deep the worker went: folders past [`DEPTH`] are
//! walked afterwards from their own top, reopened name by name. An entry
//! that cannot be given back does not stop the rest; the first error is
//! returned and the ledger stays.
//!
//! **The ledger**, `<uid>.acl` beside the uid's lease lock
//! (`launch::IdLease`), is written before the first entry and removed after
//! the last is gone. A runner killed before its unload leaves it behind; the
//! next lease of that uid gives the workspace back first ([`sweep`]), by the
//! ledger's path: a folder moved away since is not found there, and keeps
//! the uid's entries (the folder now at that path, another inode, is left
//! alone).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use posix_acl::{PosixACL, Qualifier, ACL_EXECUTE, ACL_READ, ACL_WRITE};
use serde::{Deserialize, Serialize};

/// The extended attribute that holds a file's access ACL.
const ACCESS_ACL: &str = "system.posix_acl_access";

/// How many folders deep a workspace is lent (each level holds two
/// descriptors while the walk is in it).
pub const DEPTH: usize = 128;

/// What a lending or a giving back did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Folders and files that got (or lost) the worker's entry.
    pub entries: u64,
    /// Files or folders the worker made, given to the workspace's owner.
    pub given_to_owner: u64,
    /// Files with more than one hard link, not lent.
    pub linked: u64,
    /// Files and folders whose ACL mask is narrower than its entries, not lent.
    pub narrow_mask: u64,
    /// Mount points inside the workspace, not entered.
    pub other_mounts: u64,
    /// Folders deeper than [`DEPTH`], not entered.
    pub too_deep: u64,
}

impl Report {
    /// What was not lent, in words; None when everything was.
    pub fn skipped(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.linked, "files with more than one hard link"),
            (
                self.narrow_mask,
                "with an ACL mask narrower than its entries",
            ),
            (self.other_mounts, "mount points"),
            (self.too_deep, "folders deeper than 128"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// The ledger of one lending: enough to give the workspace back after the
/// runner that lent it is gone.
#[derive(Debug, Serialize, Deserialize)]
struct Ledger {
    /// The workspace folder, as bytes (a path need not be UTF-8).
    workspace: Vec<u8>,
    /// Its device and inode: a folder put in its place since is not touched.
    dev: u64,
    ino: u64,
    /// Its owner's uid and gid: what the worker made is given to them.
    owner: (u32, u32),
}

/// A workspace lent to a worker's uid, given back on drop (a failure is
/// said on stderr, and the ledger stays for the next lease of that uid).
#[derive(Debug)]
pub struct Lent {
    uid: u32,
    ledger: PathBuf,
    /// The workspace folder as it was opened to lend it: given back through
    /// it, wherever it is by then (its path may lead elsewhere since).
    root: fs::File,
    /// Its device and inode.
    folder: (u64, u64),
    book: Option<Ledger>,
    /// What the lending did.
    pub report: Report,
}

/// The ledger file of `uid` in `dir`.
pub fn ledger_of(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}.acl"))
}

/// Whether the workspace `ws` can be lent to another uid with ACL entries:
/// a folder other users may reach, on a file system with POSIX ACLs, whose
/// own ACL can be put back as it was. Asked by the probe; reads only.
pub fn usable(ws: &Path) -> Result<(), String> {
    let m = fs::metadata(ws).map_err(|e| e.to_string())?;
    if !m.is_dir() {
        return Err("not a folder".into());
    }
    if let Some(a) = ws
        .ancestors()
        .skip(1)
        .find(|a| fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0))
    {
        return Err(format!(
            "other users cannot enter {} on the way to it",
            a.display()
        ));
    }
    let acl = PosixACL::read_acl(ws).map_err(|e| match e.as_io_error() {
        Some(io) if io.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            "its file system does not support POSIX ACLs".to_string()
        }
        _ => format!("its ACL cannot be read: {e}"),
    })?;
    if narrow_mask(&acl) {
        return Err(
            "its own ACL has a mask narrower than its entries, which a lending could not put back"
                .into(),
        );
    }
    Ok(())
}

/// Lends the workspace `ws` to `uid` (see the module's doc), writing the
/// ledger in `ledger_dir` first.
pub fn lend(ws: &Path, uid: u32, ledger_dir: &Path) -> io::Result<Lent> {
    let root = open_dir(ws)?;
    let st = root.metadata()?;
    let book = Ledger {
        workspace: ws.as_os_str().as_bytes().to_vec(),
        dev: st.dev(),
        ino: st.ino(),
        owner: (st.uid(), st.gid()),
    };
    let ledger = ledger_of(ledger_dir, uid);
    write_ledger(&ledger, &book)?;
    let mut lent = Lent {
        uid,
        ledger,
        root: root.try_clone()?,
        folder: (st.dev(), st.ino()),
        book: Some(book),
        report: Report::default(),
    };
    let mut report = Report::default();
    Walk::new(&root, false)?.run(&root, &mut report, &mut |node, m, report| {
        let Node::Opened(fd) = node else {
            return Ok(());
        };
        if m.is_file() && m.nlink() > 1 {
            report.linked += 1;
            return Ok(());
        }
        let path = fd_path(fd);
        let mut acl = PosixACL::read_acl(&path).map_err(acl_io)?;
        if narrow_mask(&acl) {
            report.narrow_mask += 1;
            return Ok(());
        }
        acl.set(Qualifier::User(uid), owner_rights(m.mode()));
        acl.write_acl(&path).map_err(acl_io)?;
        report.entries += 1;
        Ok(())
    })?;
    lent.report = report;
    Ok(lent)
}

impl Lent {
    /// The lent folder's device and inode.
    pub fn folder(&self) -> (u64, u64) {
        self.folder
    }

    fn give_back_now(&mut self) -> io::Result<Report> {
        let Some(book) = self.book.take() else {
            return Ok(Report::default());
        };
        match give_back(&self.root, &book, self.uid) {
            Ok(report) => {
                remove_ledger(&self.ledger)?;
                Ok(report)
            }
            Err(e) => {
                self.book = Some(book);
                Err(e)
            }
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Err(e) = self.give_back_now() {
            eprintln!(
                "ext-runner: the workspace lent to uid {} could not be given back ({e}); its ledger {} stays, and the next lease of that uid tries again",
                self.uid,
                crate::support::terminal::escape(&self.ledger.to_string_lossy())
            );
        }
    }
}

/// Gives back a workspace a runner that is gone lent to `uid`, if its
/// ledger in `ledger_dir` says so. Called with the lease of `uid` held.
pub fn sweep(ledger_dir: &Path, uid: u32) -> io::Result<Option<Report>> {
    let ledger = ledger_of(ledger_dir, uid);
    // A temporary ledger left by a crash before its rename: nothing was
    // lent under it (the lending starts after the rename).
    remove_ledger(&ledger.with_extension("acl.tmp"))?;
    let Some(text) = gone_is_none(fs::read(&ledger))? else {
        return Ok(None);
    };
    let report = match serde_json::from_slice::<Ledger>(&text) {
        Ok(book) => {
            let ws = Path::new(std::ffi::OsStr::from_bytes(&book.workspace));
            // Gone, or no folder at that path any more (a file, a link):
            // not the one lent, as with another inode below.
            let Some(root) = folder_if_there(ws)? else {
                remove_ledger(&ledger)?;
                return Ok(Some(Report::default()));
            };
            give_back(&root, &book, uid)?
        }
        // Written whole and renamed into place, a ledger of this runner's
        // always parses: this one is not (another version's, a damaged
        // file). Its lending cannot be given back, so its uid stays out of
        // use until an operator has looked.
        Err(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the ledger cannot be read ({e}); remove it once no workspace carries ACL entries of uid {uid} (getfacl -R), or give them back by hand (setfacl -R -x u:{uid})"),
            ))
        }
    };
    remove_ledger(&ledger)?;
    Ok(Some(report))
}

/// Removes every entry of `uid` in the workspace `root` and gives what `uid`
/// made to its owner. A folder that is not the one lent (the ledger's path
/// leads elsewhere since) is left alone. An entry that cannot be given back
/// does not stop the walk: the rest is, and the first error is returned
/// (the ledger stays for a later try).
fn give_back(root: &fs::File, book: &Ledger, uid: u32) -> io::Result<Report> {
    let st = root.metadata()?;
    if (st.dev(), st.ino()) != (book.dev, book.ino) {
        return Ok(Report::default());
    }
    let (owner, group) = book.owner;
    let mut report = Report::default();
    let mut failed = None;
    Walk::new(root, true)?.run(root, &mut report, &mut |node, m, report| {
        if let Err(e) = give_back_one(node, m, uid, (owner, group), report) {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    match failed {
        None => Ok(report),
        Some(e) => Err(e),
    }
}

/// Gives one file, folder or link back (see [`give_back`]).
fn give_back_one(
    node: Node<'_>,
    m: &fs::Metadata,
    uid: u32,
    (owner, group): (u32, u32),
    report: &mut Report,
) -> io::Result<()> {
    if let Node::Opened(fd) = node {
        let path = fd_path(fd);
        let acl = PosixACL::read_acl(&path).map_err(acl_io)?;
        if acl.remove(Qualifier::User(uid)).is_some() {
            let mut acl = acl;
            let named = acl
                .entries()
                .iter()
                .any(|e| matches!(e.qual, Qualifier::User(_) | Qualifier::Group(_)));
            // Written with the mask recalculated, which leaves the
            // mode's group bits the owning group's again; then, with no
            // other entry left, the ACL removed: the mode alone, as before
            // (libacl's writes always keep a mask entry).
            acl.write_acl(&path).map_err(acl_io)?;
            if !named {
                use xattr::FileExt;
                match fd.remove_xattr(ACCESS_ACL) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                    Err(e) => return Err(e),
                }
            }
            report.entries += 1;
        }
    }
    let (u, g) = (m.uid() == uid, m.gid() == uid);
    if u || g {
        let (u, g) = (u.then_some(owner), g.then_some(group));
        match node {
            Node::Opened(fd) => std::os::unix::fs::fchown(fd, u, g)?,
            Node::Named(path) => std::os::unix::fs::lchown(path, u, g)?,
        }
        report.given_to_owner += 1;
    }
    Ok(())
}

/// One entry of the walk: a folder or regular file opened without following
/// a link, or anything else (a symbolic link, a socket) by a path through
/// its folder's descriptor, whose last step is not followed.
enum Node<'a> {
    Opened(&'a fs::File),
    Named(&'a Path),
}

type Visit<'v> = dyn FnMut(Node<'_>, &fs::Metadata, &mut Report) -> io::Result<()> + 'v;

/// Where a walk may go, and what it defers.
struct Walk {
    /// The workspace's device: nothing on another is visited.
    dev: u64,
    /// The workspace's mount (where the kernel says, Linux 5.8+): a bind of
    /// the same file system inside it has the same device, not the same
    /// mount, and is not visited either.
    mount: Option<u64>,
    /// The names from the walk's root down to the folder being walked.
    names: Vec<OsString>,
    /// Folders deeper than [`DEPTH`], by their names from the root, for a
    /// later round of their own (the giving back: what the worker made is
    /// given back however deep it is); None: counted as too deep (the
    /// lending).
    deeper: Option<Vec<Vec<OsString>>>,
}

impl Walk {
    fn new(root: &fs::File, deeper: bool) -> io::Result<Walk> {
        Ok(Walk {
            dev: root.metadata()?.dev(),
            mount: mount_of(root)?,
            names: Vec::new(),
            deeper: deeper.then(Vec::new),
        })
    }

    /// Whether `f` is on the workspace's mount, where the kernel can tell.
    fn on_the_mount(&self, f: &fs::File) -> io::Result<bool> {
        Ok(self.mount.is_none() || mount_of(f)? == self.mount)
    }

    /// Walks `root` (the workspace), then each folder deferred as deeper,
    /// from its own top.
    fn run(
        &mut self,
        root: &fs::File,
        report: &mut Report,
        visit: &mut Visit<'_>,
    ) -> io::Result<()> {
        walk(root, self, 0, report, visit)?;
        while let Some(names) = self.deeper.as_mut().and_then(Vec::pop) {
            if let Some(dir) = self.reopen(root, &names)? {
                self.names = names;
                walk(&dir, self, 0, report, visit)?;
            }
        }
        Ok(())
    }

    /// The folder `names` leads to from `root`, one name at a time without
    /// following a link and never onto another mount; None when it is not
    /// there any more.
    fn reopen(&self, root: &fs::File, names: &[OsString]) -> io::Result<Option<fs::File>> {
        let mut here = root.try_clone()?;
        for name in names {
            let Some(next) = folder_if_there(&fd_path(&here).join(name))? else {
                return Ok(None);
            };
            if next.metadata()?.dev() != self.dev || !self.on_the_mount(&next)? {
                return Ok(None);
            }
            here = next;
        }
        Ok(Some(here))
    }
}

/// Visits the folder `dir` (`depth` deep), then everything in it, never
/// through a symbolic link and never onto another mount.
fn walk(
    dir: &fs::File,
    w: &mut Walk,
    depth: usize,
    report: &mut Report,
    visit: &mut Visit<'_>,
) -> io::Result<()> {
    let here = fd_path(dir);
    let m = dir.metadata()?;
    visit(Node::Opened(dir), &m, report)?;
    for entry in fs::read_dir(&here)? {
        let entry = entry?;
        let path = here.join(entry.file_name());
        // lstat: the last step is not followed.
        let Some(m) = gone_is_none(fs::symlink_metadata(&path))? else {
            continue;
        };
        if m.dev() != w.dev {
            report.other_mounts += 1;
            continue;
        }
        if m.is_dir() {
            if depth + 1 >= DEPTH {
                match &mut w.deeper {
                    Some(later) => {
                        let mut names = w.names.clone();
                        names.push(entry.file_name());
                        later.push(names);
                    }
                    None => report.too_deep += 1,
                }
                continue;
            }
            let Some(sub) = gone_is_none(open_dir(&path))? else {
                continue;
            };
            if !same(&sub, &m)? {
                continue;
            }
            if !w.on_the_mount(&sub)? {
                report.other_mounts += 1;
                continue;
            }
            w.names.push(entry.file_name());
            walk(&sub, w, depth + 1, report, visit)?;
            w.names.pop();
        } else if m.is_file() {
            // Read-only, not blocking (were it swapped for a FIFO since the
            // lstat, the inode check below refuses it), no controlling tty.
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
                .open(&path);
            let Some(f) = gone_is_none(opened)? else {
                continue;
            };
            if !same(&f, &m)? {
                continue;
            }
            // A file bound onto a name of the workspace (`-v
            // /etc/secret:/ws/secret`) is a mount of its own.
            if !w.on_the_mount(&f)? {
                report.other_mounts += 1;
                continue;
            }
            visit(Node::Opened(&f), &m, report).map_err(|e| named(e, &w.names, &entry))?;
        } else {
            visit(Node::Named(&path), &m, report).map_err(|e| named(e, &w.names, &entry))?;
        }
    }
    Ok(())
}

/// `e` with the entry it happened on, by its path in the workspace
/// (escaped: a worker chose the name).
fn named(e: io::Error, folders: &[OsString], entry: &fs::DirEntry) -> io::Error {
    let mut p = PathBuf::new();
    p.extend(folders);
    p.push(entry.file_name());
    let shown = crate::support::terminal::escape(&p.to_string_lossy());
    io::Error::new(e.kind(), format!("{shown}: {e}"))
}

/// The mount `f` is on (its mount id), where the kernel says (Linux 5.8+).
fn mount_of(f: &fs::File) -> io::Result<Option<u64>> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    match statx(f, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
        Ok(st) if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID) => {
            Ok(Some(st.stx_mnt_id))
        }
        Ok(_) => Ok(None),
        Err(rustix::io::Errno::NOSYS) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An entry that vanished since its folder was read (NotFound) as None:
/// passed over, not an error.
fn gone_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `fd` is the file `m` was read of (not one put in its place since).
fn same(f: &fs::File, m: &fs::Metadata) -> io::Result<bool> {
    let now = f.metadata()?;
    Ok((now.dev(), now.ino()) == (m.dev(), m.ino()))
}

/// A folder, opened without following a link in its last step.
fn open_dir(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// [`open_dir`], or None where there is no folder at `path` any more (gone,
/// or a file or a link in its place).
fn folder_if_there(path: &Path) -> io::Result<Option<fs::File>> {
    match open_dir(path) {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The path of an open descriptor: reaches exactly that file, whatever has
/// been renamed or linked since (the `/proc/self/fd` entry is not a path
/// lookup).
fn fd_path(fd: &fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The owner's rights of `mode`, as ACL permission bits.
fn owner_rights(mode: u32) -> u32 {
    [(0o400, ACL_READ), (0o200, ACL_WRITE), (0o100, ACL_EXECUTE)]
        .iter()
        .filter(|(bit, _)| mode & bit != 0)
        .fold(0, |acc, (_, perm)| acc | perm)
}

/// Whether an ACL's mask leaves out rights its group-class entries have: a
/// mask recalculated after a lending could not be put back as it was.
fn narrow_mask(acl: &PosixACL) -> bool {
    let entries = acl.entries();
    let Some(mask) = entries.iter().find(|e| e.qual == Qualifier::Mask) else {
        return false;
    };
    let union = entries
        .iter()
        .filter(|e| {
            matches!(
                e.qual,
                Qualifier::GroupObj | Qualifier::User(_) | Qualifier::Group(_)
            )
        })
        .fold(0, |acc, e| acc | e.perm);
    union != mask.perm
}

fn acl_io(e: posix_acl::ACLError) -> io::Error {
    match e.as_io_error() {
        Some(io) => io::Error::new(io.kind(), e.to_string()),
        None => io::Error::other(e.to_string()),
    }
}

/// Writes the ledger durably before anything is lent: a temporary file,
/// synced, renamed into place, the folder synced.
fn write_ledger(path: &Path, book: &Ledger) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("acl.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(book).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

fn remove_ledger(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_rights_are_the_mode_owner_bits() {
        assert_eq!(owner_rights(0o640), ACL_READ | ACL_WRITE);
        assert_eq!(owner_rights(0o755), ACL_READ | ACL_WRITE | ACL_EXECUTE);
        assert_eq!(owner_rights(0o077), 0);
    }

    #[test]
    fn a_report_names_only_what_was_skipped() {
        assert_eq!(Report::default().skipped(), None);
        let r = Report {
            linked: 2,
            other_mounts: 1,
            ..Report::default()
        };
        assert_eq!(
            r.skipped().as_deref(),
            Some("2 files with more than one hard link, 1 mount points")
        );
    }
}
