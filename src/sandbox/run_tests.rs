//! run-tests: a harness (shipped with berth, run by the sandbox's own interpreter) reports
//! each case's actual value as it finishes; the verdicts are decided here, so expected
//! values never enter the sandbox. The harness's output is read as it streams, with a
//! deadline per case: a case that kills, stops or wedges the harness costs that case
//! alone, and the harness starts again from the next one with the code it loaded before.

use super::{Access, SandboxError, SandboxService};
use crate::agent::BoundedBody;
use crate::domain::evaluation::{judge, Checked, Language, RunTestsReport, RunTestsRequest};
use crate::domain::{SandboxId, TenantId};
use berth_runtime::harness::{self, HarnessCase, HarnessLine, HarnessRecord, HarnessSpec};
use berth_runtime::wire::{ExecEvent, ExecRequest};
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a harness may take to start and load the code (TypeScript is type-checked
/// then) before its first case.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);
/// Time past a case's own timeout before the supervisor stops waiting for the harness
/// (which kills the case itself at its timeout).
const CASE_GRACE: Duration = Duration::from_secs(2);
/// Longest harness line (a `ready` line carries the loaded code).
const MAX_LINE: usize = 32 * 1024 * 1024;
/// What one case adds to the event stream at most: its value (ASCII JSON, escaped once
/// more in the event line) and its stdout (escaped in the harness line, then again).
fn per_case_events(checked: &Checked) -> u64 {
    2 * checked.max_value + 12 * checked.max_stdout + 8192
}
/// Stderr kept to explain a harness that died.
const STDERR_TAIL: usize = 2000;

/// How one start of the harness ended.
enum Ended {
    /// Every case it was given was reported.
    Complete,
    /// It compiled the code and stopped, so the cases run in a fresh start (without the
    /// compiler's memory) given what it compiled.
    Compiled,
    /// The code does not compile: every case fails with this.
    CompileError(String),
    /// It stopped before reporting the case it was on.
    Broken(Broken),
}

/// Why a harness stopped early.
enum Broken {
    /// No line within the case's deadline (stopped, wedged in native code, …).
    Silent,
    /// It exited, or its stream broke off.
    Exited {
        exit_code: Option<i32>,
        signal: Option<i32>,
        oom_killed: bool,
        stderr: String,
    },
}

impl SandboxService {
    pub async fn run_tests(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        request: RunTestsRequest,
    ) -> Result<RunTestsReport, SandboxError> {
        let checked = request.check().map_err(SandboxError::Invalid)?;
        let started = Instant::now();
        let total = request.test_cases.len();
        let mut records: Vec<HarnessRecord> = Vec::with_capacity(total);
        // What the first start loaded, given to every later start.
        let mut modules: Option<Box<RawValue>> = None;
        while records.len() < total {
            let from = records.len();
            let spec = HarnessSpec {
                language: checked.language.as_str(),
                code: request.code.as_deref(),
                path: request.path.as_deref(),
                entrypoint: request.entrypoint.as_deref(),
                cases: request.test_cases[from..]
                    .iter()
                    .enumerate()
                    .map(|(k, case)| HarnessCase {
                        i: from + k,
                        input: case.input(),
                    })
                    .collect(),
                timeout_s: checked.timeout_s,
                max_stdout: checked.max_stdout,
                max_value: checked.max_value,
                memory_bytes: None,
                case_processes: None,
                modules: modules.as_deref(),
            };
            let (ended, loaded) = self
                .harness_once(tenant, id, &checked, spec, &mut records)
                .await?;
            let restart = modules.is_some();
            let started = loaded.is_some();
            if modules.is_none() {
                modules = loaded;
            }
            match ended {
                Ended::Complete | Ended::Compiled => {}
                Ended::CompileError(message) => {
                    fill(&mut records, total, &message);
                }
                // It never loaded: no case can run.
                Ended::Broken(why) if !restart && !started => {
                    fill(&mut records, total, &load_failure(checked.language, &why));
                }
                // It loaded once but not again (an earlier case changed the sandbox):
                // the cases left cannot run either, and none of them is to blame.
                Ended::Broken(why) if !started => {
                    let message = format!(
                        "the test harness could not start again after an earlier case ended it: {}",
                        load_failure(checked.language, &why)
                    );
                    fill(&mut records, total, &message);
                }
                Ended::Broken(why) => {
                    let i = records.len();
                    records.push(case_broke(i, &why, checked.timeout_s));
                }
            }
        }
        let results: Vec<_> = records
            .into_iter()
            .zip(&request.test_cases)
            .enumerate()
            .map(|(i, (record, case))| judge(i, case, record))
            .collect();
        let passed = results.iter().filter(|r| r.passed).count();
        Ok(RunTestsReport {
            passed,
            failed: results.len() - passed,
            total: results.len(),
            duration_ms: started.elapsed().as_millis() as u64,
            results,
        })
    }

    /// Starts the harness once on `spec`'s cases and reads its lines as they come,
    /// appending each case's record to `records`. Returns how it ended, and what it
    /// loaded if it got that far.
    async fn harness_once(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        checked: &Checked,
        mut spec: HarnessSpec<'_>,
        records: &mut Vec<HarnessRecord>,
    ) -> Result<(Ended, Option<Box<RawValue>>), SandboxError> {
        let call = self.call(tenant, id, Access::Mutating).await?;
        let cases = spec.cases.len() as u64;
        let sandbox = call.sandbox();
        let guarded = !sandbox.runtime.kills_on_the_hosts_memory_limit();
        spec.memory_bytes = guarded.then_some(sandbox.limits.memory_mb << 20);
        spec.case_processes = guarded.then_some(case_processes(sandbox.limits.memory_mb));
        let stdin =
            serde_json::to_string(&spec).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        let case_deadline = Duration::from_secs_f64(checked.timeout_s) + CASE_GRACE;
        let run_bound = LOAD_DEADLINE + case_deadline * cases as u32;
        let exec = ExecRequest {
            cmd: Some(runner(checked.language, call.sandbox().limits.memory_mb)),
            stdin: Some(stdin),
            timeout_s: Some(run_bound.as_secs_f64()),
            max_output_bytes: Some(cases * per_case_events(checked) + 2 * MAX_LINE as u64),
            kill_on_exit: true,
            ..Default::default()
        };
        let body = serde_json::to_vec(&exec).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        let bound = 4 * (cases * per_case_events(checked) + 2 * MAX_LINE as u64);
        let events = self.exec_events(call, body, bound, run_bound).await?;
        let mut reader = HarnessReader::new(events);
        let mut next = spec.cases.first().map_or(0, |c| c.i);
        let last = spec.cases.last().map_or(0, |c| c.i);
        let mut deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        let mut loaded = None;
        loop {
            let line = match tokio::time::timeout_at(deadline, reader.next_line()).await {
                // Dropping the stream kills the harness and everything it started.
                Err(_) => return Ok((Ended::Broken(Broken::Silent), loaded)),
                Ok(Err(why)) => return Ok((Ended::Broken(why), loaded)),
                Ok(Ok(line)) => line,
            };
            match HarnessLine::parse(&line) {
                Some(HarnessLine::Ready { modules }) => {
                    loaded = Some(modules.unwrap_or_else(harness::raw_null));
                    deadline = tokio::time::Instant::now() + case_deadline;
                }
                Some(HarnessLine::Compiled { modules }) => {
                    return Ok((Ended::Compiled, Some(modules)))
                }
                Some(HarnessLine::CompileError(message)) => {
                    return Ok((Ended::CompileError(message), loaded))
                }
                // Cases are reported in order; anything else is not the harness's.
                Some(HarnessLine::Case(record)) if record.i == next => {
                    records.push(within_bounds(record, checked));
                    if next == last {
                        return Ok((Ended::Complete, loaded));
                    }
                    next += 1;
                    deadline = tokio::time::Instant::now() + case_deadline;
                }
                _ => {}
            }
        }
    }
}

impl SandboxService {
    /// Runs the cases in a sandbox made for them from the language's template (from the
    /// warm pool when it has one ready), deleted afterwards: also when the run fails or
    /// the client leaves, and after the answer, so the caller does not wait for it.
    pub async fn run_tests_once(
        self: &Arc<Self>,
        tenant: &TenantId,
        request: RunTestsRequest,
    ) -> Result<RunTestsReport, SandboxError> {
        let checked = request.check().map_err(SandboxError::Invalid)?;
        let create = crate::domain::CreateSandboxRequest {
            image: Some(checked.language.template().into()),
            labels: std::collections::BTreeMap::from([(
                "berth.one-shot".to_string(),
                "execute".to_string(),
            )]),
            ..Default::default()
        }
        .parse(&self.config)
        .map_err(|e| SandboxError::Invalid(e.0))?;
        let sandbox = self.create(tenant, create, None).await?;
        let (this, tenant, id) = (self.clone(), tenant.clone(), sandbox.id.clone());
        super::detached(async move {
            let report = this.run_tests(&tenant, &id, request).await;
            tokio::spawn(async move {
                if let Err(e) = this.delete(&tenant, &id, false).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not delete a one-shot sandbox");
                }
            });
            report
        })
        .await
    }
}

/// The command that runs a language's harness. Node's heap is held below the sandbox's
/// memory, so a memory bomb ends in V8's own out-of-memory error rather than a kill.
/// Processes a case may start where the agent's guard holds memory (gVisor): a forked
/// Python holds 3 to 4 MiB of its own, so 1 per 8 MiB of the sandbox's memory keeps a
/// fork bomb well inside it.
fn case_processes(memory_mb: u64) -> u64 {
    (memory_mb / 8).clamp(16, 512)
}

fn runner(language: Language, memory_mb: u64) -> Vec<String> {
    match language {
        Language::Python => vec!["python3".into(), "-c".into(), harness::PYTHON.into()],
        Language::JavaScript | Language::TypeScript => vec![
            "node".into(),
            format!("--max-old-space-size={}", (memory_mb * 3 / 4).max(32)),
            "-e".into(),
            harness::NODE.into(),
        ],
    }
}

/// A record as the harness should have bounded it: a value or stdout past the run's
/// budget (only a broken harness sends one) is not kept.
fn within_bounds(record: HarnessRecord, checked: &Checked) -> HarnessRecord {
    let value_len = record.value.as_ref().map_or(0, |v| v.get().len() as u64);
    if value_len > checked.max_value + 1024
        || record.stdout.len() as u64 > checked.max_stdout + 1024
    {
        return error_record(
            record.i,
            "error",
            format!(
                "the returned value is larger than {} bytes as JSON",
                checked.max_value
            ),
        );
    }
    record
}

fn error_record(i: usize, status: &str, error: String) -> HarnessRecord {
    HarnessRecord {
        i,
        status: status.into(),
        value: None,
        error: Some(error),
        stdout: String::new(),
        duration_ms: 0,
    }
}

/// Every case from `records.len()` on fails with `message`.
fn fill(records: &mut Vec<HarnessRecord>, total: usize, message: &str) {
    while records.len() < total {
        let i = records.len();
        records.push(error_record(i, "error", message.to_string()));
    }
}

/// The record of the case a harness was on when it stopped.
fn case_broke(i: usize, why: &Broken, timeout_s: f64) -> HarnessRecord {
    match why {
        Broken::Silent => error_record(
            i,
            "timeout",
            format!("the case ran past its {timeout_s}s (and stopped the test harness)"),
        ),
        Broken::Exited {
            oom_killed: true, ..
        } => error_record(
            i,
            "memory",
            "killed for exceeding the sandbox's memory limit".into(),
        ),
        Broken::Exited { stderr, .. } if stderr.contains("heap out of memory") => error_record(
            i,
            "memory",
            "ran out of memory (the JavaScript heap limit, 3/4 of the sandbox's memory)".into(),
        ),
        Broken::Exited {
            exit_code, signal, ..
        } => {
            let how = match (signal, exit_code) {
                (Some(s), _) => format!("killed by signal {s}"),
                (None, Some(c)) => format!("exit code {c}"),
                (None, None) => "its output broke off".to_string(),
            };
            error_record(
                i,
                "error",
                format!("the case ended the test harness ({how})"),
            )
        }
    }
}

/// Why no case could run when the harness never loaded.
fn load_failure(language: Language, why: &Broken) -> String {
    match why {
        Broken::Silent => "the test harness did not start in time".into(),
        Broken::Exited {
            exit_code: Some(127),
            ..
        } => format!(
            "the sandbox's image has no {} (use the {} template, or an image that has it)",
            language.interpreter(),
            language.template()
        ),
        Broken::Exited { stderr, .. } => {
            format!("the test harness could not start: {}", stderr.trim())
        }
    }
}

/// Harness lines out of an exec's NDJSON event stream.
struct HarnessReader {
    events: BoundedBody,
    /// Bytes of event lines not yet complete.
    pending: Vec<u8>,
    /// Harness stdout not yet a complete line.
    line: String,
    /// Complete harness lines not yet returned.
    ready: std::collections::VecDeque<String>,
    stderr: String,
    ended: Option<Broken>,
}

impl HarnessReader {
    fn new(events: BoundedBody) -> Self {
        HarnessReader {
            events,
            pending: Vec::new(),
            line: String::new(),
            ready: Default::default(),
            stderr: String::new(),
            ended: None,
        }
    }

    /// The next complete line of the harness's stdout, or how it ended.
    async fn next_line(&mut self) -> Result<String, Broken> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Ok(line);
            }
            if let Some(ended) = self.ended.take() {
                return Err(ended);
            }
            match self.events.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                        self.take_events();
                    }
                }
                Some(Err(_)) | None => {
                    self.take_events();
                    if self.ended.is_none() {
                        self.ended = Some(self.exited(None, None, false));
                    }
                }
            }
        }
    }

    fn exited(&self, exit_code: Option<i32>, signal: Option<i32>, oom_killed: bool) -> Broken {
        Broken::Exited {
            exit_code,
            signal,
            oom_killed,
            stderr: self.stderr.clone(),
        }
    }

    /// Splits complete event lines out of `pending`.
    fn take_events(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let event: Option<ExecEvent> = serde_json::from_slice(&self.pending[..end]).ok();
            self.pending.drain(..=end);
            match event {
                Some(ExecEvent::Stdout { data }) => self.push_stdout(&data),
                Some(ExecEvent::Stderr { data }) => {
                    self.stderr.push_str(&data);
                    if self.stderr.len() > 2 * STDERR_TAIL {
                        let cut = self.stderr.len() - STDERR_TAIL;
                        let cut = (cut..self.stderr.len())
                            .find(|k| self.stderr.is_char_boundary(*k))
                            .unwrap_or(0);
                        self.stderr.drain(..cut);
                    }
                }
                Some(ExecEvent::Exit {
                    exit_code,
                    signal,
                    oom_killed,
                    ..
                }) => {
                    self.ended = Some(self.exited(exit_code, signal, oom_killed));
                }
                Some(ExecEvent::Error { message }) => {
                    self.stderr.push_str(&message);
                    self.ended = Some(self.exited(None, None, false));
                }
                Some(ExecEvent::Truncated { .. }) | None => {}
            }
        }
        if self.pending.len() > 2 * MAX_LINE {
            self.pending.clear();
            self.ended = Some(self.exited(None, None, false));
        }
    }

    fn push_stdout(&mut self, data: &str) {
        let mut rest = data;
        while let Some(end) = rest.find('\n') {
            self.line.push_str(&rest[..end]);
            self.ready.push_back(std::mem::take(&mut self.line));
            rest = &rest[end + 1..];
        }
        if self.line.len() + rest.len() > MAX_LINE {
            // Not a harness line; what follows the next newline may be.
            self.line.clear();
        } else {
            self.line.push_str(rest);
        }
    }
}
