//! `deja pack` and `deja unpack`, and packs named where a trace is expected.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use trace_format::{pack, TraceRoot};

/// The trace a TRACE argument names: a trace directory or name as [`TraceRoot::resolve`]
/// finds it, or a pack file, unpacked once into the user's cache (`pack::unpack_cached`).
pub fn resolve(trace: Option<&str>) -> Result<PathBuf> {
    let root = TraceRoot::from_env()?;
    let path = root.resolve(trace)?;
    if path.is_dir() {
        return Ok(path);
    }
    if !pack::is_pack(&path) {
        bail!(
            "{} is neither a trace directory nor a deja pack",
            path.display()
        );
    }
    pack::unpack_cached(&path, &root)
}

/// An error about a trace unpacked from the pack `trace` names, that the trace is not the
/// user's, made to name the pack rather than the cache it was unpacked into.
pub fn name_pack(e: anyhow::Error, trace: Option<&str>) -> anyhow::Error {
    let Some(file) = trace.map(Path::new).filter(|p| p.is_file()) else {
        return e;
    };
    match e.downcast::<trace_format::TraceError>() {
        Ok(trace_format::TraceError::Untrusted { key_id, digest, .. }) => {
            trace_format::TraceError::Untrusted {
                path: file.to_path_buf(),
                key_id,
                digest,
            }
            .into()
        }
        Ok(other) => other.into(),
        Err(e) => e,
    }
}

/// `deja pack`: packs the trace `trace` names into `output` (default `<trace name>.deja` in
/// the current directory) and says where, how large, and the trace's digest.
pub fn pack_cmd(trace: Option<&str>, output: Option<PathBuf>) -> Result<()> {
    let dir = TraceRoot::from_env()?.resolve(trace)?;
    if !dir.is_dir() {
        bail!("{} is not a trace directory", dir.display());
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "trace".into());
    let out = output.unwrap_or_else(|| PathBuf::from(format!("{name}.deja")));
    let start = std::time::Instant::now();
    // A progress bar on stderr when it is a terminal.
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "deja: packing {bar:20} {bytes}/{total_bytes} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let packed = pack::pack(&dir, &out, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let packed = packed.with_context(|| format!("packing {}", dir.display()))?;
    eprintln!(
        "deja: packed {} into {} ({}, {} stored files, {} before compression, {:.1} s)",
        dir.display(),
        out.display(),
        human(packed.bytes),
        packed.files,
        human(packed.raw_bytes),
        start.elapsed().as_secs_f64()
    );
    match &packed.manifest.digest {
        Some(d) => eprintln!(
            "deja: the trace's digest is {d}\ndeja: replay it anywhere with: deja replay --digest {d} {}",
            out.display()
        ),
        None => eprintln!("deja: the trace has no seal (its recording never finished, or an older deja made it)"),
    }
    Ok(())
}

/// `deja unpack`: unpacks `file` into `dir` (which must not exist, or be empty), by default a
/// new trace `<program>-N` in the trace root; prints the trace directory on stdout.
pub fn unpack_cmd(file: &Path, dir: Option<PathBuf>) -> Result<()> {
    let Some(d) = dir else {
        // Into a temporary directory of the root, renamed to `<program>-N` after the name
        // the pack's manifest gives (`<program>-M`).
        let root = TraceRoot::from_env()?;
        let tmp = root.path().join(format!(".unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        make_private_dir(&tmp)?;
        let result = pack::unpack(file, &tmp).and_then(|m| {
            let base = m
                .name
                .rsplit_once('-')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(m.name.as_str(), |(b, _)| b)
                .to_string();
            let dest = root.new_trace_dir(&base)?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
            Ok(dest)
        });
        let _ = std::fs::remove_dir_all(&tmp);
        println!("{}", result?.display());
        return Ok(());
    };
    let existed = d.exists();
    if existed {
        let empty = std::fs::read_dir(&d)
            .with_context(|| format!("reading {}", d.display()))?
            .next()
            .is_none();
        if !empty {
            bail!("{} exists and is not empty", d.display());
        }
        trace_format::check_private_dir(&d, "the destination")?;
    } else {
        make_private_dir(&d)?;
    }
    if let Err(e) = pack::unpack(file, &d) {
        // Nothing half-unpacked is left: the directory is emptied (removed if we made it).
        if existed {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = entry.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        } else {
            let _ = std::fs::remove_dir_all(&d);
        }
        return Err(e);
    }
    println!("{}", d.display());
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `n` bytes for people: `1.2 MB`.
fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}
