//! Docker image references checked before Docker sees them (the reference grammar of
//! distribution/reference): `[domain[:port]/]path[:tag][@sha256:hex]`.

/// Longest reference accepted (Docker's limit is 255 for the name once normalized to
/// `docker.io/library/…`).
pub const MAX_LEN: usize = 200;

/// The same grammar as a regular expression, for the OpenAPI document.
pub const PATTERN: &str = concat!(
    // [domain/]path — a first component holding '.' or ':' before a '/' is a domain
    "^(?:(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)+(?::[0-9]{1,5})?",
    "|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]{1,5}|localhost)",
    "/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)",
    "|[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+",
    "|[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)",
    // [:tag][@digest]
    "(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
);

/// Whether `raw` is a reference Docker accepts.
pub fn is_valid(raw: &str) -> bool {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return false;
    }
    let (rest, digest) = match raw.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (raw, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !valid_tag(t)) {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && looks_like_domain(parts[0]) {
        if !valid_domain(parts[0]) {
            return false;
        }
        parts.remove(0);
    }
    !parts.is_empty() && parts.iter().all(|p| valid_path_component(p))
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn looks_like_domain(part: &str) -> bool {
    part.contains(['.', ':']) || part == "localhost"
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{is_valid, PATTERN};

    #[test]
    fn the_published_pattern_and_the_check_agree() {
        let re = regex::Regex::new(PATTERN).unwrap();
        let alphabet: Vec<char> = "aZ0-._:/@sha256:lhost".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize + 1;
            let candidate: String = (0..len)
                .map(|i| alphabet[((seed >> (i * 3 % 56)) as usize) % alphabet.len()])
                .collect();
            assert_eq!(
                re.is_match(&candidate),
                is_valid(&candidate),
                "{candidate:?}"
            );
        }
        for known in [
            "localhost:5000/a/b:v1",
            "a.b/c",
            "ab:12/c",
            "UPPER/case",
            "a_b/c__d",
            "x@sha256:",
        ] {
            assert_eq!(re.is_match(known), is_valid(known), "{known:?}");
        }
    }

    #[test]
    fn references_docker_accepts_pass_and_others_do_not() {
        for good in [
            "python",
            "berth/python:0123abcd",
            "myorg/tools:1",
            "localhost:5000/a/b:v1.2",
            "registry.example.com/team/img_x__y-z:latest",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid(good), "{good}");
        }
        let long = "0".repeat(256);
        for bad in [
            "³",
            "",
            "UPPER",
            "a//b",
            "a:",
            ":tag",
            "a:-tag",
            "a b",
            "a/",
            "-a",
            "a@sha256:xyz",
            "a..b",
            "host:99999999/a",
            long.as_str(),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
