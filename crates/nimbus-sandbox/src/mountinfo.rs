//! Parsing of `/proc/self/mountinfo`, shared by cgroup detection and the helper's read-only pass.

use std::path::PathBuf;

/// One line of mountinfo, reduced to the fields this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Where the mount is visible (octal escapes such as `\040` decoded).
    pub mount_point: PathBuf,
    /// Per-mount options: `rw,nosuid,nodev,relatime`.
    pub mount_options: String,
    /// Filesystem type: `cgroup`, `cgroup2`, `tmpfs`, ...
    pub fs_type: String,
    /// Per-superblock options; for cgroup v1 these name the controllers (`rw,memory`).
    pub super_options: String,
}

impl MountEntry {
    pub fn has_mount_option(&self, opt: &str) -> bool {
        self.mount_options.split(',').any(|o| o == opt)
    }

    pub fn has_super_option(&self, opt: &str) -> bool {
        self.super_options.split(',').any(|o| o == opt)
    }
}

/// Parses mountinfo text; malformed lines are skipped rather than failing the whole table.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

pub(crate) fn read_self() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_string();
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("").to_string();
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: fields[5].to_string(),
        fs_type,
        super_options,
    })
}

/// The kernel escapes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 0:40 / /mnt/with\\040space rw,relatime - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_fields_and_skips_garbage() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(
            m[2].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(m[2].has_super_option("cpu"));
        assert!(m[2].has_super_option("cpuacct"));
        assert!(!m[2].has_super_option("memory"));
        assert!(m[2].has_mount_option("noexec"));
        assert_eq!(m[3].fs_type, "cgroup2");
    }

    #[test]
    fn decodes_octal_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
