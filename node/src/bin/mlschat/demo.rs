//! `mlschat demo`: filled in below.
use crate::report::Report;
use std::path::Path;
pub fn run(_dir: Option<&Path>, _report: &Report) -> anyhow::Result<()> {
    anyhow::bail!("the demo is being written")
}
