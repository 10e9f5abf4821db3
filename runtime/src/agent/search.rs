//! Glob and grep over the sandbox's filesystem, bounded in results, file size and line
//! length so one request cannot make the agent's answer unbounded.

use super::error::AgentError;
use super::files::display_join;
use super::AgentState;
use crate::wire::{GlobRequest, GlobResult, GrepMatch, GrepRequest, GrepResult};
use globset::{Glob, GlobMatcher};
use std::io::{BufRead, BufReader};
use std::path::Path;

const DEFAULT_MAX_PATHS: usize = 10_000;
const DEFAULT_MAX_MATCHES: usize = 200;
const HARD_MAX_RESULTS: usize = 100_000;
/// Files larger than this are skipped by grep.
const MAX_GREP_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Matched lines are cut to this many characters.
const MAX_LINE_CHARS: usize = 2_000;

fn matcher(pattern: &str) -> Result<GlobMatcher, AgentError> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| AgentError::BadRequest(format!("bad glob pattern {pattern:?}: {e}")))
}

/// Directories never descended into (their content is rarely what a search wants).
fn skipped_dir(name: &std::ffi::OsStr) -> bool {
    name == ".git" || name == "node_modules" || name == "__pycache__"
}

fn walk(root: &Path) -> impl Iterator<Item = walkdir::DirEntry> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && skipped_dir(e.file_name())))
        .filter_map(|e| e.ok())
}

pub fn glob(state: &AgentState, req: &GlobRequest) -> Result<GlobResult, AgentError> {
    let root = state.resolve(&req.path)?;
    if !root.is_dir() {
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
    let mut paths = Vec::new();
    let mut truncated = false;
    for entry in walk(&root) {
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
    let root = state.resolve(&req.path)?;
    let meta = std::fs::metadata(&root).map_err(|e| AgentError::from_io(&root, e))?;
    let mut matches = Vec::new();
    let mut truncated = false;
    let files: Box<dyn Iterator<Item = (std::path::PathBuf, String)>> = if meta.is_file() {
        Box::new(std::iter::once((root.clone(), req.path.clone())))
    } else {
        let root = root.clone();
        let shown = req.path.clone();
        Box::new(
            walk(&root.clone())
                .filter(|e| e.file_type().is_file())
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
            if regex.is_match(text) {
                if matches.len() >= max {
                    truncated = true;
                    break 'files;
                }
                matches.push(GrepMatch {
                    path: shown.clone(),
                    line: number,
                    text: text.chars().take(MAX_LINE_CHARS).collect(),
                });
            }
        }
    }
    Ok(GrepResult { matches, truncated })
}

/// A NUL byte in the first 8 KiB means binary, as git and ripgrep decide.
fn looks_binary(reader: &mut BufReader<std::fs::File>) -> bool {
    match reader.fill_buf() {
        Ok(buf) => buf[..buf.len().min(8192)].contains(&0),
        Err(_) => true,
    }
}
