//! Shell globs read the way Python's `fnmatch` reads them (`translate`, then
//! `re.match`), which is how ansible-core matches host pattern terms
//! (`web*`, `db-[0-9]`), `find`'s `patterns` and `excludes`, `setup`'s
//! `filter` and a collection's `build_ignore`.
//!
//! A glob is parsed once into tokens and matched directly, without building a
//! regex. Every glob has a meaning (fnmatch never rejects one), so parsing
//! cannot fail:
//! - `*` is any run of characters, `?` any one character, newlines and `/`
//!   included;
//! - `[...]` is a set and `[!...]` its complement; a `]` right after `[` or
//!   `[!` is a member; a `[` without a closing `]` is itself;
//! - inside a set, `a-z` is a range, a `-` first or last is a member, and a
//!   range whose ends are reversed (`z-a`) is dropped along with its ends, as
//!   `fnmatch` drops it; an empty set never matches and `[!]` matches any one
//!   character;
//! - there is no escape character: `\` is an ordinary character.

/// A parsed glob.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// One given character.
    Char(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters (consecutive stars are one).
    Star,
    /// `[...]`: one character of the set (or, negated, outside it).
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this one-character token matches `c` (never called on `Star`).
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::Any => true,
            Token::Star => false,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let p: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let c = p[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => match set_end(&p, i) {
                    Some(j) => {
                        tokens.push(set(&p[i..j]));
                        i = j + 1;
                    }
                    None => tokens.push(Token::Char('[')),
                },
                c => tokens.push(Token::Char(c)),
            }
        }
        Glob { tokens }
    }

    /// Whether the whole of `name` matches.
    pub fn is_match(&self, name: &str) -> bool {
        let s: Vec<char> = name.chars().collect();
        let t = &self.tokens;
        let (mut ti, mut si) = (0, 0);
        // The last star seen: the token after it, and where in `s` its run ends.
        let mut star: Option<(usize, usize)> = None;
        loop {
            match t.get(ti) {
                Some(Token::Star) => {
                    star = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                Some(tok) if si < s.len() && tok.matches(s[si]) => {
                    ti += 1;
                    si += 1;
                    continue;
                }
                None if si == s.len() => return true,
                _ => {}
            }
            // A mismatch: let the last star take one more character. Every
            // other token takes exactly one, so this is enough (no deeper
            // backtracking is ever needed).
            match star {
                Some((next, end)) if end < s.len() => {
                    star = Some((next, end + 1));
                    ti = next;
                    si = end + 1;
                }
                _ => return false,
            }
        }
    }
}

/// The index of the `]` closing a set whose body starts at `i`, if any.
fn set_end(p: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if p.get(j) == Some(&'!') {
        j += 1;
    }
    if p.get(j) == Some(&']') {
        j += 1;
    }
    (j..p.len()).find(|&k| p[k] == ']')
}

/// One element of a set's body once `fnmatch.translate` has rewritten it:
/// a character, or a `-` left unescaped, which joins the elements around it
/// into a range.
#[derive(Clone, Copy, PartialEq)]
enum El {
    Char(char),
    Dash,
}

impl El {
    fn char(self) -> char {
        match self {
            El::Char(c) => c,
            El::Dash => '-',
        }
    }
}

/// A set from its body (between `[` and `]`, a leading `!` included).
///
/// This follows `fnmatch.translate` step by step, then reads the result as
/// Python's `re` reads a set, because the two together decide the meaning:
/// - the body is cut at each `-` that can make a range (not the first member,
///   and not right after a range's end); a cut whose ends are reversed is
///   dropped together with its two ends; the other cuts stay as range dashes
///   and every other `-` is a member;
/// - only then is a leading `!` a negation, so a `!` that dropping a range
///   brought to the front negates the set too.
fn set(body: &[char]) -> Token {
    let els: Vec<El> = if body.contains(&'-') {
        let mut chunks: Vec<Vec<char>> = Vec::new();
        let mut start = 0;
        let mut k = if body.first() == Some(&'!') { 2 } else { 1 };
        while let Some(cut) = (k..body.len()).find(|&x| body[x] == '-') {
            chunks.push(body[start..cut].to_vec());
            start = cut + 1;
            k = cut + 3;
        }
        let last = &body[start..];
        match chunks.last_mut() {
            Some(prev) if last.is_empty() => prev.push('-'),
            _ => chunks.push(last.to_vec()),
        }
        for k in (1..chunks.len()).rev() {
            // Only the first chunk can be empty: every later one starts with
            // the character after its cut.
            let (lo, hi) = (chunks[k - 1].last().copied(), chunks[k][0]);
            if lo.is_some_and(|lo| lo > hi) {
                let tail = chunks.remove(k);
                let prev = &mut chunks[k - 1];
                prev.pop();
                prev.extend_from_slice(&tail[1..]);
            }
        }
        let mut els = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            if k > 0 {
                els.push(El::Dash);
            }
            els.extend(chunk.iter().map(|&c| El::Char(c)));
        }
        els
    } else {
        body.iter().map(|&c| El::Char(c)).collect()
    };
    let negated = els.first() == Some(&El::Char('!'));
    if els.is_empty() || (negated && els.len() == 1) {
        // `[]`-like: never; `[!]`-like: any one character.
        return Token::Set {
            negated,
            ranges: Vec::new(),
        };
    }
    let mut rest = &els[usize::from(negated)..];
    let mut ranges = Vec::new();
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        let lo = first.char();
        match rest {
            [El::Dash, end, tail @ ..] => {
                let hi = end.char();
                // translate has dropped every reversed range already.
                debug_assert!(lo <= hi, "reversed range {lo:?}-{hi:?}");
                if lo <= hi {
                    ranges.push((lo, hi));
                }
                rest = tail;
            }
            _ => ranges.push((lo, lo)),
        }
    }
    Token::Set { negated, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case of `expected/fnmatch.json`: which of a set of names each
    /// glob matches under ansible-core 2.19 (`InventoryManager._match_list`),
    /// recorded by `record-fnmatch.py` beside it.
    #[test]
    fn matches_what_ansible_core_matches() {
        let data: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/inventory/expected/fnmatch.json"
        ))
        .unwrap();
        let names: Vec<&str> = data["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let cases = data["cases"].as_array().unwrap();
        let mut matched_some = 0;
        for case in cases {
            let pattern = case["pattern"].as_str().unwrap();
            let want: Vec<&str> = case["matches"]
                .as_array()
                .expect("the recording has no errors")
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            let glob = Glob::new(pattern);
            let got: Vec<&str> = names.iter().copied().filter(|n| glob.is_match(n)).collect();
            assert_eq!(got, want, "glob {pattern:?}");
            matched_some += usize::from(!want.is_empty());
        }
        assert!(cases.len() > 1000 && matched_some > 300);
    }

    #[test]
    fn stars_backtrack() {
        let g = Glob::new("*a*b?");
        assert!(g.is_match("xxaxxbxbz"));
        assert!(!g.is_match("xxaxxb"));
        assert!(Glob::new("*").is_match(""));
        assert!(!Glob::new("?").is_match(""));
        assert!(Glob::new("a*").is_match("a\nb"));
    }
}
