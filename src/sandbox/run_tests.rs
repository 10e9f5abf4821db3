//! run-tests: a harness (shipped with berth, run by the sandbox's own interpreter) reports
//! each case's actual value; the verdicts are decided here, so expected values never
//! enter the sandbox.

use super::{Access, SandboxError, SandboxService};
use crate::domain::evaluation::{
    judge, Language, RunTestsReport, RunTestsRequest, MAX_CASE_STDOUT,
};
use crate::domain::{SandboxId, TenantId};
use berth_runtime::harness::{self, HarnessCase, HarnessRecord, HarnessSpec};
use berth_runtime::wire::{ExecRequest, ExecResult};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one case may add to the harness's output: its value (bounded by the harness) and
/// its stdout, escaped, plus slack.
const PER_CASE_OUTPUT: u64 = 256 * 1024 + 6 * MAX_CASE_STDOUT + 4096;
/// Most harness output one run may keep.
const MAX_RUN_OUTPUT: u64 = 16 * 1024 * 1024;

impl SandboxService {
    pub async fn run_tests(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &SandboxId,
        request: RunTestsRequest,
    ) -> Result<RunTestsReport, SandboxError> {
        let (language, timeout_s) = request.check().map_err(SandboxError::Invalid)?;
        let cases = request.test_cases.len();
        let spec = HarnessSpec {
            code: request.code.clone(),
            path: request.path.clone(),
            entrypoint: request.entrypoint.clone(),
            cases: request
                .test_cases
                .iter()
                .map(|c| HarnessCase {
                    input: c.input.clone(),
                })
                .collect(),
            timeout_s,
            max_stdout: MAX_CASE_STDOUT,
        };
        let cmd = match language {
            Language::Python => vec![
                "python3".to_string(),
                "-c".to_string(),
                harness::PYTHON.to_string(),
            ],
        };
        let cap = (cases as u64 * PER_CASE_OUTPUT).min(MAX_RUN_OUTPUT);
        let run_timeout = cases as f64 * (timeout_s + 0.5) + 10.0;
        let exec = ExecRequest {
            cmd: Some(cmd),
            stdin: Some(
                serde_json::to_string(&spec).map_err(|e| SandboxError::Invalid(e.to_string()))?,
            ),
            timeout_s: Some(run_timeout),
            max_output_bytes: Some(cap),
            ..Default::default()
        };
        let started = Instant::now();
        let call = self.call(tenant, id, Access::Mutating).await?;
        let body = serde_json::to_vec(&exec).map_err(|e| SandboxError::Invalid(e.to_string()))?;
        let deadline = Duration::from_secs_f64(run_timeout) + Duration::from_secs(15);
        let result: ExecResult = self
            .exec_json(&call, body, deadline, (4 * cap + 64 * 1024) as usize)
            .await?;
        let mut records = result
            .stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<HarnessRecord>(line).ok());
        let lost = lost_case(&result);
        let results: Vec<_> = request
            .test_cases
            .iter()
            .enumerate()
            .map(|(i, case)| judge(i, case, records.next().unwrap_or_else(|| lost.clone())))
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
}

impl SandboxService {
    /// Runs the cases in a sandbox made for them from `image`, deleted afterwards (also
    /// when the run fails, and on its own task if the client leaves).
    pub async fn run_tests_once(
        self: &Arc<Self>,
        tenant: &TenantId,
        image: &str,
        request: RunTestsRequest,
    ) -> Result<RunTestsReport, SandboxError> {
        let create = crate::domain::CreateSandboxRequest {
            image: Some(image.into()),
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
            if let Err(e) = this.delete(&tenant, &id, false).await {
                tracing::warn!(sandbox = %id, error = %e, "could not delete a one-shot sandbox");
            }
            report
        })
        .await
    }
}

/// The record of a case the harness never reported (it could not start, or was stopped).
fn lost_case(result: &ExecResult) -> HarnessRecord {
    let error = if result.exit_code == Some(127) {
        "the sandbox's image has no python3 (use the python template, or an image with python3)"
            .to_string()
    } else if result.timed_out {
        "the run ran past its time before this case".to_string()
    } else {
        let tail: String = result
            .stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("the test harness stopped before this case: {}", tail.trim())
    };
    HarnessRecord {
        status: "error".into(),
        value: None,
        error: Some(error),
        stdout: String::new(),
        duration_ms: 0,
    }
}
