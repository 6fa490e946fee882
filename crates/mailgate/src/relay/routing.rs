//! Which account sends a message: `[[relay.routes]]` by envelope sender, else the default
//! account; and the `From:` rewrite for devices that send as addresses the mailbox cannot.

use super::config::Route;

/// The outcome of routing one sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub account: String,
    /// Send as this address instead of the sender's.
    pub rewrite_from: Option<String>,
}

/// Routes senders to accounts.
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    default: Option<String>,
}

impl Router {
    /// A router over `routes` (first match wins) with `default` for senders none matches.
    pub fn new(routes: Vec<Route>, default: Option<String>) -> Router {
        Router { routes, default }
    }

    /// The account for `sender` (an envelope reverse path; empty for the null sender, which only
    /// the default account takes).
    pub fn route(&self, sender: &str) -> Option<Decision> {
        if !sender.is_empty() {
            if let Some(r) = self.routes.iter().find(|r| matches(&r.sender, sender)) {
                return Some(Decision {
                    account: r.account.clone(),
                    rewrite_from: r.rewrite_from.clone(),
                });
            }
        }
        self.default.as_ref().map(|a| Decision {
            account: a.clone(),
            rewrite_from: None,
        })
    }

    /// The default account, if any.
    pub fn default_account(&self) -> Option<&str> {
        self.default.as_deref()
    }
}

/// Case-insensitive glob match: `*` matches any run of characters (also none), `?` exactly one.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with backtracking to the last star: linear in practice, never
    // exponential.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Rewrites the `From:` header of `message` to `new_from`, keeping its display name, and adds a
/// `Reply-To:` with the original address when the message has none (so that answers still reach
/// the person behind the device). Only the header block is touched.
pub fn rewrite_from_header(message: &[u8], new_from: &str) -> Vec<u8> {
    let header_end = find_header_end(message);
    let (head, body) = message.split_at(header_end);
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut original: Option<String> = None;
    let mut has_reply_to = false;
    let mut found = false;
    for field in split_fields(head) {
        let name = field_name(field);
        if name.eq_ignore_ascii_case("reply-to") {
            has_reply_to = true;
        }
        if name.eq_ignore_ascii_case("from") && !found {
            found = true;
            let value = String::from_utf8_lossy(&field[name.len() + 1..]).into_owned();
            let unfolded = value.replace("\r\n", "").replace('\n', "");
            let (display, addr) = split_mailbox(unfolded.trim());
            original = Some(addr);
            match display {
                Some(d) => out.extend_from_slice(format!("From: {d} <{new_from}>\r\n").as_bytes()),
                None => out.extend_from_slice(format!("From: {new_from}\r\n").as_bytes()),
            }
            continue;
        }
        out.extend_from_slice(field);
    }
    if !found {
        out.extend_from_slice(format!("From: {new_from}\r\n").as_bytes());
    }
    if let (false, Some(orig)) = (has_reply_to, original) {
        if !orig.is_empty() && !orig.eq_ignore_ascii_case(new_from) {
            out.extend_from_slice(format!("Reply-To: {orig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// The offset where the body separator (the empty line) starts; the whole message when there is
/// none.
fn find_header_end(m: &[u8]) -> usize {
    let mut i = 0;
    let mut line_start = 0;
    while i < m.len() {
        if m[i] == b'\n' {
            let line = &m[line_start..i];
            if line.is_empty() || line == b"\r" {
                return line_start;
            }
            line_start = i + 1;
        }
        i += 1;
    }
    m.len()
}

/// Header fields with their continuation lines, each ending with its line break.
fn split_fields(head: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        if head[i] == b'\n' {
            let next = head.get(i + 1).copied();
            if !matches!(next, Some(b' ') | Some(b'\t')) {
                fields.push(&head[start..=i]);
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < head.len() {
        fields.push(&head[start..]);
    }
    fields
}

fn field_name(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == b':').unwrap_or(0);
    std::str::from_utf8(&field[..end]).unwrap_or("").trim_end()
}

/// `"Name" <a@b>` → (Some("\"Name\""), "a@b"); `a@b` → (None, "a@b"); `a@b (Name)` → (None, a@b).
fn split_mailbox(value: &str) -> (Option<String>, String) {
    if let (Some(lt), Some(gt)) = (value.rfind('<'), value.rfind('>')) {
        if lt < gt {
            let display = value[..lt].trim();
            let addr = value[lt + 1..gt].trim().to_string();
            let display = (!display.is_empty()).then(|| display.to_string());
            return (display, addr);
        }
    }
    let addr = value.split_whitespace().next().unwrap_or("").to_string();
    (None, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(matches("*@contoso.com", "Scanner@Contoso.com"));
        assert!(!matches("*@contoso.com", "scanner@contoso.com.evil"));
        assert!(matches("scan?er@*", "scanner@x"));
        assert!(matches("*", ""));
        assert!(!matches("a*b*c", "aXbY"));
        assert!(matches("a*b*c", "aXbYc"));
        // Pathological patterns stay fast.
        let long = "a".repeat(5000);
        assert!(!matches("*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn routes_first_match_then_default() {
        let mut sales = Route::new("*@sales.contoso.com", "sales");
        sales.rewrite_from = Some("sales@contoso.com".into());
        let r = Router::new(
            vec![sales, Route::new("scanner@*", "scan")],
            Some("work".into()),
        );
        assert_eq!(r.route("bob@sales.contoso.com").unwrap().account, "sales");
        assert_eq!(
            r.route("bob@sales.contoso.com")
                .unwrap()
                .rewrite_from
                .as_deref(),
            Some("sales@contoso.com")
        );
        assert_eq!(r.route("scanner@printer.lan").unwrap().account, "scan");
        assert_eq!(r.route("other@x").unwrap().account, "work");
        assert_eq!(r.route("").unwrap().account, "work");
        assert!(Router::new(vec![], None).route("a@b").is_none());
    }

    #[test]
    fn rewrites_from_keeping_the_name() {
        let m = b"Subject: scan\r\nFrom: \"Scanner 3rd floor\"\r\n <scanner@printer.lan>\r\nTo: a@b\r\n\r\nFrom: body stays\r\n";
        let out = String::from_utf8(rewrite_from_header(m, "alice@contoso.com")).unwrap();
        assert!(
            out.contains("From: \"Scanner 3rd floor\" <alice@contoso.com>\r\n"),
            "{out}"
        );
        assert!(out.contains("Reply-To: scanner@printer.lan\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nFrom: body stays\r\n"), "{out}");
        assert!(!out.contains("printer.lan>"), "{out}");
        let m = b"From: x@y\r\nReply-To: z@y\r\n\r\nbody";
        let out = String::from_utf8(rewrite_from_header(m, "a@b")).unwrap();
        assert_eq!(out, "From: a@b\r\nReply-To: z@y\r\n\r\nbody");
    }
}
