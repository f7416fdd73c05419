//! Name patterns as operators write them in the config (mirror allow-lists, immutable tags):
//! `*` matches within one path component, `**` across components, everything else literally. Small
//! enough to write here; a glob crate would also bring character classes nobody asked for.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("**") {
        Some(rest) => {
            (0..=name.len()).any(|i| name.is_char_boundary(i) && matches(rest, &name[i..]))
        }
        None => match pattern.strip_prefix('*') {
            Some(rest) => {
                let end = name.find('/').unwrap_or(name.len());
                (0..=end).any(|i| name.is_char_boundary(i) && matches(rest, &name[i..]))
            }
            None => match (pattern.chars().next(), name.chars().next()) {
                (None, None) => true,
                (Some(p), Some(n)) if p == n => {
                    matches(&pattern[p.len_utf8()..], &name[n.len_utf8()..])
                }
                _ => false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_stay_in_a_component_double_stars_cross() {
        assert!(matches("a*c", "abc") && matches("a*c", "ac") && !matches("a*c", "a/c"));
        assert!(matches("**", "x/y/z") && matches("x/**", "x/y/z") && !matches("x/**", "y/x"));
        assert!(matches("v*", "v1.2.3") && !matches("v*", "latest") && matches("latest", "latest"));
        assert!(!matches("", "x") && matches("", ""));
    }
}
