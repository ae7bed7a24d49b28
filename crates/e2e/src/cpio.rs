//! A writer for cpio archives in the "newc" format, the format the Linux kernel unpacks as an
//! initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the path
//! with a NUL, padding to a multiple of four, the data, and padding again; a `TRAILER!!!` entry
//! ends the archive. Entries carry owner root, mtime 0 and increasing inode numbers, so the same
//! entries always give the same bytes. Because the archive is written here, it may hold device
//! nodes (`/dev/console`) without any privilege.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Builds a newc archive in memory.
#[derive(Debug)]
pub struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

/// The fields of one header that vary between entries.
struct Header<'a> {
    path: &'a str,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
}

impl Default for CpioWriter {
    fn default() -> Self {
        CpioWriter::new()
    }
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> CpioWriter {
        CpioWriter {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory (`path` without a leading `/`, e.g. `dev` or `etc/tether`).
    pub fn dir(&mut self, path: &str, perm: u32) {
        let header = Header {
            path,
            mode: S_IFDIR | perm,
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        };
        self.entry(&header, &[]);
    }

    /// A regular file with `data` and permission bits `perm` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let header = Header {
            path,
            mode: S_IFREG | perm,
            nlink: 1,
            size: data.len(),
            rdev: (0, 0),
        };
        self.entry(&header, data);
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let mode = S_IFLNK | 0o777;
        let header = Header {
            path,
            mode,
            nlink: 1,
            size: target.len(),
            rdev: (0, 0),
        };
        self.entry(&header, target.as_bytes());
    }

    /// A character device node with the given major and minor numbers.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let header = Header {
            path,
            mode: S_IFCHR | perm,
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        };
        self.entry(&header, &[]);
    }

    /// Writes the trailer and returns the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let header = Header {
            path: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.write_header(&header, 0);
        self.out
    }

    fn entry(&mut self, header: &Header<'_>, data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_header(header, ino);
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn write_header(&mut self, header: &Header<'_>, ino: u32) {
        // A size over 4 GiB cannot be written; images are a few MiB.
        let size = u32::try_from(header.size).unwrap_or(u32::MAX);
        let name_size = u32::try_from(header.path.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            ino,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            size,
            0, // dev major
            0, // dev minor
            header.rdev.0,
            header.rdev.1,
            name_size,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(header.path.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// One entry read back from an archive.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Entry {
    pub path: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Reads back every entry, checking the layout rules as it goes.
#[cfg(test)]
pub(crate) fn parse(archive: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(at % 4, 0, "entry not 4-byte aligned");
        assert_eq!(&archive[at..at + 6], b"070701");
        let field = |i: usize| {
            let s = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (mode, size, rdev, name_size) = (
            field(1),
            field(6) as usize,
            (field(9), field(10)),
            field(11) as usize,
        );
        let name_at = at + 110;
        let name = std::str::from_utf8(&archive[name_at..name_at + name_size - 1]).unwrap();
        assert_eq!(
            archive[name_at + name_size - 1],
            0,
            "name not NUL-terminated"
        );
        let data_at = (name_at + name_size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            assert_eq!(archive.len(), data_at.next_multiple_of(4));
            return entries;
        }
        let data = archive[data_at..data_at + size].to_vec();
        entries.push(Entry {
            path: name.to_string(),
            mode,
            rdev,
            data,
        });
        at = (data_at + size).next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_with_their_types_and_data() {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755);
        w.file("bin/busybox", 0o755, b"\x7fELF and more");
        w.symlink("bin/sh", "busybox");
        w.char_device("dev/console", 0o600, 5, 1);
        w.file("empty", 0o644, b"");
        let entries = parse(&w.finish());
        let names: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev/console", "empty"]
        );
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!(entries[1].mode, 0o100_755);
        assert_eq!(entries[1].data, b"\x7fELF and more");
        assert_eq!(entries[2].mode, 0o120_777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!((entries[3].mode, entries[3].rdev), (0o020_600, (5, 1)));
        assert!(entries[4].data.is_empty());
    }

    #[test]
    fn padding_holds_for_every_name_and_data_length() {
        let mut w = CpioWriter::new();
        for n in 0..9 {
            w.file(&"x".repeat(n + 1), 0o644, &vec![b'a'; n]);
        }
        let entries = parse(&w.finish());
        assert_eq!(entries.len(), 9);
        for (n, entry) in entries.iter().enumerate() {
            assert_eq!(entry.data.len(), n);
        }
    }

    #[test]
    fn same_entries_give_the_same_bytes() {
        let build = || {
            let mut w = CpioWriter::new();
            w.file("init", 0o755, b"#!/bin/sh\n");
            w.finish()
        };
        assert_eq!(build(), build());
    }

    /// GNU cpio, where installed, lists exactly the entries written (an independent reader).
    #[test]
    fn gnu_cpio_reads_the_archive() {
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return; // cpio not installed: the parser above still checks the layout
        };
        let mut w = CpioWriter::new();
        w.dir("etc", 0o755);
        w.file("etc/a.conf", 0o644, b"KEY=value\n");
        w.symlink("etc/b", "a.conf");
        w.char_device("console", 0o600, 5, 1);
        let archive = w.finish();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["etc", "etc/a.conf", "etc/b", "console"]
        );
    }
}
