//! Glob and grep over the sandbox's filesystem, bounded in results, file size and line
//! length so one request cannot make the agent's answer unbounded.

use super::error::AgentError;
use super::files::display_join;
use super::AgentState;
use crate::wire::{GlobRequest, GlobResult, GrepMatch, GrepRequest, GrepResult};
use globset::{Glob, GlobMatcher};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const DEFAULT_MAX_PATHS: usize = 10_000;
const DEFAULT_MAX_MATCHES: usize = 200;
const HARD_MAX_RESULTS: usize = 100_000;
/// Files larger than this are skipped by grep.
const MAX_GREP_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Matched lines are cut to this many characters, around the first match.
const MAX_LINE_CHARS: usize = 2_000;

fn matcher(pattern: &str) -> Result<GlobMatcher, AgentError> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| AgentError::BadRequest(format!("bad glob pattern {pattern:?}: {e}")))
}

/// Directories of installed dependencies and tool caches: skipped unless asked for.
const VENDORED_DIRS: &[&str] = &[
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "site-packages",
    ".git",
];

fn is_hidden(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
}

/// A directory that is not reached through a symlink (the walk does not follow links).
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn is_vendored(name: &OsStr) -> bool {
    VENDORED_DIRS.iter().any(|v| name == *v)
}

/// What a search walks and which filters apply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    /// Where result paths are relative to (the request's `path`).
    base: PathBuf,
    /// Where the walk starts: `base`, or deeper when the pattern begins with literal
    /// directory names (`src/**/*.py` walks `src` only).
    start: PathBuf,
    /// No filter but `.git`: `include_ignored`, or a path or literal pattern prefix that
    /// names a hidden or vendored directory (the caller asked for it explicitly).
    everything: bool,
    /// Hidden or vendored names the pattern spells out (`**/.env`): not skipped, and
    /// `.gitignore` rules are off (such files are usually gitignored).
    named: Vec<OsString>,
}

fn scope(base: &Path, shown: &str, pattern: Option<&str>, include_ignored: bool) -> Scope {
    let asks_for = |name: &OsStr| is_hidden(name) || is_vendored(name);
    let mut everything = include_ignored
        || Path::new(shown)
            .components()
            .any(|c| matches!(c, Component::Normal(n) if asks_for(n)));
    let mut start = base.to_path_buf();
    let mut named = Vec::new();
    if let Some(pattern) = pattern {
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut in_prefix = true;
        for (i, part) in parts.iter().enumerate() {
            let literal = !part.is_empty()
                && *part != "."
                && *part != ".."
                && !part.contains(['*', '?', '[', ']', '{', '}', '\\']);
            let name = OsStr::new(part);
            if in_prefix && literal && i + 1 < parts.len() && is_real_dir(&start.join(part)) {
                start.push(part);
                everything |= asks_for(name);
                continue;
            }
            in_prefix = false;
            if literal && asks_for(name) {
                named.push(name.to_os_string());
            }
        }
    }
    Scope {
        base: base.to_path_buf(),
        start,
        everything,
        named,
    }
}

/// Entries under `scope.start` (not the start itself), in a stable order: depth first,
/// siblings sorted by name. Hidden entries, vendored directories and what
/// `.gitignore`/`.ignore` files exclude are skipped unless the scope says otherwise;
/// `.git` always is. Symlinks are not followed.
fn walk(scope: &Scope) -> impl Iterator<Item = ignore::DirEntry> {
    let everything = scope.everything;
    let gitignore = !everything && scope.named.is_empty();
    let named = scope.named.clone();
    let mut builder = ignore::WalkBuilder::new(&scope.start);
    builder
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .require_git(false)
        .git_global(false)
        .git_ignore(gitignore)
        .git_exclude(gitignore)
        .ignore(gitignore)
        .parents(gitignore)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            let name = entry.file_name();
            if name == ".git" {
                return false;
            }
            if everything || named.iter().any(|n| n == name) {
                return true;
            }
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_hidden(name) || is_dir && is_vendored(name))
        });
    builder
        .build()
        .filter_map(Result::ok)
        .filter(|e| e.depth() > 0)
}

pub fn glob(state: &AgentState, req: &GlobRequest) -> Result<GlobResult, AgentError> {
    glob_at(&state.resolve(&req.path)?, req)
}

/// `glob` with `req.path` already resolved to `root`.
fn glob_at(root: &Path, req: &GlobRequest) -> Result<GlobResult, AgentError> {
    let root = root.to_path_buf();
    let meta = std::fs::metadata(&root).map_err(|e| AgentError::from_io(&root, e))?;
    if !meta.is_dir() {
        return Err(AgentError::BadRequest(format!(
            "{} is not a directory",
            req.path
        )));
    }
    let matcher = matcher(&req.pattern)?;
    let max = req
        .max_results
        .unwrap_or(DEFAULT_MAX_PATHS)
        .min(HARD_MAX_RESULTS);
    let scope = scope(&root, &req.path, Some(&req.pattern), req.include_ignored);
    let mut paths = Vec::new();
    let mut truncated = false;
    for entry in walk(&scope) {
        let rel = entry.path().strip_prefix(&root).unwrap_or(entry.path());
        if matcher.is_match(rel) {
            if paths.len() >= max {
                truncated = true;
                break;
            }
            paths.push(display_join(&req.path, &rel.to_string_lossy()));
        }
    }
    Ok(GlobResult { paths, truncated })
}

pub fn grep(state: &AgentState, req: &GrepRequest) -> Result<GrepResult, AgentError> {
    grep_at(&state.resolve(&req.path)?, req)
}

/// `grep` with `req.path` already resolved to `root`.
fn grep_at(root: &Path, req: &GrepRequest) -> Result<GrepResult, AgentError> {
    let root = root.to_path_buf();
    let regex = regex::RegexBuilder::new(&req.pattern)
        .case_insensitive(req.case_insensitive)
        .size_limit(10 * 1024 * 1024)
        .build()
        .map_err(|e| AgentError::BadRequest(format!("bad regex: {e}")))?;
    let file_glob = req.glob.as_deref().map(matcher).transpose()?;
    let max = req
        .max_results
        .unwrap_or(DEFAULT_MAX_MATCHES)
        .min(HARD_MAX_RESULTS);
    let meta = std::fs::metadata(&root).map_err(|e| AgentError::from_io(&root, e))?;
    let mut matches = Vec::new();
    let mut truncated = false;
    let files: Box<dyn Iterator<Item = (PathBuf, String)>> = if meta.is_file() {
        Box::new(std::iter::once((root.clone(), req.path.clone())))
    } else {
        let scope = scope(&root, &req.path, req.glob.as_deref(), req.include_ignored);
        let shown = req.path.clone();
        Box::new(
            walk(&scope)
                .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
                .filter_map(move |e| {
                    let rel = e.path().strip_prefix(&root).ok()?.to_path_buf();
                    if let Some(g) = &file_glob {
                        if !g.is_match(&rel) && !g.is_match(e.file_name()) {
                            return None;
                        }
                    }
                    Some((
                        e.path().to_path_buf(),
                        display_join(&shown, &rel.to_string_lossy()),
                    ))
                }),
        )
    };
    'files: for (path, shown) in files {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if file
            .metadata()
            .map(|m| m.len() > MAX_GREP_FILE_BYTES)
            .unwrap_or(true)
        {
            continue;
        }
        let mut reader = BufReader::new(file);
        if looks_binary(&mut reader) {
            continue;
        }
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            number += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if let Some(found) = regex.find(text) {
                if matches.len() >= max {
                    truncated = true;
                    break 'files;
                }
                matches.push(GrepMatch {
                    path: shown.clone(),
                    line: number,
                    text: clip_line(text, found.start(), found.end(), MAX_LINE_CHARS),
                });
            }
        }
    }
    Ok(GrepResult { matches, truncated })
}

/// `text` cut to at most `max` characters around the match at bytes `start..end`,
/// with `…` where something was cut (the markers count towards `max`). Cuts fall on
/// character boundaries.
fn clip_line(text: &str, start: usize, end: usize, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(2).max(1);
    let chars_before = |byte: usize| text.get(..byte).map_or(0, |s| s.chars().count());
    let (m_start, m_end) = (
        chars_before(start),
        chars_before(end).max(chars_before(start)),
    );
    let width = m_end - m_start;
    let first = if width >= room {
        m_start
    } else {
        m_start.saturating_sub((room - width) / 2)
    };
    let first = first.min(total - room);
    let last = first + room;
    let mut out = String::with_capacity(room * 4 + 6);
    if first > 0 {
        out.push('…');
    }
    out.extend(text.chars().skip(first).take(room));
    if last < total {
        out.push('…');
    }
    out
}

/// A NUL byte in the first 8 KiB means binary, as git and ripgrep decide.
fn looks_binary(reader: &mut BufReader<std::fs::File>) -> bool {
    match reader.fill_buf() {
        Ok(buf) => buf[..buf.len().min(8192)].contains(&0),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let files = [
            ("src/app.py", "import os\nNEEDLE = 1\n"),
            ("src/build/gen.py", "NEEDLE = 'generated'\n"),
            (".venv/lib/site.py", "NEEDLE = 'venv'\n"),
            (".venv/.gitignore", "*\n"),
            ("node_modules/pkg/index.py", "NEEDLE = 'node'\n"),
            ("venv/x.py", "NEEDLE = 'venv2'\n"),
            ("pkg/__pycache__/m.py", "NEEDLE = 'cache'\n"),
            (".hidden/h.py", "NEEDLE = 'hidden'\n"),
            (".env", "NEEDLE=secret\n"),
            (".git/config.py", "NEEDLE = 'git'\n"),
            ("logs/out.py", "NEEDLE = 'ignored by .gitignore'\n"),
            (".gitignore", "logs/\nsrc/build/\n"),
        ];
        for (name, content) in files {
            let path = tmp.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        tmp
    }

    fn glob_req(pattern: &str, path: &str, include_ignored: bool) -> GlobRequest {
        GlobRequest {
            pattern: pattern.into(),
            path: path.into(),
            max_results: None,
            include_ignored,
        }
    }

    fn grep_req(pattern: &str, glob: Option<&str>, include_ignored: bool) -> GrepRequest {
        GrepRequest {
            pattern: pattern.into(),
            path: ".".into(),
            glob: glob.map(Into::into),
            max_results: None,
            case_insensitive: false,
            include_ignored,
        }
    }

    fn grep_paths(root: &Path, req: &GrepRequest) -> Vec<String> {
        grep_at(root, req)
            .unwrap()
            .matches
            .into_iter()
            .map(|m| m.path)
            .collect()
    }

    #[test]
    fn glob_skips_hidden_vendored_and_gitignored_paths_by_default() {
        let tmp = project();
        let found = glob_at(tmp.path(), &glob_req("**/*.py", ".", false)).unwrap();
        assert_eq!(found.paths, ["src/app.py"]);
        let all = glob_at(tmp.path(), &glob_req("**/*.py", ".", true)).unwrap();
        assert_eq!(
            all.paths,
            [
                ".hidden/h.py",
                ".venv/lib/site.py",
                "logs/out.py",
                "node_modules/pkg/index.py",
                "pkg/__pycache__/m.py",
                "src/app.py",
                "src/build/gen.py",
                "venv/x.py",
            ],
            ".git is never searched"
        );
    }

    #[test]
    fn glob_searches_what_the_pattern_or_path_names_explicitly() {
        let tmp = project();
        let venv = glob_at(tmp.path(), &glob_req(".venv/**/*.py", ".", false)).unwrap();
        assert_eq!(venv.paths, [".venv/lib/site.py"]);
        let by_path = glob_at(
            &tmp.path().join(".venv"),
            &glob_req("**/*.py", ".venv", false),
        );
        assert_eq!(by_path.unwrap().paths, [".venv/lib/site.py"]);
        let env = glob_at(tmp.path(), &glob_req("**/.env", ".", false)).unwrap();
        assert_eq!(env.paths, [".env"]);
        let node = glob_at(tmp.path(), &glob_req("node_modules/*/index.py", ".", false)).unwrap();
        assert_eq!(node.paths, ["node_modules/pkg/index.py"]);
    }

    #[test]
    fn glob_and_grep_answer_404_for_a_missing_path() {
        let tmp = project();
        let missing = tmp.path().join("nope");
        assert!(matches!(
            glob_at(&missing, &glob_req("*", "nope", false)),
            Err(AgentError::NotFound(_))
        ));
        let mut req = grep_req("x", None, false);
        req.path = "nope".into();
        assert!(matches!(
            grep_at(&missing, &req),
            Err(AgentError::NotFound(_))
        ));
        assert!(matches!(
            glob_at(&tmp.path().join(".env"), &glob_req("*", ".env", false)),
            Err(AgentError::BadRequest(_))
        ));
    }

    #[test]
    fn grep_skips_ignored_paths_unless_asked() {
        let tmp = project();
        assert_eq!(
            grep_paths(tmp.path(), &grep_req("NEEDLE", None, false)),
            ["src/app.py"]
        );
        let all = grep_paths(tmp.path(), &grep_req("NEEDLE", None, true));
        assert_eq!(all.len(), 9, "{all:?}");
        assert!(all.iter().all(|p| !p.starts_with(".git/")), "{all:?}");
        assert_eq!(
            grep_paths(tmp.path(), &grep_req("NEEDLE", Some(".env"), false)),
            [".env"]
        );
    }

    #[test]
    fn long_lines_are_clipped_around_the_match() {
        let tmp = tempfile::tempdir().unwrap();
        let line = format!("{}NEEDLE{}", "é".repeat(5_000), "x".repeat(5_000));
        std::fs::write(tmp.path().join("min.js"), format!("{line}\n")).unwrap();
        let found = grep_at(tmp.path(), &grep_req("NEEDLE", None, false)).unwrap();
        let text = &found.matches[0].text;
        assert!(text.contains("NEEDLE"), "the match is kept");
        assert!(text.starts_with('…') && text.ends_with('…'));
        assert!(
            text.chars().count() <= MAX_LINE_CHARS,
            "{}",
            text.chars().count()
        );
        let clipped = clip_line("abcdefghij", 8, 9, 6);
        assert_eq!(clipped, "…ghij");
        assert_eq!(clip_line("abcdefghij", 0, 1, 6), "abcd…");
        assert_eq!(clip_line("short", 0, 1, 6), "short");
        assert_eq!(clip_line("ééééééééé", 8, 10, 5), "…ééé…");
    }
}
