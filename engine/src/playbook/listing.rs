//! Tag selection (`--tags`/`--skip-tags`) and the `--list-tasks` /
//! `--list-tags` listings, printed in ansible-playbook's exact format. Reads a
//! resolved plan; the CLI wires the flags.

use super::plan::{Node, Play, Playbook};

/// `--tags` and `--skip-tags`, with Ansible's special tags: `always` runs
/// unless skipped by name (or `all` is skipped and `always` too), `never`
/// runs only when asked for by name, `tagged`/`untagged`/`all` select by
/// whether a task has tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagFilter {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

/// Anything holding `--tags` and `--skip-tags` lists (so the CLI can pass
/// its own selection type to [`listing`]).
pub trait TagLists {
    /// `(only, skip)`.
    fn tag_lists(&self) -> (&[String], &[String]);
}

impl TagLists for TagFilter {
    fn tag_lists(&self) -> (&[String], &[String]) {
        (&self.only, &self.skip)
    }
}

impl TagFilter {
    pub fn new(only: Vec<String>, skip: Vec<String>) -> TagFilter {
        TagFilter { only, skip }
    }

    /// Whether a task with these effective tags runs. No `--tags` means
    /// `--tags all`.
    pub fn selects(&self, task_tags: &[String]) -> bool {
        self.check(task_tags, true)
    }

    fn check(&self, task_tags: &[String], default_all: bool) -> bool {
        let untagged = ["untagged".to_string()];
        let tags: &[String] = if task_tags.is_empty() {
            &untagged
        } else {
            task_tags
        };
        let has = |t: &str| tags.iter().any(|x| x == t);
        let is_untagged = task_tags.is_empty();
        let all = ["all".to_string()];
        let only: &[String] = if self.only.is_empty() && default_all {
            &all
        } else {
            &self.only
        };
        let only_has = |t: &str| only.iter().any(|x| x == t);
        let mut run = true;
        if !only.is_empty() {
            run = has("always")
                || (only_has("all") && !has("never"))
                || tags.iter().any(|t| only_has(t))
                || (only_has("tagged") && !is_untagged && !has("never"));
        }
        if run && !self.skip.is_empty() {
            let skip_has = |t: &str| self.skip.iter().any(|x| x == t);
            if skip_has("all") {
                if !has("always") || skip_has("always") {
                    run = false;
                }
            } else if tags.iter().any(|t| skip_has(t)) || (skip_has("tagged") && !is_untagged) {
                run = false;
            }
        }
        run
    }
}

/// Calls `f` on each task listed for a node list: blocks contribute their
/// `block` part only, and dynamic includes are listed as themselves.
fn walk<'a>(nodes: &'a [Node], f: &mut dyn FnMut(&'a super::plan::Task)) {
    for n in nodes {
        match n {
            Node::Task(t) | Node::Include(t) => f(t),
            Node::Block(b) => walk(&b.block, f),
        }
    }
}

fn header(pb: &Playbook, idx: usize, play: &Play, hosts: &[String]) -> String {
    let _ = pb;
    format!(
        "\n  play #{} ({}): {}\tTAGS: [{}]\n",
        idx + 1,
        hosts.join(","),
        play.name,
        play.tags.join(",")
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// `ansible-playbook --list-tasks`. `hosts_for_play` gives the text shown in
/// `play #N (...)`: ansible-playbook shows the play's `hosts:` pattern there,
/// so pass `|p| vec![p.hosts.clone()]` for identical output.
pub fn list_tasks(
    pb: &Playbook,
    hosts_for_play: impl Fn(&Play) -> Vec<String>,
    tags: &TagFilter,
) -> String {
    let mut out = format!("\nplaybook: {}\n", pb.path.display());
    for (i, play) in pb.plays.iter().enumerate() {
        out.push_str(&header(pb, i, play, &hosts_for_play(play)));
        out.push_str(&play_tasks(play, tags));
    }
    out
}

fn play_tasks(play: &Play, tags: &TagFilter) -> String {
    let mut out = String::from("    tasks:\n");
    for s in &play.sections {
        walk(&s.nodes, &mut |t| {
            if tags.selects(&t.tags) {
                let t_tags = sorted(t.tags.iter().chain(play.tags.iter()).cloned().collect());
                out.push_str(&format!(
                    "      {}\tTAGS: [{}]\n",
                    t.display_name(),
                    t_tags.join(", ")
                ));
            }
        });
    }
    out
}

fn play_tags(play: &Play, tags: &TagFilter) -> String {
    let mut all: Vec<String> = play.tags.clone();
    for s in &play.sections {
        walk(&s.nodes, &mut |t| {
            // Without --tags, ansible-playbook lists every tag, `never` included.
            if tags.check(&t.tags, false) {
                all.extend(t.tags.iter().cloned());
            }
        });
    }
    format!("      TASK TAGS: [{}]\n", sorted(all).join(", "))
}

/// The `--list-hosts`/`--list-tasks`/`--list-tags` output of `keel play`, in
/// ansible-playbook's format: per play, the header, then the hosts it would
/// run on (`limit` applied), its tasks and its tags, as asked.
#[allow(clippy::too_many_arguments)]
pub fn listing(
    pb: &Playbook,
    inv: &crate::inventory::Inventory,
    limit: Option<&str>,
    tags: &impl TagLists,
    list_hosts: bool,
    list_tasks: bool,
    list_tags: bool,
) -> String {
    let (only, skip) = tags.tag_lists();
    let filter = TagFilter::new(only.to_vec(), skip.to_vec());
    let allowed: Option<Vec<String>> = limit.map(|l| inv.select(l).unwrap_or_default());
    let mut out = format!("\nplaybook: {}\n", pb.path.display());
    for (i, play) in pb.plays.iter().enumerate() {
        out.push_str(&header(pb, i, play, std::slice::from_ref(&play.hosts)));
        if list_hosts {
            let mut hosts = inv.select(&play.hosts).unwrap_or_default();
            if let Some(a) = &allowed {
                hosts.retain(|h| a.contains(h));
            }
            out.push_str(&format!(
                "    pattern: ['{}']\n    hosts ({}):\n",
                play.hosts,
                hosts.len()
            ));
            for h in &hosts {
                out.push_str(&format!("      {h}\n"));
            }
        }
        if list_tasks {
            out.push_str(&play_tasks(play, &filter));
        }
        if list_tags {
            out.push_str(&play_tags(play, &filter));
        }
    }
    out
}

/// `ansible-playbook --list-tags`: per play, every tag of the selected tasks.
pub fn list_tags(
    pb: &Playbook,
    hosts_for_play: impl Fn(&Play) -> Vec<String>,
    tags: &TagFilter,
) -> String {
    let mut out = format!("\nplaybook: {}\n", pb.path.display());
    for (i, play) in pb.plays.iter().enumerate() {
        out.push_str(&header(pb, i, play, &hosts_for_play(play)));
        out.push_str(&play_tags(play, tags));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::TagFilter;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_runs_everything_but_never() {
        let f = TagFilter::default();
        assert!(f.selects(&[]));
        assert!(f.selects(&v(&["x"])));
        assert!(f.selects(&v(&["always"])));
        assert!(!f.selects(&v(&["never"])));
        assert!(f.selects(&v(&["never", "always"])));
    }

    #[test]
    fn only_and_skip() {
        let f = TagFilter::new(v(&["a"]), vec![]);
        assert!(f.selects(&v(&["a", "b"])));
        assert!(!f.selects(&v(&["b"])));
        assert!(!f.selects(&[]));
        assert!(f.selects(&v(&["always"])));
        assert!(f.selects(&v(&["never", "a"])));
        let f = TagFilter::new(v(&["tagged"]), vec![]);
        assert!(f.selects(&v(&["b"])) && !f.selects(&[]) && !f.selects(&v(&["never"])));
        let f = TagFilter::new(v(&["untagged"]), vec![]);
        assert!(f.selects(&[]) && !f.selects(&v(&["b"])));
        let f = TagFilter::new(vec![], v(&["always"]));
        assert!(!f.selects(&v(&["always"])) && f.selects(&v(&["x"])));
        let f = TagFilter::new(vec![], v(&["all"]));
        assert!(f.selects(&v(&["always"])) && !f.selects(&v(&["x"])) && !f.selects(&[]));
        let f = TagFilter::new(vec![], v(&["tagged"]));
        assert!(f.selects(&[]) && !f.selects(&v(&["x"])));
    }
}
