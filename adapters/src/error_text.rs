//! Error text for messages: the whole cause chain, readable, no Debug dumps.

/// "outer: cause: root cause", each level once.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_lists_each_cause_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
    }
}
