//! Figures the kernel keeps in /proc as `Key:  N kB` lines (/proc/meminfo, /proc/PID/status).

/// The value of `key` in `file`, in bytes; None when the file or the key cannot be read.
pub fn bytes(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_and_the_machine() {
        let rss = super::bytes("/proc/self/status", "VmRSS").unwrap_or(0);
        let ram = super::bytes("/proc/meminfo", "MemTotal").unwrap_or(0);
        assert!(rss > 0 && ram > rss, "rss {rss}, ram {ram}");
        assert_eq!(super::bytes("/proc/meminfo", "NoSuchKey"), None);
    }
}
