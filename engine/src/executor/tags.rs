//! Which tasks `--tags` / `--skip-tags` select, by Ansible's rules.

/// `--tags` and `--skip-tags`.
#[derive(Debug, Clone, Default)]
pub struct TagSelection {
    /// Empty means `all`.
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl TagSelection {
    /// Whether a task with these effective tags runs. `always` runs unless
    /// skipped by name; `never` runs only when asked for by name; `tagged`,
    /// `untagged` and `all` are the special selectors.
    pub fn selects(&self, task_tags: &[String]) -> bool {
        let has = |t: &str| task_tags.iter().any(|x| x == t);
        let only: Vec<&str> = self.only.iter().map(String::as_str).collect();
        let run = if only.is_empty() || only.contains(&"all") {
            !has("never") || only.iter().any(|o| *o != "all" && has(o))
        } else {
            has("always")
                || only.iter().any(|o| match *o {
                    "tagged" => !task_tags.is_empty() && !has("never"),
                    "untagged" => task_tags.is_empty(),
                    o => has(o),
                })
        };
        if !run {
            return false;
        }
        let skipped = self.skip.iter().any(|s| match s.as_str() {
            "tagged" => !task_tags.is_empty(),
            "untagged" => task_tags.is_empty(),
            "all" => !has("always"),
            s => has(s),
        });
        !skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ansible_tag_rules() {
        let all = TagSelection::default();
        assert!(all.selects(&t(&[])));
        assert!(all.selects(&t(&["a"])));
        assert!(!all.selects(&t(&["never"])));
        assert!(all.selects(&t(&["always"])));

        let only_a = TagSelection { only: t(&["a"]), skip: vec![] };
        assert!(only_a.selects(&t(&["a", "b"])));
        assert!(!only_a.selects(&t(&["b"])));
        assert!(!only_a.selects(&t(&[])));
        assert!(only_a.selects(&t(&["always"])));
        assert!(only_a.selects(&t(&["never", "a"])));

        let skip_always = TagSelection { only: vec![], skip: t(&["always"]) };
        assert!(!skip_always.selects(&t(&["always"])));

        let untagged = TagSelection { only: t(&["untagged"]), skip: vec![] };
        assert!(untagged.selects(&t(&[])));
        assert!(!untagged.selects(&t(&["x"])));

        let skip_b = TagSelection { only: vec![], skip: t(&["b"]) };
        assert!(!skip_b.selects(&t(&["a", "b"])));
        assert!(skip_b.selects(&t(&["a"])));
    }
}
