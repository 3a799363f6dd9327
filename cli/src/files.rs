//! The verbs of groups kept in files: MLS packets are read from and written to files and pipes,
//! so people can chat by exchanging bytes with no server at all.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use mlschat_node::profile::{Outgoing, Profile};
use mlschat_wire::packet::Packet;

use crate::args::{GroupCommand, OutArgs};
use crate::exit::{Exit, exit_code};
use crate::output::Action;
use crate::report::{self, Report};

pub fn group(
    profile: &mut Profile,
    report: &Report,
    command: GroupCommand,
) -> anyhow::Result<Exit> {
    match command {
        GroupCommand::Create { name } => report.group_created(&profile.create_group(&name)?),
        GroupCommand::Add {
            group,
            key_packages,
            out,
            welcome_out,
        } => {
            let welcome_out = welcome_out.context(
                "this group is kept in files: give --welcome-out FILE for the new members' Welcome",
            )?;
            let mut messages = Vec::new();
            for path in &key_packages {
                messages.push(read_key_package(Path::new(path))?);
            }
            let outgoing = profile.add_members(&profile.find_group(&group)?, &messages)?;
            deliver(profile, &out, Some(&welcome_out), &outgoing)?;
            report.committed(&out, &group, Action::Added, key_packages.len());
        }
        GroupCommand::Remove {
            group,
            members,
            out,
        } => {
            let outgoing = profile.remove_members(&profile.find_group(&group)?, &members)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Removed, members.len());
        }
        GroupCommand::Leave { group, out } => {
            let outgoing = profile.leave(&profile.find_group(&group)?)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Left, 1);
        }
        GroupCommand::Update { group, out } => {
            let outgoing = profile.self_update(&profile.find_group(&group)?)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Updated, 1);
        }
        GroupCommand::Set {
            group,
            name,
            topic,
            admin,
            not_admin,
            out,
        } => {
            let change = profile.settings_change(
                &profile.find_group(&group)?,
                name,
                topic,
                &admin,
                &not_admin,
            )?;
            let outgoing = profile.change_settings(&profile.find_group(&group)?, &change)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Changed, 1);
        }
        GroupCommand::List | GroupCommand::Members { .. } | GroupCommand::Rename { .. } => {
            unreachable!("answered by `daemon::local`")
        }
    }
    Ok(Exit::Ok)
}

/// How many packets `receive` processes per transaction (and fsync).
const RECEIVE_BATCH: usize = 64;

/// Processes every packet of every input, in batches that share one transaction; a bad packet
/// is reported and the others still processed. Results are printed once their batch is durable.
/// The exit code is that of the first failure.
pub fn receive(profile: &mut Profile, report: &Report, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let mut inputs: Vec<(String, Box<dyn Read>)> = Vec::new();
    if files.is_empty() {
        inputs.push(("stdin".into(), Box::new(io::stdin().lock())));
    }
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        inputs.push((
            path.display().to_string(),
            Box::new(io::BufReader::new(file)),
        ));
    }
    let mut first_failure = Exit::Ok;
    let mut fail = |error: anyhow::Error| {
        let code = exit_code(&error);
        report::error(report.json, &error, code);
        first_failure = first_failure.or(code);
    };
    for (source, mut input) in inputs {
        let mut end = false;
        while !end {
            let mut batch = Vec::with_capacity(RECEIVE_BATCH);
            let mut read_error = None;
            while batch.len() < RECEIVE_BATCH {
                match Packet::read_from(&mut input) {
                    Ok(Some(packet)) => batch.push(packet),
                    Ok(None) => {
                        end = true;
                        break;
                    }
                    Err(e) => {
                        read_error = Some(anyhow!(e).context(format!("reading {source}")));
                        end = true;
                        break;
                    }
                }
            }
            for result in profile.receive_batch(&batch)? {
                match result {
                    Ok(received) => report.received(&received),
                    Err(e) => fail(anyhow!(e)),
                }
            }
            if let Some(error) = read_error {
                fail(error);
            }
        }
    }
    Ok(first_failure)
}

/// Writes an operation's packets, then drops them from the outbox. If we die in between, they
/// stay in the outbox for `mlschat outbox`.
pub fn deliver(
    profile: &Profile,
    out: &OutArgs,
    welcome_out: Option<&Path>,
    outgoing: &Outgoing,
) -> anyhow::Result<()> {
    write_packets(out, &outgoing.to_group)?;
    if let (Some(path), Some(join)) = (welcome_out, &outgoing.to_joiners) {
        write_file(path, &join.encode()?)?;
    }
    profile.mark_sent(&outgoing.outbox)?;
    Ok(())
}

pub fn write_packets(out: &OutArgs, packets: &[Packet]) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    for packet in packets {
        bytes.extend(packet.encode()?);
    }
    match &out.out {
        Some(path) => write_file(path, &bytes),
        None => {
            let mut stdout = io::stdout().lock();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write binary MLS packets to a terminal: use --out FILE or a pipe"
                );
            }
            stdout.write_all(&bytes)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// Writes via a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read_key_package(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match Packet::read_from(&mut io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?
    {
        Some(Packet::Mls(message)) => Ok(message),
        _ => bail!("{} does not hold a KeyPackage", path.display()),
    }
}
