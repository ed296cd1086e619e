//! Builds [`Node`] trees from saphyr-parser's event stream.
//!
//! This is the first step of reading any user file: text goes in, positioned
//! nodes come out, and later stages (playbook, inventory, vars) interpret them.
//! Here we apply what the YAML 1.1 loader Ansible uses would apply: plain-scalar
//! resolution (`resolve.rs`), tags (`!unsafe`, `!!str`...), anchors and aliases
//! (with an expansion budget against "billion laughs" documents), merge keys
//! and duplicate keys (last wins, with a warning). Parser errors are turned into
//! diagnostics with hints for the usual mistakes: tabs in indentation, an
//! unquoted `{{ ... }}` value, an unquoted `: ` inside a value.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use saphyr_parser::{
    Event, Marker, Parser, ScalarStyle as EventStyle, ScanError, Span as EventSpan, StrInput, Tag,
};

use super::node::{Node, NodeKind, ScalarStyle, YamlError};
use super::resolve::{construct_bool, construct_float, construct_int, resolve_plain};
use crate::diag::{Diagnostic, Pos, Source, Span};

/// Nesting deeper than this is refused: no real playbook comes close, and the
/// tree builder (and everything walking the tree later) recurses.
const MAX_DEPTH: usize = 512;

/// Limits for loading untrusted YAML.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Maximum number of nodes produced by alias expansion in one document.
    pub max_alias_expansion: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_alias_expansion: 100_000,
        }
    }
}

/// The documents of one YAML stream plus the warnings found while loading them
/// (duplicate keys, for now).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub docs: Vec<Node>,
    pub warnings: Vec<Diagnostic>,
}

/// Loads every document of a file.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Vec<Node>, YamlError> {
    load_file_with_warnings(path, opts).map(|loaded| loaded.docs)
}

/// Loads every document of a file, keeping the warnings.
pub fn load_file_with_warnings(path: &Path, opts: &LoadOptions) -> Result<Loaded, YamlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", path.display())))?;
    // A whole-file vault (vars files, group_vars, include_vars, playbooks…)
    // is opened here, so every reader gets plain YAML.
    if crate::vault::is_encrypted(text.as_bytes()) {
        let plain = crate::vault::open_text(path, text).map_err(|e| {
            let diag = Diagnostic::new(e.to_string());
            if e.wants_password() {
                diag.hint(
                    "give the password with --vault-password-file, --vault-id or --ask-vault-pass",
                )
            } else {
                diag
            }
        })?;
        return load_source(Source::decrypted(path, plain), opts);
    }
    load_source(Source::new(path, text), opts)
}

/// Loads every document of `text`; `name` is what positions are reported against.
pub fn load_str(name: &str, text: &str, opts: &LoadOptions) -> Result<Vec<Node>, YamlError> {
    load_str_with_warnings(name, text, opts).map(|loaded| loaded.docs)
}

/// Loads every document of `text`, keeping the warnings.
pub fn load_str_with_warnings(
    name: &str,
    text: &str,
    opts: &LoadOptions,
) -> Result<Loaded, YamlError> {
    load_source(Source::new(name, text), opts)
}

/// Loads every document of an already-read source.
pub fn load_source(source: Arc<Source>, opts: &LoadOptions) -> Result<Loaded, YamlError> {
    // saphyr follows YAML 1.2 and rejects a tab between `key:` and a value
    // starting with a letter, which libyaml (what Ansible normally uses)
    // accepts. Such tabs sit outside any scalar, so turning them into spaces
    // changes no value and no position; we retry with a patched copy.
    //
    // Retrying once per such tab re-parses the whole text each time, which
    // is quadratic in a file with many of them (found by the yaml_load fuzz
    // target: 26 KB took 0.7 s). So at the first one, every `:` + tabs from
    // there on is patched at once, and each parse checks that none of those
    // tabs sat inside a quoted or block scalar, where they are content;
    // those few are put back and never patched again.
    let mut patched: Option<String> = None;
    let mut speculative: Vec<(usize, usize)> = Vec::new();
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for _ in 0..1000 {
        let text = patched.as_deref().unwrap_or(&source.text);
        let mut builder = Builder::new(source.clone(), text, opts);
        builder.record_quoted = !speculative.is_empty();
        let outcome = builder.run();
        let wrong: Vec<(usize, usize)> = speculative
            .iter()
            .copied()
            .filter(|&(a, b)| builder.quoted.iter().any(|&(qa, qb)| a < qb && qa < b))
            .collect();
        if !wrong.is_empty() {
            let mut fixed = text.to_string();
            for &(a, b) in &wrong {
                fixed.replace_range(a..b, &source.text[a..b]);
            }
            speculative.retain(|r| !wrong.contains(r));
            kept.extend(wrong);
            patched = Some(fixed);
            continue;
        }
        match outcome {
            Ok(docs) => {
                if let Some(diag) = builder.stray_tab(None) {
                    return Err(diag);
                }
                let mut warnings = builder.warnings;
                // Inner mappings finish first; report in file order.
                warnings.sort_by_key(|w| w.span.as_ref().map(|s| s.pos));
                return Ok(Loaded { docs, warnings });
            }
            Err(Halt::Diag(diag)) => return Err(diag),
            Err(Halt::Scan(err)) => {
                if err.info() == "':' must be followed by a valid YAML whitespace" {
                    if let Some((fixed, ranges)) =
                        tabs_after_colons_from(text, &builder.lines, err.marker(), &kept)
                    {
                        speculative.extend(ranges);
                        patched = Some(fixed);
                        continue;
                    }
                }
                return Err(builder.scan_error(&err));
            }
        }
    }
    Err(Diagnostic::new("too many tabs after `:`; use spaces")
        .at(Span::new(source, Pos { line: 1, col: 1 })))
}

/// Why building stopped: a parser error still to be explained, or a finished
/// diagnostic.
enum Halt {
    Scan(ScanError),
    Diag(Diagnostic),
}

impl From<Diagnostic> for Halt {
    fn from(d: Diagnostic) -> Halt {
        Halt::Diag(d)
    }
}

/// Byte offsets of line starts, to go from the parser's (line, char column)
/// to text.
struct Lines<'s> {
    text: &'s str,
    starts: Vec<usize>,
    ascii: bool,
}

impl<'s> Lines<'s> {
    fn new(text: &'s str) -> Lines<'s> {
        // YAML's line breaks are `\n`, `\r\n` and a lone `\r`; the parser's
        // marks count all three, so the table must too.
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
                .map(|(i, _)| i + 1),
        );
        Lines {
            text,
            starts,
            ascii: text.is_ascii(),
        }
    }

    /// The text of 1-based `line`, without its line break.
    fn line(&self, line: usize) -> Option<&'s str> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let end = self
            .starts
            .get(line)
            .map_or(self.text.len(), |&next| next - 1);
        Some(self.text[start..end].trim_end_matches('\r'))
    }

    /// Byte offset of (1-based line, 0-based char column).
    fn offset(&self, line: usize, col: usize) -> Option<usize> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        if self.ascii {
            // A column past the end of the text (a mark the parser placed
            // after a break this table does not know) has no offset.
            return Some(start + col).filter(|&o| o <= self.text.len());
        }
        let rest = &self.text[start..];
        rest.char_indices()
            .nth(col)
            .map(|(i, _)| start + i)
            .or(Some(start + rest.len()))
    }

    /// The text from (1-based line, 0-based char column) to the end.
    fn from(&self, line: usize, col: usize) -> &'s str {
        self.offset(line, col)
            .and_then(|o| self.text.get(o..))
            .unwrap_or("")
    }
}

/// A (line, 0-based column) point, ordered by position.
type Point = (usize, usize);

fn point(m: &Marker) -> Point {
    (m.line(), m.col())
}

struct Builder<'s> {
    parser: Parser<'s, StrInput<'s>>,
    source: Arc<Source>,
    lines: Lines<'s>,
    max_alias_expansion: usize,
    /// Anchored nodes of the current document with their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes produced by alias expansion so far in the current document.
    expanded: usize,
    depth: usize,
    warnings: Vec<Diagnostic>,
    /// Lines whose indentation holds a tab, as (line, column of the tab).
    tab_lines: Vec<Point>,
    /// Where tabs at a line start are legitimate: multi-line scalars and flow
    /// collections. Only recorded when `tab_lines` is not empty.
    tab_ok: Vec<(Point, Point)>,
    /// Whether to record `quoted`.
    record_quoted: bool,
    /// Byte ranges of the quoted and block scalars read, when asked.
    quoted: Vec<(usize, usize)>,
}

impl<'s> Builder<'s> {
    fn new(source: Arc<Source>, text: &'s str, opts: &LoadOptions) -> Builder<'s> {
        let lines = Lines::new(text);
        let tab_lines = indentation_tabs(text);
        Builder {
            parser: Parser::new_from_str(text),
            source,
            lines,
            max_alias_expansion: opts.max_alias_expansion,
            anchors: HashMap::new(),
            expanded: 0,
            depth: 0,
            warnings: Vec::new(),
            tab_lines,
            tab_ok: Vec::new(),
            record_quoted: false,
            quoted: Vec::new(),
        }
    }

    fn run(&mut self) -> Result<Vec<Node>, Halt> {
        let mut docs = Vec::new();
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamEnd => return Ok(docs),
                Event::DocumentStart(_) => {
                    self.anchors.clear();
                    self.expanded = 0;
                    let (event, span) = self.next()?;
                    if !matches!(event, Event::DocumentEnd) {
                        docs.push(self.node(event, span)?);
                    }
                }
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                other => return Err(self.unexpected(&other, &span).into()),
            }
        }
    }

    fn next(&mut self) -> Result<(Event<'s>, EventSpan), Halt> {
        match self.parser.next_event() {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(err)) => Err(Halt::Scan(err)),
            None => Err(Diagnostic::new("unexpected end of YAML stream").into()),
        }
    }

    fn span(&self, m: &Marker) -> Span {
        Span::new(self.source.clone(), pos(m))
    }

    fn unexpected(&self, event: &Event<'_>, span: &EventSpan) -> Diagnostic {
        Diagnostic::new(format!("unexpected YAML event {event:?}")).at(self.span(&span.start))
    }

    fn node(&mut self, event: Event<'s>, span: EventSpan) -> Result<Node, Halt> {
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let node = self.scalar(value.into_owned(), style, tag.as_deref(), &span)?;
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::SequenceStart(anchor, tag) => {
                let node = self.sequence(tag.as_deref(), &span)?;
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                let node = self.mapping(tag.as_deref(), &span)?;
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => self.alias(id, &span),
            other => Err(self.unexpected(&other, &span).into()),
        }
    }

    fn make(&self, kind: NodeKind, at: Pos) -> Node {
        Node {
            kind,
            pos: at,
            source: self.source.clone(),
        }
    }

    fn scalar(
        &mut self,
        value: String,
        style: EventStyle,
        tag: Option<&Tag>,
        span: &EventSpan,
    ) -> Result<Node, Halt> {
        if !self.tab_lines.is_empty() && span.start.line() != span.end.line() {
            self.tab_ok.push((point(&span.start), point(&span.end)));
        }
        if self.record_quoted && style != EventStyle::Plain {
            let offset = |m: &Marker| self.lines.offset(m.line(), m.col());
            let end = offset(&span.end).unwrap_or(usize::MAX);
            self.quoted.push((offset(&span.start).unwrap_or(0), end));
        }
        let at = pos(&span.start);
        let our_style = match style {
            EventStyle::Plain => ScalarStyle::Plain,
            EventStyle::SingleQuoted | EventStyle::DoubleQuoted => ScalarStyle::Quoted,
            EventStyle::Literal | EventStyle::Folded => ScalarStyle::Block,
        };
        let Some(tag) = tag else {
            let kind = if style == EventStyle::Plain {
                resolve_plain(&value)
            } else {
                NodeKind::Str {
                    value,
                    style: our_style,
                    unsafe_: false,
                }
            };
            return Ok(self.make(kind, at));
        };
        let name = tag_name(tag);
        let constructed = match name.as_str() {
            "!unsafe" => {
                return Ok(self.make(
                    NodeKind::Str {
                        value,
                        style: our_style,
                        unsafe_: true,
                    },
                    at,
                ))
            }
            "!vault" | "!vault-encrypted" => {
                return Ok(self.make(vault_scalar(value, our_style), at))
            }
            "!!str" | "!!timestamp" | "!" => {
                return Ok(self.make(
                    NodeKind::Str {
                        value,
                        style: our_style,
                        unsafe_: false,
                    },
                    at,
                ))
            }
            "!!null" => Some(NodeKind::Null),
            "!!int" => construct_int(&value).map(NodeKind::Int),
            "!!float" => construct_float(&value).map(NodeKind::Float),
            "!!bool" => construct_bool(&value).map(NodeKind::Bool),
            _ => return Err(self.bad_tag(&name, "a scalar", &span.start).into()),
        };
        let Some(kind) = constructed else {
            let what = match name.as_str() {
                "!!int" => "an integer",
                "!!float" => "a float",
                _ => "a boolean",
            };
            return Err(Diagnostic::new(format!(
                "`{value}` is not {what}, as the {name} tag requires"
            ))
            .at(self.span(&span.start))
            .into());
        };
        Ok(self.make(kind, at))
    }

    fn bad_tag(&self, name: &str, what: &str, at: &Marker) -> Diagnostic {
        let diag = match name {
            "!vault" | "!vault-encrypted" => Diagnostic::new(format!(
                "the {name} tag needs a vault-encrypted string, not {what}"
            )),
            "!!map" | "!!seq" | "!!str" | "!!int" | "!!float" | "!!bool" | "!!null" => {
                Diagnostic::new(format!("the {name} tag cannot be applied to {what}"))
            }
            _ => Diagnostic::new(format!("unknown YAML tag `{name}`")).hint(
                "supported tags are !unsafe and the standard !!str, !!int, !!float, !!bool, !!null, !!map and !!seq",
            ),
        };
        diag.at(self.span(at))
    }

    /// Checks the tag of a collection; `Ok(true)` means `!unsafe`.
    fn collection_tag(
        &self,
        tag: Option<&Tag>,
        own: &str,
        what: &str,
        at: &Marker,
    ) -> Result<bool, Diagnostic> {
        let Some(tag) = tag else { return Ok(false) };
        let name = tag_name(tag);
        match name.as_str() {
            "!unsafe" => Ok(true),
            n if n == own => Ok(false),
            _ => Err(self.bad_tag(&name, what, at)),
        }
    }

    fn enter(&mut self, at: &Marker) -> Result<(), Halt> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Diagnostic::new(format!(
                "YAML nesting is too deep (over {MAX_DEPTH} levels)"
            ))
            .at(self.span(at))
            .into());
        }
        Ok(())
    }

    /// A collection written in flow style (`[...]`, `{...}`): its start event
    /// ends just after the opening bracket. Block collections have an empty
    /// span, or one covering only their anchor and tag.
    fn is_flow(&self, span: &EventSpan) -> Option<char> {
        let end = &span.end;
        if span.start.index() == end.index() || end.col() == 0 {
            return None;
        }
        self.lines
            .from(end.line(), end.col() - 1)
            .chars()
            .next()
            .filter(|c| matches!(c, '[' | '{'))
    }

    fn sequence(&mut self, tag: Option<&Tag>, span: &EventSpan) -> Result<Node, Halt> {
        let unsafe_ = self.collection_tag(tag, "!!seq", "a list", &span.start)?;
        self.enter(&span.start)?;
        let flow = self.is_flow(span).is_some();
        let mut items = Vec::new();
        let end = loop {
            let (event, item_span) = self.next()?;
            if matches!(event, Event::SequenceEnd) {
                break item_span.end;
            }
            items.push(self.node(event, item_span)?);
        };
        self.depth -= 1;
        if flow && !self.tab_lines.is_empty() {
            self.tab_ok.push((point(&span.start), point(&end)));
        }
        // A block list with an anchor or tag starts at its first `-`.
        let at = if flow {
            pos(&span.start)
        } else {
            pos(&span.end)
        };
        let mut node = self.make(NodeKind::Seq(items), at);
        if unsafe_ {
            mark_unsafe(&mut node);
        }
        Ok(node)
    }

    fn mapping(&mut self, tag: Option<&Tag>, span: &EventSpan) -> Result<Node, Halt> {
        let unsafe_ = self.collection_tag(tag, "!!map", "a mapping", &span.start)?;
        let flow = self.is_flow(span).is_some();
        if flow {
            let brace = Marker::new(span.end.index() - 1, span.end.line(), span.end.col() - 1);
            let rest = self.lines.from(brace.line(), brace.col());
            if rest.starts_with("{{") {
                return Err(unquoted_template(self.span(&brace), rest).into());
            }
        }
        self.enter(&span.start)?;
        let mut entries: Vec<(Node, Node, bool)> = Vec::new();
        let end = loop {
            let (event, key_span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break key_span.end;
            }
            let is_merge =
                matches!(&event, Event::Scalar(v, EventStyle::Plain, _, None) if v == "<<");
            let key = self.node(event, key_span)?;
            let (event, value_span) = self.next()?;
            let value = self.node(event, value_span)?;
            entries.push((key, value, is_merge));
        };
        self.depth -= 1;
        if flow && !self.tab_lines.is_empty() {
            self.tab_ok.push((point(&span.start), point(&end)));
        }
        let at = match (flow, entries.first()) {
            (false, Some((key, _, _))) => key.pos,
            (false, None) => pos(&span.end),
            (true, _) => pos(&span.start),
        };
        let entries = self.merge_and_dedupe(entries)?;
        let mut node = self.make(NodeKind::Map(entries), at);
        if unsafe_ {
            mark_unsafe(&mut node);
        }
        Ok(node)
    }

    /// Applies `<<` merge keys the way PyYAML does (merged entries go first, so
    /// explicit keys win; in a list, earlier mappings win) and collapses
    /// duplicate keys, keeping the first key's place and the last value.
    fn merge_and_dedupe(
        &mut self,
        raw: Vec<(Node, Node, bool)>,
    ) -> Result<Vec<(Node, Node)>, Halt> {
        if raw.iter().all(|(_, _, merge)| !merge) && raw.len() <= 1 {
            if let Some((key, _, _)) = raw.first() {
                key_id(key)?;
            }
            return Ok(raw.into_iter().map(|(k, v, _)| (k, v)).collect());
        }
        let mut merged: Vec<(Node, Node)> = Vec::new();
        let mut explicit: Vec<(Node, Node)> = Vec::with_capacity(raw.len());
        for (key, value, is_merge) in raw {
            if !is_merge {
                explicit.push((key, value));
                continue;
            }
            let expected = "a merge key `<<` needs a mapping or a list of mappings";
            let value_pos = value.pos;
            match value.kind {
                NodeKind::Map(entries) => merged.extend(entries),
                NodeKind::Seq(items) => {
                    let mut maps = Vec::with_capacity(items.len());
                    for item in items {
                        match item.kind {
                            NodeKind::Map(entries) => maps.push(entries),
                            _ => {
                                return Err(item
                                    .error(format!("{expected}, found {}", item.type_name()))
                                    .into())
                            }
                        }
                    }
                    for entries in maps.into_iter().rev() {
                        merged.extend(entries);
                    }
                }
                _ => {
                    let found = Node {
                        kind: value.kind,
                        pos: value_pos,
                        source: value.source,
                    };
                    return Err(found
                        .error(format!("{expected}, found {}", found.type_name()))
                        .into());
                }
            }
        }
        let merged_len = merged.len();
        let total = merged_len + explicit.len();
        let mut out: Vec<(Node, Node)> = Vec::with_capacity(total);
        // Whether the surviving entry was written in this mapping (not merged).
        let mut written_here: Vec<bool> = Vec::with_capacity(total);
        // Small mappings (nearly all of them) are checked by a linear scan; a
        // hash index only pays off for large ones.
        let mut index: Option<HashMap<KeyId, usize>> =
            (total > 16).then(|| HashMap::with_capacity(total));
        for (i, (key, value)) in merged.into_iter().chain(explicit).enumerate() {
            let id = key_id(&key)?;
            let explicit_entry = i >= merged_len;
            let existing = match &index {
                Some(index) => index.get(&id).copied(),
                None => out
                    .iter()
                    .position(|(k, _)| key_id(k).is_ok_and(|other| other == id)),
            };
            match existing {
                Some(slot) => {
                    if explicit_entry && written_here[slot] {
                        let first = &out[slot].0;
                        self.warnings.push(
                            key.error(format!(
                                "duplicate key `{id}` in this mapping; the last value wins"
                            ))
                            .hint(format!(
                                "the key is first defined at line {}",
                                first.pos.line
                            )),
                        );
                    }
                    written_here[slot] |= explicit_entry;
                    out[slot].1 = value;
                }
                None => {
                    if let Some(index) = &mut index {
                        index.insert(id, out.len());
                    }
                    out.push((key, value));
                    written_here.push(explicit_entry);
                }
            }
        }
        Ok(out)
    }

    fn alias(&mut self, id: usize, span: &EventSpan) -> Result<Node, Halt> {
        let Some((node, size)) = self.anchors.get(&id) else {
            return Err(Diagnostic::new(
                "this alias refers to its own anchor, which would make an infinite structure",
            )
            .at(self.span(&span.start))
            .into());
        };
        self.expanded = self.expanded.saturating_add(*size);
        if self.expanded > self.max_alias_expansion {
            return Err(Diagnostic::new(format!(
                "alias expansion exceeds {} nodes; possible 'billion laughs' attack",
                self.max_alias_expansion
            ))
            .at(self.span(&span.start))
            .hint("aliases in this document expand to too much data; reduce the nesting of anchors")
            .into());
        }
        let mut copy = node.clone();
        // The alias itself is where the value is used, so point there.
        copy.pos = pos(&span.start);
        Ok(copy)
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (node.clone(), count_nodes(node)));
        }
    }

    /// The first tab in indentation that no scalar or flow collection
    /// explains, if it comes before `limit`.
    fn stray_tab(&self, limit: Option<Point>) -> Option<Diagnostic> {
        let &(line, col) = self.tab_lines.iter().find(|&&p| {
            limit.is_none_or(|l| p.0 <= l.0)
                && !self
                    .tab_ok
                    .iter()
                    .any(|&(start, end)| start <= p && p < end)
        })?;
        let at = Marker::new(0, line, col);
        Some(
            Diagnostic::new("found a tab character in indentation")
                .at(self.span(&at))
                .hint("YAML forbids tabs for indentation; use spaces"),
        )
    }

    /// Explains a parser error, recognising the usual mistakes.
    fn scan_error(&self, err: &ScanError) -> Diagnostic {
        let mark = err.marker();
        let info = err.info();
        // A tab complaint can be raised at the end of the line before the tab.
        let tab_limit = if info.contains("tab") {
            mark.line() + 1
        } else {
            mark.line()
        };
        if let Some(diag) = self.stray_tab(Some((tab_limit, 0))) {
            return diag;
        }
        // A value starting with `{{` on this line or the one before it.
        for line in [mark.line(), mark.line().saturating_sub(1)] {
            if let Some(col) = self.lines.line(line).and_then(template_value_start) {
                let at = Marker::new(0, line, col);
                return unquoted_template(self.span(&at), self.lines.from(line, col));
            }
        }
        let at = self.error_point(mark);
        let (message, hint) = if info.contains("mapping values are not allowed") {
            let before = self
                .lines
                .line(at.line())
                .map(|l| l.chars().take(at.col()).collect::<String>());
            let hint = if before.is_some_and(|b| b.contains(": ")) {
                "a value containing `: ` must be quoted, e.g. key: \"value: more\""
            } else {
                "check the indentation: this key is indented more than the key above it"
            };
            ("mapping values are not allowed here".to_string(), hint)
        } else if info.contains("illegal placement of ':'") {
            (
                format!("YAML syntax error: {info}"),
                "check for an unclosed `[` or `{` above, or quote a value that contains `:`",
            )
        } else if info.contains("recursion limit") {
            (
                "YAML nesting is too deep".to_string(),
                "flatten the structure; no playbook needs hundreds of nesting levels",
            )
        } else if info.contains("unknown anchor") {
            (
                "this alias refers to an undefined anchor".to_string(),
                "define the anchor with `&name` before using `*name`",
            )
        } else if info.contains("quoted scalar") {
            (
                format!("YAML syntax error: {info}"),
                "a quoted string is not closed",
            )
        } else if info.contains("expected ',' or ']'") {
            (
                format!("YAML syntax error: {info}"),
                "a flow list `[ ... ]` is not closed, or an item needs quoting",
            )
        } else if info.contains("expected ',' or '}'") {
            (
                format!("YAML syntax error: {info}"),
                "a flow mapping `{ ... }` is not closed, or an item needs quoting",
            )
        } else if info.contains("did not find expected") || info.contains("indentation") {
            (
                format!("YAML syntax error: {info}"),
                "check the indentation of this line against the lines above it",
            )
        } else if info.contains("tab") {
            (
                "found a tab character".to_string(),
                "YAML forbids tabs for indentation; use spaces",
            )
        } else {
            (
                format!("YAML syntax error: {info}"),
                "check the indentation and quoting near this position",
            )
        };
        Diagnostic::new(message).at(self.span(&at)).hint(hint)
    }

    /// The parser reports unexpected ends at the start of the next (often
    /// empty) line; point at the end of the last line with content instead.
    fn error_point(&self, mark: &Marker) -> Marker {
        if mark.col() != 0
            || self
                .lines
                .line(mark.line())
                .is_some_and(|l| !l.trim().is_empty())
        {
            return *mark;
        }
        let mut line = mark.line();
        while line > 1 {
            line -= 1;
            if let Some(text) = self.lines.line(line).filter(|l| !l.trim().is_empty()) {
                return Marker::new(0, line, text.trim_end().chars().count());
            }
        }
        *mark
    }
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

/// How a tag is written in the source: `!!str`, `!unsafe`...
/// An inline `!vault` scalar. Decrypted now when the installed secrets open
/// it: the plaintext becomes an `!unsafe` string (ansible-core never templates
/// a vaulted value) and is remembered with its ciphertext. Otherwise the node
/// keeps the ciphertext, still `!unsafe`, and using the value fails later
/// (`Node::to_value`), as in ansible-core, where a vault nobody reads needs no
/// password.
fn vault_scalar(ciphertext: String, style: ScalarStyle) -> NodeKind {
    let plain = crate::vault::decrypt(&ciphertext)
        .ok()
        .and_then(|p| String::from_utf8(p).ok());
    let value = match plain {
        Some(plain) => {
            crate::vault::remember_inline(&plain, &ciphertext);
            plain
        }
        None => ciphertext,
    };
    NodeKind::Str {
        value,
        style,
        unsafe_: true,
    }
}

fn tag_name(tag: &Tag) -> String {
    const CORE: &str = "tag:yaml.org,2002:";
    if tag.handle == CORE {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else if let Some(rest) = tag
        .suffix
        .strip_prefix(CORE)
        .filter(|_| tag.handle.is_empty())
    {
        format!("!!{rest}")
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// The identity of a mapping key, for duplicate detection.
#[derive(PartialEq, Eq, Hash)]
enum KeyId {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyId::Null => f.write_str("null"),
            KeyId::Bool(b) => write!(f, "{b}"),
            KeyId::Int(i) => write!(f, "{i}"),
            KeyId::Float(bits) => write!(f, "{}", f64::from_bits(*bits)),
            KeyId::Str(s) => f.write_str(s),
        }
    }
}

fn key_id(key: &Node) -> Result<KeyId, Diagnostic> {
    Ok(match &key.kind {
        NodeKind::Null => KeyId::Null,
        NodeKind::Bool(b) => KeyId::Bool(*b),
        NodeKind::Int(i) => KeyId::Int(*i),
        NodeKind::Float(f) => KeyId::Float(f.to_bits()),
        NodeKind::Str { value, .. } => KeyId::Str(value.clone()),
        NodeKind::Seq(_) | NodeKind::Map(_) => {
            return Err(key
                .error(format!("a mapping key cannot be {}", key.type_name()))
                .hint("only scalars (strings, numbers, booleans) can be keys; quote the key if it is text"))
        }
    })
}

/// The error for a value that starts with `{{` without quotes.
fn unquoted_template(at: Span, rest_of_line: &str) -> Diagnostic {
    let value = rest_of_line.lines().next().unwrap_or("").trim_end();
    let quoted = if value.contains('"') {
        format!("'{value}'")
    } else {
        format!("\"{value}\"")
    };
    Diagnostic::new("a value that starts with {{ must be quoted")
        .at(at)
        .hint(format!(
            "YAML reads an unquoted {{ as the start of a mapping; write {quoted}"
        ))
}

/// Where a value starting with `{{` begins on `line` (0-based char column):
/// after `key: `, after `- `, or at the start of the line.
fn template_value_start(line: &str) -> Option<usize> {
    let mut search = 0;
    while let Some(found) = line[search..].find("{{") {
        let at = search + found;
        let before = line[..at].trim_end();
        let after_indicator = before.is_empty()
            || ((before.ends_with(':') || before.ends_with('-'))
                && line[..at].ends_with(char::is_whitespace));
        if after_indicator {
            return Some(line[..at].chars().count());
        }
        search = at + 2;
    }
    None
}

/// Lines whose leading whitespace holds a tab and which have content after it,
/// as (line, column of the first tab).
fn indentation_tabs(text: &str) -> Vec<Point> {
    if !text.contains('\t') {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        let content = line.trim_start_matches([' ', '\t']);
        let indent = &line[..line.len() - content.len()];
        let content = content.trim_end_matches('\r');
        if let Some(col) = indent.find('\t') {
            if !content.is_empty() && !content.starts_with('#') {
                found.push((i + 1, col));
            }
        }
    }
    found
}

/// Replaces with spaces the tabs between the `:` before the parser's
/// position and that position, and those after every later `:` in the
/// text, except the ranges in `kept`. Returns the new text and the byte
/// ranges changed; `None` when the error's own site holds no tab (so
/// retrying would not help).
fn tabs_after_colons_from(
    text: &str,
    lines: &Lines<'_>,
    mark: &Marker,
    kept: &[(usize, usize)],
) -> Option<(String, Vec<(usize, usize)>)> {
    let end = lines.offset(mark.line(), mark.col())?;
    let bytes = text.as_bytes();
    let mut start = end;
    while start > 0 && matches!(bytes[start - 1], b' ' | b'\t') {
        start -= 1;
    }
    if !text[start..end].contains('\t') || kept.contains(&(start, end)) {
        return None;
    }
    let mut ranges = vec![(start, end)];
    let mut i = end;
    while i < bytes.len() {
        if bytes[i] == b':' {
            let a = i + 1;
            let mut b = a;
            while b < bytes.len() && matches!(bytes[b], b' ' | b'\t') {
                b += 1;
            }
            if bytes[a..b].contains(&b'\t') && !kept.contains(&(a, b)) {
                ranges.push((a, b));
            }
            i = b.max(i + 1);
        } else {
            i += 1;
        }
    }
    // Blanks are ASCII, so each range is replaced byte for byte.
    let mut fixed = text.as_bytes().to_vec();
    for &(a, b) in &ranges {
        for c in &mut fixed[a..b] {
            *c = b' ';
        }
    }
    let fixed = String::from_utf8(fixed).expect("only ASCII blanks were replaced");
    Some((fixed, ranges))
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeKind::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
        _ => 0,
    }
}

/// `!unsafe` on a collection marks every string inside it.
fn mark_unsafe(node: &mut Node) {
    match &mut node.kind {
        NodeKind::Str { unsafe_, .. } => *unsafe_ = true,
        NodeKind::Seq(items) => items.iter_mut().for_each(mark_unsafe),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            mark_unsafe(k);
            mark_unsafe(v);
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `yaml_load` fuzz target: a lone `\r` ends a line for the
    /// parser but not for [`Lines`], so a mark's column could point past the
    /// end of the text while looking for tabs before an error. Such input
    /// must give an error, never a panic.
    #[test]
    fn lone_carriage_returns_and_tabs_do_not_panic() {
        let text =
            "- hos- hosts: all\r  tastA: all\r  tasug: mname:\tweb\nportname:\tweb\npor0\n\t:t8";
        let _ = load_str_with_warnings("fuzz.yml", text, &LoadOptions::default());
    }

    /// Found by the `yaml_load` fuzz target: one re-parse per tab after a
    /// `:` made a file with many of them quadratic. The first error's site
    /// and every later `:` + tabs are patched in one pass, byte for byte.
    #[test]
    fn every_later_tab_after_a_colon_is_patched_at_once() {
        let text = "a:\tone\nb: \"x:\ty\"\nc:\t\ttwo\nd: 1\n";
        let lines = Lines::new(text);
        let mut parser = Parser::new_from_str(text);
        let err = loop {
            match parser.next_event() {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the tab after `a:` is an error to saphyr"),
            }
        };
        let (fixed, ranges) = tabs_after_colons_from(text, &lines, err.marker(), &[]).unwrap();
        assert_eq!(fixed, "a: one\nb: \"x: y\"\nc:  two\nd: 1\n");
        assert_eq!(ranges.len(), 3);
        // A range given back (it was inside a quoted scalar) stays a tab.
        let kept = [ranges[1]];
        let (fixed, _) = tabs_after_colons_from(text, &lines, err.marker(), &kept).unwrap();
        assert_eq!(fixed, "a: one\nb: \"x:\ty\"\nc:  two\nd: 1\n");
        // And the loader puts that one back by itself.
        let docs = load_str_with_warnings("t.yml", text, &LoadOptions::default())
            .unwrap()
            .docs;
        let v = docs[0].to_value();
        assert_eq!(v.get_attr("b").unwrap().as_str(), Some("x:\ty"));
        assert_eq!(v.get_attr("c").unwrap().as_str(), Some("two"));
    }
}
