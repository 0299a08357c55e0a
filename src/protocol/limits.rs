//! Bounds on what an agent reports: activity names and details, job ids, progress.

use super::Job;

/// Longest activity name, in bytes.
pub const MAX_ACTIVITY: usize = 64;
/// Longest activity detail or job error, in bytes.
pub const MAX_DETAIL: usize = 1024;
/// Longest job id, in bytes.
pub const MAX_JOB_ID: usize = 128;

/// Whether an activity report is within the bounds (the server refuses it otherwise, with
/// `invalid_field` and this message).
pub fn check_activity(activity: &str, detail: Option<&str>) -> Result<(), String> {
    if activity.is_empty() || activity.len() > MAX_ACTIVITY {
        return Err(format!("activity must be 1-{MAX_ACTIVITY} bytes"));
    }
    if detail.is_some_and(|d| d.len() > MAX_DETAIL) {
        return Err(format!("detail must be at most {MAX_DETAIL} bytes"));
    }
    Ok(())
}

/// Whether a job report is within the bounds (as [`check_activity`]).
pub fn check_job(j: &Job) -> Result<(), String> {
    if j.job.is_empty() || j.job.len() > MAX_JOB_ID {
        return Err(format!("job must be 1-{MAX_JOB_ID} bytes"));
    }
    if j.progress.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err("progress must be between 0 and 1".into());
    }
    if j.error.as_ref().is_some_and(|e| e.len() > MAX_DETAIL) {
        return Err(format!("error must be at most {MAX_DETAIL} bytes"));
    }
    Ok(())
}
