//! Progress on stderr, in phases (upload, job, download): an indicatif bar
//! for a person at a terminal, or one plain line per second for a log, a
//! pipe or a test (indicatif draws nothing when stderr is not a terminal,
//! so without the plain lines a CI log would show no progress at all).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{
    BinaryBytes, HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// One line per second per phase, and one when a phase ends.
    Plain,
    /// Nothing (errors are still printed).
    None,
}

/// How often a plain line is printed while a phase runs.
pub const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// How often a drawn bar refreshes by itself (rate, ETA, spinner) between
/// updates: a job is looked at only every second or so.
const BAR_TICK: Duration = Duration::from_millis(200);

/// `done` over `elapsed`, per second, as every rate of items is shown: a
/// phase's lines and a command's summary (`migrate-store`) agree when
/// given the same figures.
pub fn per_second(done: u64, elapsed: Duration) -> u64 {
    (done as f64 / elapsed.as_secs_f64().max(0.001)).round() as u64
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (uploads, downloads).
    Bytes,
    /// Things with this plural name (`lines`, `records`).
    Items(&'static str),
}

/// Where progress goes, decided once per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    style: Style,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bar,
    Plain,
    Quiet,
}

impl Reporter {
    /// A reporter for `mode` (`auto` looks at stderr now).
    pub fn new(mode: ProgressMode) -> Self {
        let style = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Style::Bar,
            ProgressMode::Auto | ProgressMode::Plain => Style::Plain,
            ProgressMode::None => Style::Quiet,
        };
        Reporter { style }
    }

    /// Tells the person something between phases (e.g. the job's URL);
    /// silent with `--progress none`.
    pub fn note(&self, message: &str) {
        if self.style != Style::Quiet {
            eprintln!("{message}");
        }
    }

    /// Starts a phase called `name` counting `unit`, of `total` if known.
    pub fn phase(&self, name: &'static str, unit: Unit, total: Option<u64>) -> Phase {
        let target = match self.style {
            Style::Bar => ProgressDrawTarget::stderr(),
            Style::Plain | Style::Quiet => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(total, target).with_prefix(name);
        bar.set_style(bar_style(unit, total.is_some()));
        if self.style == Style::Bar {
            bar.enable_steady_tick(BAR_TICK);
        }
        let now = Instant::now();
        Phase {
            bar,
            name,
            unit,
            style: self.style,
            clock: Arc::new(Mutex::new(Clock {
                started: now,
                last_line: now,
            })),
        }
    }
}

/// When a phase started and last printed a plain line.
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Instant,
    last_line: Instant,
}

/// One phase's progress; cheap to clone (an upload's body stream holds one).
#[derive(Debug, Clone)]
pub struct Phase {
    bar: ProgressBar,
    name: &'static str,
    unit: Unit,
    style: Style,
    clock: Arc<Mutex<Clock>>,
}

impl Phase {
    /// Adds `delta` done.
    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
        self.maybe_print();
    }

    /// Sets what is done to `done`.
    pub fn set_done(&self, done: u64) {
        self.bar.set_position(done);
        self.maybe_print();
    }

    /// Sets the total once it is known (or known better).
    pub fn set_total(&self, total: u64) {
        if self.bar.length() != Some(total) {
            let had_total = self.bar.length().is_some();
            self.bar.set_length(total);
            if !had_total {
                self.bar.set_style(bar_style(self.unit, true));
            }
        }
    }

    /// How long the phase has run.
    fn elapsed(&self) -> Duration {
        self.clock.lock().map(|c| c.started.elapsed()).unwrap_or_default()
    }

    /// Ends the phase with its last line (the bar gives way to it, so the
    /// terminal keeps one line per phase, as a log does).
    pub fn finish(&self) {
        self.finish_after(self.elapsed());
    }

    /// [`Phase::finish`], the phase having taken `elapsed` as the work
    /// measured it (so its rate is the one the work reports too).
    pub fn finish_after(&self, elapsed: Duration) {
        self.bar.finish_and_clear();
        if self.style != Style::Quiet {
            eprintln!("{}", self.line(elapsed, true));
        }
    }

    /// Ends the phase without a last line (it broke off; an error follows).
    pub fn abandon(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a plain line when one is due (a complete phase waits for
    /// [`Phase::finish`], whose line says so).
    fn maybe_print(&self) {
        if self.style != Style::Plain {
            return;
        }
        if self.bar.length().is_some_and(|total| self.bar.position() >= total) {
            return;
        }
        let now = Instant::now();
        let started = {
            let Ok(mut clock) = self.clock.lock() else { return };
            if now.duration_since(clock.last_line) < PLAIN_EVERY {
                return;
            }
            clock.last_line = now;
            clock.started
        };
        eprintln!("{}", self.line(now.duration_since(started), false));
    }

    /// `upload: 1.20 MiB of 4.00 MiB (30%), 2.10 MiB/s, ETA 2 seconds`, or
    /// `import: 5,000 of 5,000 lines (100%), 950 lines/s, done in 5 seconds`.
    fn line(&self, elapsed: Duration, finished: bool) -> String {
        let done = self.bar.position();
        let total = self.bar.length();
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        let amount = |n: u64| match self.unit {
            Unit::Bytes => BinaryBytes(n).to_string(),
            Unit::Items(_) => HumanCount(n).to_string(),
        };
        let mut line = format!("{}: {}", self.name, amount(done));
        if let Some(total) = total {
            line.push_str(&format!(" of {}", amount(total)));
        }
        if let Unit::Items(what) = self.unit {
            line.push_str(&format!(" {what}"));
        }
        if let Some(total) = total.filter(|t| *t > 0) {
            line.push_str(&format!(" ({}%)", (done.min(total) * 100) / total));
        }
        match self.unit {
            Unit::Bytes => line.push_str(&format!(", {}/s", BinaryBytes(rate as u64))),
            Unit::Items(what) => line.push_str(&format!(", {} {what}/s", HumanCount(per_second(done, elapsed)))),
        }
        if finished {
            line.push_str(&format!(", done in {}", HumanDuration(elapsed)));
        } else if let Some(total) = total
            && rate > 0.0
        {
            let left = total.saturating_sub(done) as f64 / rate;
            line.push_str(&format!(", ETA {}", HumanDuration(Duration::from_secs_f64(left))));
        }
        line
    }
}

/// The bar's look for `unit`, with or without a known total.
fn bar_style(unit: Unit, known_total: bool) -> ProgressStyle {
    ProgressStyle::with_template(&bar_template(unit, known_total))
        .map(|style| {
            style
                .progress_chars("=> ")
                // indicatif's `{per_sec}` shows four decimals of a line.
                .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", HumanCount(state.per_sec().round() as u64));
                })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The indicatif template behind [`bar_style`].
fn bar_template(unit: Unit, known_total: bool) -> String {
    match (unit, known_total) {
        (Unit::Bytes, true) => {
            "{prefix:>7} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}".to_owned()
        }
        (Unit::Bytes, false) => "{prefix:>7} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}".to_owned(),
        (Unit::Items(what), true) => {
            format!("{{prefix:>7}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {what} ({{rate}} {what}/s, ETA {{eta}})")
        }
        (Unit::Items(what), false) => {
            format!("{{prefix:>7}} {{spinner}} {{human_pos}} {what} ({{rate}} {what}/s, {{elapsed}})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &'static str, unit: Unit, total: Option<u64>) -> Phase {
        Reporter { style: Style::Plain }.phase(name, unit, total)
    }

    #[test]
    fn plain_lines_say_how_far_how_fast_and_how_long() {
        let phase = plain("import", Unit::Items("lines"), Some(5000));
        phase.bar.set_position(1200);
        assert_eq!(
            phase.line(Duration::from_secs(2), false),
            "import: 1,200 of 5,000 lines (24%), 600 lines/s, ETA 6 seconds"
        );
        phase.bar.set_position(5000);
        assert_eq!(
            phase.line(Duration::from_secs(5), true),
            "import: 5,000 of 5,000 lines (100%), 1,000 lines/s, done in 5 seconds"
        );
    }

    #[test]
    fn plain_lines_for_bytes_and_unknown_totals() {
        let phase = plain("upload", Unit::Bytes, None);
        phase.bar.set_position(3 << 20);
        assert_eq!(
            phase.line(Duration::from_secs(2), false),
            "upload: 3.00 MiB, 1.50 MiB/s"
        );
        phase.set_total(4 << 20);
        assert_eq!(
            phase.line(Duration::from_secs(2), false),
            "upload: 3.00 MiB of 4.00 MiB (75%), 1.50 MiB/s, ETA 1 second"
        );
    }

    #[test]
    fn every_style_has_a_valid_template() {
        for unit in [Unit::Bytes, Unit::Items("lines")] {
            for known in [true, false] {
                let template = bar_template(unit, known);
                assert!(ProgressStyle::with_template(&template).is_ok(), "{template}");
            }
        }
    }
}
