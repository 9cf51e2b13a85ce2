//! Writing flows to stdout in the format `-o` picked, through one large
//! buffer (no allocation and no syscall per flow).

use std::io::{self, Write};

use super::args::Output;
use crate::flow::json::{self, JsonOptions};
use crate::flow::labels::LabelMap;
use crate::flow::text::{self, TextOptions};
use crate::flow::xml::{self, XmlOptions};
use crate::flow::{EventKind, Flow, save};

/// Where a flow line comes from: conntrack formats them slightly
/// differently per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// `-L`, `-G`: XML header, kernel timestamps, labels.
    Dump,
    /// `-D`: no XML header, no kernel timestamps, no labels.
    Delete,
    /// `-U`: no XML header, no kernel timestamps.
    Update,
    /// `-E`: XML header, wall-clock timestamps.
    Event,
}

/// Buffered flow printer.
pub struct Printer<'a> {
    out: Vec<u8>,
    output: Output,
    labels: Option<&'a LabelMap>,
    xml_open: bool,
    now: i64,
    /// Flush after every line (events are shown as they come).
    pub line_buffered: bool,
}

const FLUSH_AT: usize = 256 * 1024;

impl<'a> Printer<'a> {
    /// A printer for the `-o` settings.
    pub fn new(output: Output, labels: Option<&'a LabelMap>) -> Printer<'a> {
        Printer {
            out: Vec::with_capacity(FLUSH_AT + 4096),
            output,
            // conntrack prints labels whenever it loaded the label map:
            // for `-o labels`, and also for `-l`/`--label-add`/`--label-del`
            labels,
            xml_open: false,
            now: crate::flow::now_secs(),
            line_buffered: false,
        }
    }

    /// Writes one flow line.
    pub fn flow(
        &mut self,
        f: &Flow,
        ctx: Context,
        event: Option<EventKind>,
        suffix: &[u8],
    ) -> io::Result<()> {
        let o = self.output;
        if ctx == Context::Event {
            self.now = crate::flow::now_secs();
        }
        if o.save {
            let ev = match ctx {
                Context::Delete => Some(EventKind::Destroy),
                _ => event,
            };
            save::write_line(&mut self.out, f, ev);
        } else if o.json {
            json::write_flow(
                &mut self.out,
                f,
                &JsonOptions {
                    event,
                    labels: self.labels,
                    now: self.now,
                    hide_timeout: false,
                },
            );
        } else if o.xml {
            if !self.xml_open && matches!(ctx, Context::Dump | Context::Event) {
                self.out.extend_from_slice(xml::HEADER.as_bytes());
                self.xml_open = true;
            }
            xml::write_flow(
                &mut self.out,
                f,
                &XmlOptions {
                    event,
                    when: ctx == Context::Event && o.timestamp,
                    ktimestamp: o.ktimestamp && matches!(ctx, Context::Dump | Context::Event),
                    labels: if ctx == Context::Delete {
                        None
                    } else {
                        self.labels
                    },
                    now: self.now,
                },
            );
        } else {
            text::write_line(
                &mut self.out,
                f,
                &TextOptions {
                    extended: o.extended,
                    id: o.id,
                    ktimestamp: o.ktimestamp && matches!(ctx, Context::Dump | Context::Event),
                    labels: if ctx == Context::Delete {
                        None
                    } else {
                        self.labels
                    },
                    event,
                    show_timeout: true,
                    now: self.now,
                },
            );
        }
        self.out.extend_from_slice(suffix);
        self.out.push(b'\n');
        if self.line_buffered || self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends raw bytes (event timestamp prefixes).
    pub fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// Closes the XML document if one was opened.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.xml_open {
            self.out.extend_from_slice(xml::FOOTER.as_bytes());
            self.xml_open = false;
        }
        self.flush()
    }

    /// Writes out what is buffered without closing the XML document
    /// (conntrack's `-G -o xml` prints the header but no footer).
    pub fn finish_unclosed(&mut self) -> io::Result<()> {
        self.xml_open = false;
        self.flush()
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let mut so = io::stdout().lock();
            so.write_all(&self.out)?;
            so.flush()?;
            self.out.clear();
        }
        Ok(())
    }
}
