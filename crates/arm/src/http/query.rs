//! The query string: parameters by case-insensitive name, and the few OData
//! `$filter` forms clients send.

use http::Uri;

/// The query parameters, in order.
pub(crate) fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

/// The first value of `name` (case-insensitive).
pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first `'…'` after `key` (case-insensitive), e.g. in an OData `$filter`.
pub(crate) fn quoted_after(filter: &str, key: &str) -> Option<String> {
    let lower = filter.to_ascii_lowercase();
    let at = lower.find(&key.to_ascii_lowercase())? + key.len();
    let rest = &filter[at..];
    let open = rest.find('\'')? + 1;
    let close = rest[open..].find('\'')? + open;
    Some(rest[open..close].to_owned())
}

/// `$filter` of role assignment lists: `atScope()`, `principalId eq '…'`, `assignedTo('…')`.
pub(crate) fn parse_assignment_filter(filter: &str) -> (bool, Option<String>) {
    let at_scope = filter.to_ascii_lowercase().contains("atscope()");
    let who =
        quoted_after(filter, "principalId eq").or_else(|| quoted_after(filter, "assignedTo("));
    (at_scope, who)
}

/// `$filter=roleName eq 'X'` of role definition lists.
pub(crate) fn parse_role_name_filter(filter: &str) -> Option<String> {
    quoted_after(filter, "roleName eq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(
            parse_assignment_filter("atScope() and principalId eq 'ABC'"),
            (true, Some("ABC".into()))
        );
        assert_eq!(
            parse_assignment_filter("assignedTo('x')"),
            (false, Some("x".into()))
        );
        assert_eq!(parse_assignment_filter(""), (false, None));
        assert_eq!(
            parse_role_name_filter("roleName eq 'Key Vault Secrets User'").as_deref(),
            Some("Key Vault Secrets User")
        );
        assert_eq!(
            parse_role_name_filter("ROLENAME EQ 'reader'").as_deref(),
            Some("reader")
        );
    }
}
