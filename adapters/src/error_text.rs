//! Error chains, walked in one place: text for messages (the whole cause
//! chain, readable, no Debug dumps) and typed lookups of a cause.

/// "outer: cause: root cause", each level once.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    push_causes(&mut parts, err.source());
    parts.join(": ")
}

/// Only the causes of `err` (for errors whose own message must not be
/// shown, e.g. reqwest's, which embeds the URL); `None` without any.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut parts = Vec::new();
    push_causes(&mut parts, err.source());
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// The first cause of type `T` in an error's chain (the error itself
/// included).
pub fn find_cause<T: std::error::Error + Clone + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> Option<T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found.clone());
        }
        // An io::Error's `source()` skips the error it wraps (it returns
        // that error's own source): look at the wrapped one too, as TLS
        // errors travel wrapped in io::Error.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(found) = find_cause::<T>(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The one walk of an error's cause chain: each text once.
fn push_causes(parts: &mut Vec<String>, mut current: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, Clone, thiserror::Error)]
    #[error("typed")]
    struct Typed;

    #[test]
    fn finds_a_cause_wrapped_in_an_io_error() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, Typed));
        assert!(find_cause::<Typed>(&e).is_some());
        assert!(find_cause::<Typed>(&Outer(std::io::Error::other("x"))).is_none());
    }

    #[test]
    fn chain_lists_each_cause_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
        assert_eq!(causes(&e).as_deref(), Some("connection refused"));
        assert_eq!(causes(&std::io::Error::other("x")), None);
    }
}
