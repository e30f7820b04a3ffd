//! Progress bars on a terminal, plain lines elsewhere, JSON lines with `--format json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use catena::{Progress, ProgressEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How results and events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences for people.
    #[value(name = "TABULAR", alias = "tabular", alias = "text")]
    Tabular,
    /// One JSON document per result, JSON lines for events.
    #[value(name = "JSON", alias = "json")]
    Json,
}

/// Draws bars (terminal), logs lines (not a terminal), or emits JSON events.
pub struct Reporter {
    format: Format,
    terminal: bool,
    bars: MultiProgress,
    per_db: Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            terminal: std::io::stderr().is_terminal(),
            bars: MultiProgress::new(),
            per_db: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, db: &str, op: &str, total: Option<u64>) -> ProgressBar {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.bars.add(bar.with_style(style));
        bar.set_prefix(format!("{op} {db}"));
        bar
    }
}

impl Progress for Reporter {
    fn event(&self, event: ProgressEvent) {
        if self.format == Format::Json {
            if let Ok(line) = serde_json::to_string(&event) {
                eprintln!("{line}");
            }
            return;
        }
        let Ok(mut bars) = self.per_db.lock() else {
            return;
        };
        match event {
            ProgressEvent::DatabaseStarted {
                database,
                operation,
                total_bytes,
            } => {
                if self.terminal {
                    let bar = self.bar(&database, operation, total_bytes);
                    bars.insert(database, bar);
                } else {
                    eprintln!("{operation} {database}: started");
                }
            }
            ProgressEvent::TotalKnown {
                database,
                total_bytes,
            } => {
                if let Some(bar) = bars.get(&database) {
                    bar.set_length(total_bytes.max(bar.position()));
                }
            }
            ProgressEvent::Bytes { database, bytes } => {
                if let Some(bar) = bars.get(&database) {
                    if bar.length().is_some_and(|l| bar.position() + bytes > l) {
                        bar.set_length(bar.position() + bytes);
                    }
                    bar.inc(bytes);
                }
            }
            ProgressEvent::Item { database, name } => {
                if let Some(bar) = bars.get(&database) {
                    bar.set_message(name);
                }
            }
            ProgressEvent::Committed {
                database,
                artifact,
                kind,
                empty,
                stored_bytes,
            } => {
                let line = format!(
                    "{database}: committed {kind}{} {artifact} ({stored_bytes} bytes stored)",
                    if empty { " (EMPTY)" } else { "" }
                );
                match bars.get(&database) {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
            // A failure is said once, with its cause, by the command's result lines.
            ProgressEvent::DatabaseFinished { database, ok } => match bars.remove(&database) {
                Some(bar) if ok => bar.finish_with_message("done"),
                Some(bar) => bar.abandon_with_message("stopped"),
                None if ok => eprintln!("{database}: done"),
                None => {}
            },
            _ => {}
        }
    }
}
